// The packed ("varlen") chunk table of kernels/packed_chunks.h for CUDA code, which is C++17
// (kernels::SeqChunk's header needs std::span): the same fields and layout, so host code may
// copy a SeqChunk array into a ChunkDesc array member by member or with memcpy.
#pragma once

#include <cstdint>

namespace mamba::kernels::cuda {

struct ChunkDesc {
  int64_t begin = 0;   // first token row
  int64_t length = 0;  // tokens in this chunk
  int32_t slot = 0;    // state slot to start from and write back to
};

}  // namespace mamba::kernels::cuda
