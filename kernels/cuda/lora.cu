#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lora.h"

namespace mamba::kernels::cuda {
namespace {

using detail::CeilDiv;
using detail::ToFloat;

constexpr int kThreads = 256;
constexpr int kTileRows = 16;  // rows of one segment per block
constexpr int kTileK = 64;     // shrink: input features per shared-memory tile
constexpr int kTileOut = 64;   // expand: output features per block
// Shrink: 16 threads per row, each owning ranks j, j + 16, j + 32, j + 48.
constexpr int kRanksPerThread = kMaxLoraRank / (kThreads / kTileRows);
// Expand: 64 threads per row group (one output each), 4 row groups, each owning 4 rows.
constexpr int kRowGroups = kThreads / kTileOut;
constexpr int kRowsPerThread = kTileRows / kRowGroups;
static_assert(kRanksPerThread * (kThreads / kTileRows) == kMaxLoraRank);
static_assert(kRowsPerThread * kRowGroups == kTileRows);

__device__ __forceinline__ bool RankOk(int32_t r) { return r >= 1 && r <= kMaxLoraRank; }

// Grid: x over tiles of kTileRows rows of the segment, y over segments (from seg0).
// Each thread sums k = 0, 1, ..., in-1 in order for its (row, j) outputs: a row's result does
// not depend on which rows share its tile.
template <typename XT>
__global__ void __launch_bounds__(kThreads) LoraShrinkKernel(LoraShrinkArgs a, int64_t seg0) {
  const LoraSegment s = a.segments[seg0 + blockIdx.y];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  if (r0 >= s.rows || !RankOk(s.rank)) return;  // uniform over the block
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTileRows), s.rows - r0));
  __shared__ float xs[kTileRows][kTileK + 1];
  __shared__ float as[kMaxLoraRank][kTileK + 1];
  const int tid = static_cast<int>(threadIdx.x), m = tid / 16, jl = tid % 16;
  const XT* x = static_cast<const XT*>(a.x) + (s.row_begin + r0) * a.ldx;
  float acc[kRanksPerThread] = {};
  for (int64_t k0 = 0; k0 < a.in; k0 += kTileK) {
    const int kn = static_cast<int>(min(static_cast<int64_t>(kTileK), a.in - k0));
    for (int i = tid; i < kTileRows * kTileK; i += kThreads) {
      const int mm = i / kTileK, kk = i % kTileK;
      xs[mm][kk] = mm < rows && kk < kn ? ToFloat(x[mm * a.ldx + k0 + kk]) : 0.0f;
    }
    for (int i = tid; i < kMaxLoraRank * kTileK; i += kThreads) {
      const int j = i / kTileK, kk = i % kTileK;
      as[j][kk] = j < s.rank && kk < kn ? s.a[j * a.in + k0 + kk] : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < kn; ++kk) {
      const float xv = xs[m][kk];
#pragma unroll
      for (int q = 0; q < kRanksPerThread; ++q) acc[q] = fmaf(xv, as[jl + 16 * q][kk], acc[q]);
    }
    __syncthreads();
  }
  if (m >= rows) return;
  float* t = a.t + (s.row_begin + r0 + m) * a.ldt;
#pragma unroll
  for (int q = 0; q < kRanksPerThread; ++q) {
    const int j = jl + 16 * q;
    if (j < s.rank) t[j] = acc[q] * s.scale;
  }
}

// Grid: x over row tiles, y over segments. 4 rows x 64 ranks per block.
__global__ void __launch_bounds__(kThreads)
    LoraEmbeddingShrinkKernel(LoraEmbeddingShrinkArgs a, int64_t seg0) {
  const LoraSegment s = a.segments[seg0 + blockIdx.y];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / kMaxLoraRank) +
                      static_cast<int64_t>(threadIdx.x / kMaxLoraRank);
  const int j = static_cast<int>(threadIdx.x % kMaxLoraRank);
  if (row >= s.rows || !RankOk(s.rank) || j >= s.rank) return;
  const int32_t tok = a.tokens[s.row_begin + row];
  a.t[(s.row_begin + row) * a.ldt + j] =
      tok >= 0 && tok < a.vocab ? s.scale * s.a[static_cast<int64_t>(tok) * s.rank + j] : nanf("");
}

