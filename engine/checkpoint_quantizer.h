// Writes a checkpoint's int8 twin (mamba-quantize; the format: docs/ARCHITECTURE.md, "Quantized
// checkpoints"): the large matrices as I8 with F32 scales, quantized exactly as the CPU engine
// quantizes at load (--dtype int8), so that start-up need not quantize again.
#pragma once

#include <cstdint>
#include <filesystem>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"

namespace mamba::engine {

struct QuantizeCheckpointOptions {
  int64_t group_size = 0;  // inputs per scale, a multiple of 4 (0: one scale per row)
  // A weight file larger than this is split into model-0000i-of-0000n.safetensors + index, as
  // transformers' save_pretrained does (its default limit).
  int64_t max_shard_bytes = int64_t{5} << 30;
};

struct QuantizeCheckpointResult {
  int64_t bytes_before = 0;  // of the input's tensors
  int64_t bytes_after = 0;   // of the written tensors
  int64_t matrices = 0;      // quantized
  int shards = 0;
};

// Writes `in` quantized into `out` (created; it must not exist or be empty): config.json with a
// quantization_config, the other small files of in.dir() as they are (tokenizer, generation
// config, ...), and model.safetensors (or shards) holding in_proj, x_proj, dt_proj, out_proj and
// the LM head (a separate lm_head.weight for a tied model too) as I8 [n, k] with F32
// `.weight_scale` [n, groups], every other tensor as stored. Refuses a quantized input.
absl::StatusOr<QuantizeCheckpointResult> WriteInt8Checkpoint(
    const Checkpoint& in, const std::filesystem::path& out,
    const QuantizeCheckpointOptions& options = {});

}  // namespace mamba::engine
