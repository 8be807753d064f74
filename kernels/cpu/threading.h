// The CPU kernels' thread pool (OpenMP, shared with oneDNN so the two never oversubscribe).
#pragma once

#include <cstdint>
#include <functional>

#include "kernels/packed_chunks.h"

namespace mamba::kernels::cpu {

// Sets the number of threads used by the CPU kernels and oneDNN, in every thread that calls
// them; <= 0 means all cores.
void SetNumThreads(int n);
int NumThreads();

// Runs fn(begin, end) over [0, n) split into contiguous ranges, one per thread; inline when
// n <= 1 or one thread.
void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(chunk, block) for every block of channels [0, blocks) of every chunk. The (chunk,
// block) pairs, in that order, are split into one contiguous range per thread of about equal
// token count: a chunk's blocks weigh its length, so one long prefill chunk is balanced against
// many one-token decode chunks, and a static split keeps each state block on the same core from
// step to step (a dynamic schedule moved state cache lines between cores and made the batch-1
// scan 2.4x slower on two threads than on one).
void ParallelForChunkBlocks(SeqChunks chunks, int64_t blocks,
                            const std::function<void(const SeqChunk&, int64_t)>& fn);

}  // namespace mamba::kernels::cpu