// Grid: x over row tiles, y over tiles of kTileOut outputs, z over segments. Each thread sums
// j = 0..rank-1 in order for its (row, o) outputs and adds the sum to y once (no atomics).
__global__ void __launch_bounds__(kThreads) LoraExpandKernel(LoraExpandArgs a, int64_t seg0) {
  const LoraSegment s = a.segments[seg0 + blockIdx.z];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kTileOut;
  if (r0 >= s.rows || !RankOk(s.rank)) return;  // uniform over the block
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTileRows), s.rows - r0));
  const int rank = s.rank;
  __shared__ float ts[kTileRows][kMaxLoraRank + 1];
  __shared__ float bs[kTileOut][kMaxLoraRank + 1];
  const int tid = static_cast<int>(threadIdx.x);
  const float* t = a.t + (s.row_begin + r0) * a.ldt;
  for (int i = tid; i < kTileRows * rank; i += kThreads) {
    const int mm = i / rank, j = i % rank;
    ts[mm][j] = mm < rows ? t[mm * a.ldt + j] : 0.0f;
  }
  // B's rows o0 .. o0 + 63 are one contiguous block of 64 * rank floats.
  const float* b = s.b + o0 * rank;
  const int on = static_cast<int>(min(static_cast<int64_t>(kTileOut), a.out - o0));
  for (int i = tid; i < kTileOut * rank; i += kThreads) {
    const int oo = i / rank, j = i % rank;
    bs[oo][j] = oo < on ? b[i] : 0.0f;
  }
  __syncthreads();
  const int o = tid % kTileOut, mg = tid / kTileOut;
  if (o >= on) return;
#pragma unroll
  for (int q = 0; q < kRowsPerThread; ++q) {
    const int m = mg + kRowGroups * q;
    if (m >= rows) break;
    float acc = 0.0f;
    for (int j = 0; j < rank; ++j) acc = fmaf(ts[m][j], bs[o][j], acc);
    a.y[(s.row_begin + r0 + m) * a.ldy + o0 + o] += acc;
  }
}

// Launches f(seg0, count) over the segments in groups that fit grid.y / grid.z.
template <typename F>
cudaError_t ForSegmentGroups(int64_t num_segments, F&& f) {
  for (int64_t seg0 = 0; seg0 < num_segments; seg0 += detail::kMaxGridY) {
    const auto n = static_cast<unsigned>(std::min(num_segments - seg0, detail::kMaxGridY));
    if (const cudaError_t e = f(seg0, n); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t LoraShrink(const LoraShrinkArgs& a, cudaStream_t stream) {
  if (a.num_segments < 0 || a.max_rows < 0) return cudaErrorInvalidValue;
  if (a.num_segments == 0 || a.max_rows == 0) return cudaSuccess;
  if (!a.x || !a.segments || !a.t || a.in <= 0 || a.ldx < a.in || a.ldt < kMaxLoraRank) {
    return cudaErrorInvalidValue;
  }
  return detail::DispatchDType(a.x_dtype, [&](auto tag) {
    return ForSegmentGroups(a.num_segments, [&](int64_t seg0, unsigned n) {
      LoraShrinkKernel<typename decltype(tag)::type>
          <<<dim3(CeilDiv(a.max_rows, kTileRows), n), kThreads, 0, stream>>>(a, seg0);
      return cudaGetLastError();
    });
  });
}

cudaError_t LoraEmbeddingShrink(const LoraEmbeddingShrinkArgs& a, cudaStream_t stream) {
  if (a.num_segments < 0 || a.max_rows < 0) return cudaErrorInvalidValue;
  if (a.num_segments == 0 || a.max_rows == 0) return cudaSuccess;
  if (!a.tokens || !a.segments || !a.t || a.vocab <= 0 || a.ldt < kMaxLoraRank) {
    return cudaErrorInvalidValue;
  }
  return ForSegmentGroups(a.num_segments, [&](int64_t seg0, unsigned n) {
    LoraEmbeddingShrinkKernel<<<dim3(CeilDiv(a.max_rows, kThreads / kMaxLoraRank), n), kThreads, 0,
                                stream>>>(a, seg0);
    return cudaGetLastError();
  });
}

cudaError_t LoraExpand(const LoraExpandArgs& a, cudaStream_t stream) {
  if (a.num_segments < 0 || a.max_rows < 0) return cudaErrorInvalidValue;
  if (a.num_segments == 0 || a.max_rows == 0) return cudaSuccess;
  if (!a.t || !a.segments || !a.y || a.out <= 0 || a.ldy < a.out || a.ldt < kMaxLoraRank ||
      CeilDiv(a.out, kTileOut) > detail::kMaxGridY) {
    return cudaErrorInvalidValue;
  }
  return ForSegmentGroups(a.num_segments, [&](int64_t seg0, unsigned n) {
    LoraExpandKernel<<<dim3(CeilDiv(a.max_rows, kTileRows), CeilDiv(a.out, kTileOut), n), kThreads,
                       0, stream>>>(a, seg0);
    return cudaGetLastError();
  });
}

}  // namespace mamba::kernels::cuda
