// The CPU kernels' thread pool (OpenMP, shared with oneDNN so the two never oversubscribe).
#pragma once

#include <cstdint>
#include <functional>

namespace mamba::kernels::cpu {

// Sets the number of threads used by the CPU kernels and oneDNN, in every thread that calls
// them; <= 0 means all cores.
void SetNumThreads(int n);
int NumThreads();

// Runs fn(begin, end) over [0, n) split into contiguous ranges, one per thread; inline when
// n <= 1 or one thread.
void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(i) for i in [0, n) with dynamic load balancing, for items of uneven cost (chunks of
// different lengths in one step).
void ParallelForDynamic(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace mamba::kernels::cpu
