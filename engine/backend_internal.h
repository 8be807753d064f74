// For backend implementations only (engine/cpu/, engine/cuda/): how a Prefill call is cut into
// passes of packed chunks. Not part of the Backend interface the engine and front ends see.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend.h"
#include "kernels/packed_chunks.h"

namespace mamba::engine {

// One pass of a backend: several chunks' tokens packed back to back ("varlen").
struct Pass {
  std::vector<kernels::SeqChunk> chunks;        // index rows of `tokens`
  std::vector<const AdapterWeights*> adapters;  // per chunk (ChunkInput::adapter)
  std::vector<TokenId> tokens;
  std::vector<int32_t> logit_rows;  // rows of `tokens` whose logits the caller wants...
  int64_t first_row = 0;            // ...written from this row of the output on, in order
};

// Packs a Prefill call into passes of at most `budget` tokens and runs them in order. A chunk
// that does not fit is split: its later pieces continue from the state the earlier ones left.
// A pass also holds at most `max_rows` logit rows (all-logits chunks are split to fit).
absl::Status ForEachPass(std::span<const ChunkInput> chunks, int64_t budget,
                         const std::function<absl::Status(const Pass&)>& run,
                         int64_t max_rows = INT64_MAX);

}  // namespace mamba::engine
