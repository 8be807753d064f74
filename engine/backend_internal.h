// For backend implementations only (engine/cpu/, engine/cuda/): how a Prefill call is cut into
// passes of packed chunks. Not part of the Backend interface the engine and front ends see.
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend.h"
#include "kernels/packed_chunks.h"

namespace mamba::engine {

// One pass of a backend: several chunks' tokens packed back to back ("varlen").
struct Pass {
  std::vector<kernels::SeqChunk> chunks;  // index rows of `tokens`
  std::vector<TokenId> tokens;
  std::vector<int> logit_chunks;  // chunks whose last token's logits the caller wants...
  int64_t first_row = 0;          // ...written to these rows of the output, in order
};

// Packs a Prefill call into passes of at most `budget` tokens and runs them in order. A chunk
// that does not fit is split: its later pieces continue from the state the earlier ones left.
absl::Status ForEachPass(std::span<const ChunkInput> chunks, int64_t budget,
                         const std::function<absl::Status(const Pass&)>& run);

}  // namespace mamba::engine
