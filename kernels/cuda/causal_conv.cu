#include <algorithm>

#include "kernels/cuda/causal_conv.h"
#include "kernels/cuda/common.cuh"

namespace mamba::kernels::cuda {
namespace {

using detail::CeilDiv;
using detail::FromFloat;
using detail::Silu;

constexpr int kThreads = 128;       // channels per block; a thread owns one channel
constexpr int kRowsPerThread = 32;  // prefill: consecutive rows per thread (a sliding window)

// The chunk containing row r: the last chunk whose begin <= r (chunks sorted by begin).
__device__ int FindChunk(const ChunkDesc* chunks, int n, int64_t r) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (chunks[mid].begin <= r) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Grid: x over channel blocks, y over tiles of kRowsPerThread rows of the packed tokens. A
// thread walks its rows keeping the previous width-1 inputs in registers; at a chunk's first
// row the window is reloaded from that chunk's slot state. The state is only read here (the
// write-back is ConvStateKernel, launched after, so no tile reads a state another has updated).
template <int kWidth, typename LowT>
__global__ void __launch_bounds__(kThreads) ConvPrefillKernel(CausalConvArgs a) {
  constexpr int kHist = kWidth - 1;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d >= a.dim) return;
  float w[kWidth];
#pragma unroll
  for (int k = 0; k < kWidth; ++k) w[k] = a.weight[k * a.dim + d];
  const float bias = a.bias ? a.bias[d] : 0.0f;
  const float xb = a.x_bias ? a.x_bias[d] : 0.0f;
  LowT* lowp = static_cast<LowT*>(a.out_lowp);
  const int64_t tiles = (a.tokens + kRowsPerThread - 1) / kRowsPerThread;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t r0 = tile * kRowsPerThread;
    const int64_t r1 = min(r0 + kRowsPerThread, a.tokens);
    int ci = FindChunk(a.chunks, a.num_chunks, r0);
    ChunkDesc ch = a.chunks[ci];
    const float* st = a.state + static_cast<int64_t>(ch.slot) * a.state_slot_stride;
    float win[kHist > 0 ? kHist : 1];  // inputs at rows r-kHist .. r-1
#pragma unroll
    for (int k = 0; k < kHist; ++k) {
      const int64_t p = r0 - kHist + k;
      win[k] =
          p >= ch.begin ? a.x[p * a.x_stride + d] + xb : st[(kHist + (p - ch.begin)) * a.dim + d];
    }
    int64_t next = ch.begin + ch.length;
    for (int64_t r = r0; r < r1; ++r) {
      bool entered = false;
      while (r >= next && ci + 1 < a.num_chunks) {  // the next chunk starts here
        ch = a.chunks[++ci];
        next = ch.begin + ch.length;
        entered = true;
      }
      if (entered) {
        st = a.state + static_cast<int64_t>(ch.slot) * a.state_slot_stride;
#pragma unroll
        for (int k = 0; k < kHist; ++k) win[k] = st[k * a.dim + d];
      }
      const float xv = a.x[r * a.x_stride + d] + xb;
      float acc = bias;
#pragma unroll
      for (int k = 0; k < kHist; ++k) acc += w[k] * win[k];
      acc += w[kHist] * xv;
      const float out = Silu(acc);
      a.out[r * a.out_stride + d] = out;
      if (lowp) lowp[r * a.out_lowp_stride + d] = FromFloat<LowT>(out);
#pragma unroll
      for (int k = 0; k + 1 < kHist; ++k) win[k] = win[k + 1];
      if constexpr (kHist > 0) win[kHist - 1] = xv;
    }
  }
}

// Grid: x over channel blocks, y over chunks. The new state is the chunk's last kHist inputs,
// reaching into the old state when the chunk is shorter than that (read before written: one
// thread owns a (slot, channel) column).
template <int kWidth>
__global__ void __launch_bounds__(kThreads) ConvStateKernel(CausalConvArgs a) {
  constexpr int kHist = kWidth - 1;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d >= a.dim || kHist == 0) return;
  const float xb = a.x_bias ? a.x_bias[d] : 0.0f;
  for (int64_t c = blockIdx.y; c < a.num_chunks; c += gridDim.y) {
    const ChunkDesc ch = a.chunks[c];
    float* st = a.state + static_cast<int64_t>(ch.slot) * a.state_slot_stride;
    float tail[kHist > 0 ? kHist : 1];
#pragma unroll
    for (int k = 0; k < kHist; ++k) {
      const int64_t j = ch.length - kHist + k;  // position in the chunk; < 0 is the old state
      tail[k] = j >= 0 ? a.x[(ch.begin + j) * a.x_stride + d] + xb : st[(kHist + j) * a.dim + d];
    }
#pragma unroll
    for (int k = 0; k < kHist; ++k) st[k * a.dim + d] = tail[k];
  }
}

