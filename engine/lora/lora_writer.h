// Writes seeded random PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors or
// .bin, PEFT's names and layout) for any base model config and target set: for tests,
// benchmarks and mamba-make-lora. The modules written are those LoraAdapter::Load expects
// (PlanLoraModules), so a written adapter loads by construction.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/model_config.h"
#include "kernels/dtype.h"
#include "nlohmann/json.hpp"

namespace mamba::engine {

enum class LoraFileFormat {
  kSafetensors,  // adapter_model.safetensors
  kPytorchBin,   // adapter_model.bin, as torch.save writes it
};

struct RandomLoraOptions {
  ModelConfig config;  // the base model
  // PEFT's target_modules: names ("in_proj", "embeddings", ...), each matching modules whose
  // key is the name or ends with "." + name.
  std::vector<std::string> target_modules = {"in_proj", "x_proj", "out_proj", "embeddings"};
  int64_t rank = 8;
  double alpha = 16;
  bool use_rslora = false;
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t seed = 0;
  // Written in this order (PEFT itself writes them sorted: json.dump with sort_keys).
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::vector<int64_t> layers_to_transform;  // empty: every layer
  LoraFileFormat format = LoraFileFormat::kSafetensors;
  // lora_B's standard deviation. PEFT initialises B to zero (no change until trained), which
  // tests cannot see; < 0 picks, per module, the std giving an update of about 20 % of the
  // module's output on a WriteRandomCheckpoint model (A ~ U(+-1/sqrt(in)) always). 0 writes
  // PEFT's zeros.
  double b_std = -1;
};

// The adapter_config.json `options` is written with: every key PEFT 0.13 writes.
nlohmann::ordered_json RandomLoraConfigJson(const RandomLoraOptions& options);

// Creates `dir` when needed and writes the adapter. InvalidArgument when the options name
// modules the base model lacks (PlanLoraModules' message).
absl::Status WriteRandomLoraAdapter(const RandomLoraOptions& options,
                                    const std::filesystem::path& dir);

}  // namespace mamba::engine
