// The LoRA tests' adapters, written by the random PEFT writer: the four the engine and registry
// tests serve (kSpecs), and one-line writing and loading for the loader and writer tests.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/lora/lora_adapter.h"
#include "engine/lora/lora_writer.h"
#include "engine/model_config.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine::testing {

// The adapters the engine and registry tests use, written once for the base model: different
// targets, ranks, dtypes and scalings, so that each changes the output its own way.
struct AdapterSpec {
  const char* name;
  std::vector<std::string> targets;
  int64_t rank;
  double alpha;
  bool rslora;
  kernels::DType dtype;
};
extern const AdapterSpec kSpecs[4];

// Writes each of kSpecs for `base` to dir / its name (seeds 1, 2, ... in kSpecs' order).
absl::Status WriteSpecAdapters(const ModelConfig& base, const std::filesystem::path& dir);

// The preset's config (a failure when there is none).
ModelConfig Preset(const std::string& name);

// The writer's options for `c`: `targets`, seed 7, the writer's defaults otherwise.
RandomLoraOptions Options(const ModelConfig& c, std::vector<std::string> targets = {
                                                    "in_proj", "x_proj", "out_proj", "embeddings"});

// Writes an adapter to t / name and returns its directory (a failure when the writer refuses).
std::filesystem::path Write(const ::mamba::testing::TempDir& t, const std::string& name,
                            const RandomLoraOptions& o);

absl::StatusOr<std::shared_ptr<const LoraAdapter>> Load(const std::filesystem::path& dir,
                                                        const ModelConfig& c, int64_t max_rank = 64,
                                                        std::string_view name = {});

// The adapter, or null with a failure.
std::shared_ptr<const LoraAdapter> MustLoad(const std::filesystem::path& dir, const ModelConfig& c);

}  // namespace mamba::engine::testing