// Grid: x over channel blocks, y over batch rows. Conv over [state | x], then the state shifts
// by one in place.
template <int kWidth, typename LowT>
__global__ void __launch_bounds__(kThreads) ConvDecodeKernel(CausalConvArgs a) {
  constexpr int kHist = kWidth - 1;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (d >= a.dim) return;
  float w[kWidth];
#pragma unroll
  for (int k = 0; k < kWidth; ++k) w[k] = a.weight[k * a.dim + d];
  const float bias = a.bias ? a.bias[d] : 0.0f;
  const float xb = a.x_bias ? a.x_bias[d] : 0.0f;
  LowT* lowp = static_cast<LowT*>(a.out_lowp);
  for (int64_t b = blockIdx.y; b < a.tokens; b += gridDim.y) {
    const int32_t slot = a.slots[b];
    float* st = slot >= 0 ? a.state + static_cast<int64_t>(slot) * a.state_slot_stride : nullptr;
    float win[kHist > 0 ? kHist : 1];
#pragma unroll
    for (int k = 0; k < kHist; ++k) win[k] = st ? st[k * a.dim + d] : 0.0f;
    const float xv = a.x[b * a.x_stride + d] + xb;
    float acc = bias;
#pragma unroll
    for (int k = 0; k < kHist; ++k) acc += w[k] * win[k];
    acc += w[kHist] * xv;
    const float out = Silu(acc);
    a.out[b * a.out_stride + d] = out;
    if (lowp) lowp[b * a.out_lowp_stride + d] = FromFloat<LowT>(out);
    if constexpr (kHist > 0) {
      if (st != nullptr) {
#pragma unroll
        for (int k = 0; k + 1 < kHist; ++k) st[k * a.dim + d] = win[k + 1];
        st[(kHist - 1) * a.dim + d] = xv;
      }
    }
  }
}

bool ValidCommon(const CausalConvArgs& a) {
  if (a.dim <= 0 || a.width < 1 || a.width > kMaxConvWidth || a.tokens < 0) return false;
  if (a.tokens == 0) return true;
  if (!a.x || !a.weight || !a.out || a.x_stride < a.dim || a.out_stride < a.dim) return false;
  if (a.width > 1 && (!a.state || a.state_slot_stride < (a.width - 1) * a.dim)) return false;
  if (a.out_lowp && a.out_lowp_stride < a.dim) return false;
  return true;
}

#define MAMBA_CONV_WIDTH_CASES(LAUNCH) \
  LAUNCH(1) LAUNCH(2) LAUNCH(3) LAUNCH(4) LAUNCH(5) LAUNCH(6) LAUNCH(7) LAUNCH(8)

template <typename LowT>
cudaError_t LaunchPrefill(const CausalConvArgs& a, cudaStream_t stream) {
  const int64_t tiles = (a.tokens + kRowsPerThread - 1) / kRowsPerThread;
  const dim3 grid(CeilDiv(a.dim, kThreads),
                  static_cast<unsigned>(std::min(tiles, detail::kMaxGridY)));
  switch (a.width) {
#define MAMBA_LAUNCH(W)                                           \
  case W:                                                         \
    ConvPrefillKernel<W, LowT><<<grid, kThreads, 0, stream>>>(a); \
    break;
    MAMBA_CONV_WIDTH_CASES(MAMBA_LAUNCH)
#undef MAMBA_LAUNCH
    default:
      return cudaErrorInvalidValue;
  }
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (a.width == 1) return cudaSuccess;
  const dim3 sgrid(CeilDiv(a.dim, kThreads),
                   static_cast<unsigned>(std::min<int64_t>(a.num_chunks, detail::kMaxGridY)));
  switch (a.width) {
#define MAMBA_LAUNCH(W)                                    \
  case W:                                                  \
    ConvStateKernel<W><<<sgrid, kThreads, 0, stream>>>(a); \
    break;
    MAMBA_CONV_WIDTH_CASES(MAMBA_LAUNCH)
#undef MAMBA_LAUNCH
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename LowT>
cudaError_t LaunchDecode(const CausalConvArgs& a, cudaStream_t stream) {
  const dim3 grid(CeilDiv(a.dim, kThreads),
                  static_cast<unsigned>(std::min(a.tokens, detail::kMaxGridY)));
  switch (a.width) {
#define MAMBA_LAUNCH(W)                                          \
  case W:                                                        \
    ConvDecodeKernel<W, LowT><<<grid, kThreads, 0, stream>>>(a); \
    break;
    MAMBA_CONV_WIDTH_CASES(MAMBA_LAUNCH)
#undef MAMBA_LAUNCH
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

#undef MAMBA_CONV_WIDTH_CASES

}  // namespace

cudaError_t CausalConv(const CausalConvArgs& a, cudaStream_t stream) {
  if (!ValidCommon(a)) return cudaErrorInvalidValue;
  if (a.tokens == 0) return cudaSuccess;
  if (!a.chunks || a.num_chunks < 1) return cudaErrorInvalidValue;
  return detail::DispatchDType(a.out_lowp_dtype, [&](auto tag) {
    return LaunchPrefill<typename decltype(tag)::type>(a, stream);
  });
}

cudaError_t CausalConvDecode(const CausalConvArgs& a, cudaStream_t stream) {
  if (!ValidCommon(a)) return cudaErrorInvalidValue;
  if (a.tokens == 0) return cudaSuccess;
  if (!a.slots) return cudaErrorInvalidValue;
  return detail::DispatchDType(a.out_lowp_dtype, [&](auto tag) {
    return LaunchDecode<typename decltype(tag)::type>(a, stream);
  });
}

}  // namespace mamba::kernels::cuda
