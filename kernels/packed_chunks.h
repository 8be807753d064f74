// Several requests' tokens packed back to back ("varlen" layout): chunk i owns rows
// [begin, begin + length) of every per-token tensor and continues from state slot `slot`.
#pragma once

#include <cstdint>
#include <span>

namespace mamba::kernels {

struct SeqChunk {
  int64_t begin = 0;   // first token row
  int64_t length = 0;  // tokens in this chunk (1 for a decode step)
  int32_t slot = 0;    // state slot to start from and write back to
};

using SeqChunks = std::span<const SeqChunk>;

}  // namespace mamba::kernels
