#include "kernels/cpu/threading.h"

#include <omp.h>

#include <algorithm>
#include <thread>

namespace mamba::kernels::cpu {

void SetNumThreads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  omp_set_num_threads(n);
}

int NumThreads() { return omp_get_max_threads(); }

void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int threads = static_cast<int>(std::min<int64_t>(NumThreads(), n));
  if (threads <= 1) {
    if (n > 0) fn(0, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int64_t begin = n * t / threads;
    const int64_t end = n * (t + 1) / threads;
    if (begin < end) fn(begin, end);
  }
}

void ParallelForDynamic(int64_t n, const std::function<void(int64_t)>& fn) {
  const int threads = static_cast<int>(std::min<int64_t>(NumThreads(), n));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, n / (threads * 8));
#pragma omp parallel for num_threads(threads) schedule(dynamic, grain)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

}  // namespace mamba::kernels::cpu
