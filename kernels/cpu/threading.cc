#include "kernels/cpu/threading.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <thread>

namespace mamba::kernels::cpu {

// libgomp is not built with ThreadSanitizer, so TSan cannot see the happens-before edges of its
// barriers and reports every parallel region as a race. TSan builds therefore run the kernels
// on one thread: ParallelFor* then call fn inline and never enter an OpenMP region (oneDNN follows
// omp_get_max_threads; the TSan tests also set OMP_NUM_THREADS=1 for threads that never call this).
#ifdef __SANITIZE_THREAD__
constexpr bool kForceOneThread = true;
#else
constexpr bool kForceOneThread = false;
#endif

// OpenMP's thread count (nthreads-var) belongs to the thread that sets it: a count set where the
// backend is created would not reach the engine's loop thread. The count is therefore kept here
// for the whole process and applied to each calling thread, for oneDNN's regions too.
std::atomic<int> g_num_threads{0};  // 0: not set, OpenMP's default (OMP_NUM_THREADS or all cores)

void SetNumThreads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (kForceOneThread) n = 1;
  g_num_threads = n;
  omp_set_num_threads(n);
}

int NumThreads() {
  if (kForceOneThread) return 1;
  const int n = g_num_threads.load(std::memory_order_relaxed);
  if (n <= 0) return omp_get_max_threads();
  if (omp_get_max_threads() != n) omp_set_num_threads(n);
  return n;
}

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

namespace {

// The first (chunk, block) item that starts at or after token-weighted position `pos`.
int64_t FirstItemAt(SeqChunks chunks, int64_t blocks, int64_t pos) {
  int64_t acc = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t len = std::max<int64_t>(1, chunks[c].length);
    if (pos < acc + len * blocks) {
      return static_cast<int64_t>(c) * blocks + (pos - acc + len - 1) / len;
    }
    acc += len * blocks;
  }
  return static_cast<int64_t>(chunks.size()) * blocks;
}

}  // namespace

void ParallelForChunkBlocks(SeqChunks chunks, int64_t blocks,
                            const std::function<void(const SeqChunk&, int64_t)>& fn) {
  const int64_t items = static_cast<int64_t>(chunks.size()) * blocks;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(chunks[static_cast<size_t>(i / blocks)], i % blocks);
  };
  const int threads = static_cast<int>(std::min<int64_t>(NumThreads(), items));
  if (threads <= 1) {
    run(0, items);
    return;
  }
  int64_t total = 0;
  for (const SeqChunk& c : chunks) total += std::max<int64_t>(1, c.length) * blocks;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    run(FirstItemAt(chunks, blocks, total * t / threads),
        FirstItemAt(chunks, blocks, total * (t + 1) / threads));
  }
}

}  // namespace mamba::kernels::cpu
