#include <algorithm>
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.h"

namespace mamba::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr unsigned kFullMask = 0xffffffffu;

struct Best {
  float v;
  int32_t id;  // INT_MAX = none
};

// a ranks before b: larger value, then lower id.
__device__ __forceinline__ bool Before(const Best& a, const Best& b) {
  return a.id != INT_MAX && (b.id == INT_MAX || a.v > b.v || (a.v == b.v && a.id < b.id));
}

// Best of the block (every thread gets it); `scratch` holds 32 entries.
__device__ Best BlockBest(Best mine, Best* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const Best o{__shfl_xor_sync(kFullMask, mine.v, off), __shfl_xor_sync(kFullMask, mine.id, off)};
    if (Before(o, mine)) mine = o;
  }
  __syncthreads();
  if (lane == 0) scratch[warp] = mine;
  __syncthreads();
  mine = lane < kThreads / 32 ? scratch[lane] : Best{0.0f, INT_MAX};
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const Best o{__shfl_xor_sync(kFullMask, mine.v, off), __shfl_xor_sync(kFullMask, mine.id, off)};
    if (Before(o, mine)) mine = o;
  }
  return mine;
}

// One block per row. Round 0 finds the argmax; round k finds the best entry strictly after the
// previous round's (value descending, id ascending), which is the k-th of the top list. Each
// round re-reads the row (from L2: a row is a few hundred KB at most).
__global__ void __launch_bounds__(kThreads) GreedyKernel(GreedyArgs a) {
  __shared__ Best best_scratch[32];
  __shared__ float sum_scratch[32];
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* row = a.logits + r * a.logits_stride;
    Best prev{0.0f, INT_MAX};
    float lse = 0.0f;
    const int rounds = a.top_n > 0 ? a.top_n : 1;
    for (int k = 0; k < rounds; ++k) {
      Best mine{0.0f, INT_MAX};
      for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
        const float v = row[i];
        if (isnan(v)) continue;
        const Best c{v, static_cast<int32_t>(i)};
        const bool after = prev.id == INT_MAX || v < prev.v || (v == prev.v && c.id > prev.id);
        if (k > 0 && !after) continue;
        if (Before(c, mine)) mine = c;
      }
      const Best best = BlockBest(mine, best_scratch);
      if (k == 0) {
        // log-sum-exp around the maximum
        const float mx = best.id == INT_MAX ? 0.0f : best.v;
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
          const float v = row[i];
          if (!isnan(v)) s += expf(v - mx);
        }
        s = detail::BlockSum(s, sum_scratch);
        lse = mx + logf(s);
        if (threadIdx.x == 0) {
          a.token[r] = best.id == INT_MAX ? 0 : best.id;
          a.logprob[r] = best.id == INT_MAX ? nanf("") : best.v - lse;
        }
      }
      if (a.top_n > 0 && threadIdx.x == 0) {
        a.top_ids[r * a.top_n + k] = best.id == INT_MAX ? -1 : best.id;
        a.top_logprobs[r * a.top_n + k] = best.id == INT_MAX ? -INFINITY : best.v - lse;
      }
      prev = best;
      if (best.id == INT_MAX) prev = Best{-INFINITY, INT_MAX - 1};  // nothing left to find
    }
  }
}

}  // namespace

cudaError_t GreedySample(const GreedyArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.vocab <= 0 || a.vocab >= INT_MAX - 1 || a.top_n < 0 || a.top_n > kMaxTopN) {
    return cudaErrorInvalidValue;
  }
  if (a.rows == 0) return cudaSuccess;
  if (!a.logits || a.logits_stride < a.vocab || !a.token || !a.logprob)
    return cudaErrorInvalidValue;
  if (a.top_n > 0 && (!a.top_ids || !a.top_logprobs)) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(a.rows, 1 << 20));
  GreedyKernel<<<blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace mamba::kernels::cuda
