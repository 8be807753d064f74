// Writes seeded random-weight Mamba checkpoints in the exact Hugging Face layout (or the original
// mamba_ssm one), for tests, benchmarks and the built-in demo. Initialised like the real models
// so activations stay finite.
#pragma once

#include <cstdint>
#include <filesystem>

#include "absl/status/status.h"
#include "engine/model_config.h"
#include "kernels/dtype.h"

namespace mamba::engine {

// The weight files a checkpoint is written as (Checkpoint::Open reads both).
enum class CheckpointFormat {
  kSafetensors,  // model.safetensors, or model-0000i-of-0000n.safetensors + index
  kPytorchBin,   // pytorch_model.bin (as torch.save writes it), or shards + index
};

struct RandomCheckpointOptions {
  ModelConfig config;
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t seed = 0;
  CheckpointFormat format = CheckpointFormat::kSafetensors;
  int shards = 1;                 // > 1 writes model-0000i-of-0000n.safetensors + index
  bool untied_head = false;       // write a separate lm_head.weight
  bool mamba_ssm_layout = false;  // original config.json keys and backbone.embedding.weight
  // Randomise the weights real initialisation leaves constant (norm weights, D, biases), so
  // tests notice a kernel that ignores them.
  bool perturb_constants = false;
  std::filesystem::path tokenizer_json;  // copied into the directory when set
};

absl::Status WriteRandomCheckpoint(const RandomCheckpointOptions& options,
                                   const std::filesystem::path& dir);

// Writes `j` (2-space indent) as Python's json module would: an infinite time_step_limit bound,
// held as the string "Infinity" (how ReadJsonFile reads the bare token), is written bare again.
absl::Status WriteJsonFile(const std::filesystem::path& path, const nlohmann::json& j);

}  // namespace mamba::engine
