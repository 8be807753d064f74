// Random PEFT LoRA adapters for the front-end tests' tiny serving model
// (tests/support/serving_harness.h): written by engine/lora/lora_writer.h, one per seed, and a
// broken copy the loader refuses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/lora/lora_writer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/serving_harness.h"

namespace mamba::testing {

// Writes a rank-4 adapter (the writer's default targets: in_proj, x_proj, out_proj, embeddings)
// of a model with `config` under root/name and returns its directory (empty, with a test
// failure, on error).
inline std::filesystem::path WriteAdapterFor(const engine::ModelConfig& config,
                                             const std::filesystem::path& root,
                                             const std::string& name, uint64_t seed) {
  engine::RandomLoraOptions o;
  o.config = config;
  o.rank = 4;
  o.alpha = 8;
  o.seed = seed;
  const std::filesystem::path dir = root / name;
  const absl::Status s = engine::WriteRandomLoraAdapter(o, dir);
  EXPECT_TRUE(s.ok()) << s;
  return s.ok() ? dir : std::filesystem::path();
}

// The same for the tiny serving model (`perturbed` picks which one).
inline std::filesystem::path WriteTinyAdapter(const std::filesystem::path& root,
                                              const std::string& name, uint64_t seed,
                                              bool perturbed = false) {
  return WriteAdapterFor(TinyModel(perturbed)->config(), root, name, seed);
}

// A copy of a good adapter whose adapter_config.json asks for DoRA, which the loader refuses.
inline std::filesystem::path WriteDoraAdapter(const std::filesystem::path& root,
                                              const std::string& name, bool perturbed = false) {
  const std::filesystem::path dir = WriteTinyAdapter(root, name, 99, perturbed);
  if (dir.empty()) return dir;
  nlohmann::json config;
  {
    std::ifstream in(dir / "adapter_config.json");
    in >> config;
  }
  config["use_dora"] = true;
  std::ofstream(dir / "adapter_config.json") << config.dump(2);
  return dir;
}

}  // namespace mamba::testing
