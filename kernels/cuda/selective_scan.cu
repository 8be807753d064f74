#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/selective_scan.h"

namespace mamba::kernels::cuda {
namespace {

using detail::CeilDiv;
using detail::FromFloat;
using detail::kLog2e;
using detail::Silu;
using detail::Softplus;

constexpr unsigned kFullMask = 0xffffffffu;

// ---- Prefill ----
// A block owns one chunk and kChannels channels, one warp per channel. The chunk is walked in
// sub-chunks of kSub tokens; lane l holds tokens [l*kItems, (l+1)*kItems) of a sub-chunk. For
// each state n, a lane composes its tokens' pairs (a_t, b_t) = (exp(dt*A), dt*B*x) into one
// affine map, a warp scan composes the maps across lanes, the carried state from the previous
// sub-chunk enters through each lane's exclusive prefix, and a second pass over the lane's
// tokens produces h_t and accumulates y_t += C_t[n] * h_t. Padded tokens (past the chunk's end)
// have dt = 0, so their pair is the identity and lane 31's last h is the chunk's state.
constexpr int kItems = 8;
constexpr int kSub = 32 * kItems;
constexpr int kChannels = 8;
constexpr int kThreads = 32 * kChannels;
constexpr int kStateGroup = 8;  // states whose (B, C) tile is in shared memory at once
// Token t of a sub-chunk is stored at P(t) = t + t / kItems, so that lane l reading
// P(l*kItems + i) touches a bank no other lane touches. The pitches make the cooperative
// (row-major) tile stores conflict-free as well: 292 = 4 (mod 32) for 4-byte stores of 4 rows x
// 8 channels, 290 = 2 (mod 16) for 8-byte stores of 2 rows x 8 states per half-warp.
constexpr int kPadded = kSub + kSub / kItems;
constexpr int kStagePitch = 292;
constexpr int kBcPitch = 290;
static_assert(kStagePitch >= kPadded && kBcPitch >= kPadded, "tile pitch too small");
static_assert(kSub * kChannels % kThreads == 0 && kSub * kStateGroup % kThreads == 0, "tiles");

__device__ __forceinline__ int P(int t) { return t + t / kItems; }

struct ScanShared {
  float2 bc[kStateGroup][kBcPitch];       // (B, C) of a group of states, transposed
  float stage[kChannels][kStagePitch];    // an x, dt, z or output tile, transposed
  float carry[kChannels][kMaxStateSize];  // each channel's state between sub-chunks
};

// Loads rows [row0, row0 + cnt) x channels [d0, d0 + kChannels) of src into sh.stage, zero
// elsewhere. Synchronizes before (the previous tile may still be read) and after.
__device__ __forceinline__ void StageTile(ScanShared& sh, const float* src, int64_t stride,
                                          int64_t row0, int cnt, int64_t d0, int64_t dim) {
  __syncthreads();
  for (int j = static_cast<int>(threadIdx.x); j < kSub * kChannels; j += kThreads) {
    const int t = j / kChannels, c = j % kChannels;
    float v = 0.0f;
    if (t < cnt && d0 + c < dim) v = src[(row0 + t) * stride + d0 + c];
    sh.stage[c][P(t)] = v;
  }
  __syncthreads();
}

// Three blocks per SM: 80 registers without spills (unbounded, ptxas takes 127 and fits two).
template <typename OutT>
__global__ void __launch_bounds__(kThreads, 3) ScanPrefillKernel(SelectiveScanArgs a) {
  __shared__ ScanShared sh;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kChannels;
  const int64_t d = d0 + warp;
  const bool active = d < a.dim;
  const int ns = static_cast<int>(a.d_state);
  const ChunkDesc ch = a.chunks[blockIdx.x];
  float* st = a.state + static_cast<int64_t>(ch.slot) * a.state_slot_stride;
  for (int n = lane; n < ns; n += 32) sh.carry[warp][n] = active ? st[n * a.dim + d] : 0.0f;
  const float dt_bias = active ? a.dt_bias[d] : 0.0f;
  const float d_skip = active ? a.d_skip[d] : 0.0f;
  const float z_bias = active && a.z_bias ? a.z_bias[d] : 0.0f;
  OutT* out = static_cast<OutT*>(a.out);

  for (int64_t s0 = 0; s0 < ch.length; s0 += kSub) {
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kSub), ch.length - s0));
    const int64_t row0 = ch.begin + s0;
    float xv[kItems], dtv[kItems], y[kItems];
    StageTile(sh, a.x, a.x_stride, row0, cnt, d0, a.dim);
#pragma unroll
    for (int i = 0; i < kItems; ++i) xv[i] = sh.stage[warp][P(lane * kItems + i)];
    StageTile(sh, a.dt, a.dt_stride, row0, cnt, d0, a.dim);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int t = lane * kItems + i;
      dtv[i] = t < cnt ? Softplus(sh.stage[warp][P(t)] + dt_bias) : 0.0f;
      y[i] = 0.0f;
    }
    for (int n0 = 0; n0 < ns; n0 += kStateGroup) {
      __syncthreads();  // the previous group's tile is no longer read
      for (int j = static_cast<int>(threadIdx.x); j < kSub * kStateGroup; j += kThreads) {
        const int t = j / kStateGroup, g = j % kStateGroup, n = n0 + g;
        float2 v = make_float2(0.0f, 0.0f);
        if (t < cnt && n < ns) {
          const int64_t row = (row0 + t) * a.bc_stride + n;
          v = make_float2(a.b[row], a.c[row]);
        }
        sh.bc[g][P(t)] = v;
      }
      __syncthreads();
      const int groups = min(kStateGroup, ns - n0);
      for (int g = 0; g < groups; ++g) {
        const int n = n0 + g;
        const float a2 = active ? a.a[n * a.dim + d] * kLog2e : 0.0f;  // exp(dt*A) = 2^(dt*a2)
        float ai[kItems], bi[kItems], ci[kItems];
        float pa = 1.0f, pb = 0.0f;  // this lane's tokens composed: h_out = pa * h_in + pb
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const float2 bc = sh.bc[g][P(lane * kItems + i)];
          ai[i] = exp2f(dtv[i] * a2);
          bi[i] = (dtv[i] * xv[i]) * bc.x;
          ci[i] = bc.y;
          pa = ai[i] * pa;
          pb = ai[i] * pb + bi[i];
        }
        // Inclusive scan over lanes: compose the earlier lanes' map before this lane's.
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const float qa = __shfl_up_sync(kFullMask, pa, off);
          const float qb = __shfl_up_sync(kFullMask, pb, off);
          if (lane >= off) {
            pb = pa * qb + pb;
            pa = pa * qa;
          }
        }
        float ea = __shfl_up_sync(kFullMask, pa, 1);
        float eb = __shfl_up_sync(kFullMask, pb, 1);
        if (lane == 0) {
          ea = 1.0f;
          eb = 0.0f;
        }
        const float h0 = sh.carry[warp][n];
        float h = ea * h0 + eb;  // the state before this lane's first token
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          h = ai[i] * h + bi[i];
          y[i] += ci[i] * h;
        }
        __syncwarp();  // every lane has read carry[n]
        if (lane == 31) sh.carry[warp][n] = h;
      }
    }
    StageTile(sh, a.z, a.z_stride, row0, cnt, d0, a.dim);
    float o[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const float z = sh.stage[warp][P(lane * kItems + i)] + z_bias;
      o[i] = (y[i] + d_skip * xv[i]) * Silu(z);
    }
    __syncthreads();  // the z tile is read everywhere before it is overwritten
#pragma unroll
    for (int i = 0; i < kItems; ++i) sh.stage[warp][P(lane * kItems + i)] = o[i];
    __syncthreads();
    for (int j = static_cast<int>(threadIdx.x); j < kSub * kChannels; j += kThreads) {
      const int t = j / kChannels, c = j % kChannels;
      if (t < cnt && d0 + c < a.dim) {
        out[(row0 + t) * a.out_stride + d0 + c] = FromFloat<OutT>(sh.stage[c][P(t)]);
      }
    }
  }
  __syncwarp();  // lane 31's last carries are visible to the whole warp
  if (active) {
    for (int n = lane; n < ns; n += 32) st[n * a.dim + d] = sh.carry[warp][n];
  }
}

// ---- Decode ----
constexpr int kDecodeThreads = 128;

template <typename OutT>
__global__ void __launch_bounds__(kDecodeThreads) ScanDecodeKernel(SelectiveScanArgs a) {
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kDecodeThreads + threadIdx.x;
  if (d >= a.dim) return;
  const float dt_bias = a.dt_bias[d], d_skip = a.d_skip[d];
  const float z_bias = a.z_bias ? a.z_bias[d] : 0.0f;
  const int64_t ns = a.d_state;
  OutT* out = static_cast<OutT*>(a.out);
  for (int64_t row = blockIdx.y; row < a.tokens; row += gridDim.y) {
    const int32_t slot = a.slots[row];
    float* st =
        slot >= 0 ? a.state + static_cast<int64_t>(slot) * a.state_slot_stride + d : nullptr;
    const float dt = Softplus(a.dt[row * a.dt_stride + d] + dt_bias);
    const float x = a.x[row * a.x_stride + d];
    const float dtx = dt * x;
    const float* b = a.b + row * a.bc_stride;
    const float* c = a.c + row * a.bc_stride;
    float y = 0.0f;
#pragma unroll 4
    for (int64_t n = 0; n < ns; ++n) {
      const float a2 = a.a[n * a.dim + d] * kLog2e;
      const float h_old = st ? st[n * a.dim] : 0.0f;
      const float h = exp2f(dt * a2) * h_old + dtx * b[n];
      if (st) st[n * a.dim] = h;
      y += c[n] * h;
    }
    const float z = a.z[row * a.z_stride + d] + z_bias;
    out[row * a.out_stride + d] = FromFloat<OutT>((y + d_skip * x) * Silu(z));
  }
}

bool ValidCommon(const SelectiveScanArgs& a) {
  if (a.dim <= 0 || a.d_state < 1 || a.d_state > kMaxStateSize || a.tokens < 0) return false;
  if (a.tokens == 0) return true;
  if (!a.x || !a.dt || !a.dt_bias || !a.a || !a.b || !a.c || !a.d_skip || !a.z || !a.state ||
      !a.out) {
    return false;
  }
  return a.x_stride >= a.dim && a.dt_stride >= a.dim && a.z_stride >= a.dim &&
         a.out_stride >= a.dim && a.bc_stride >= 1 && a.state_slot_stride >= a.d_state * a.dim;
}

}  // namespace

cudaError_t SelectiveScan(const SelectiveScanArgs& a, cudaStream_t stream) {
  if (!ValidCommon(a)) return cudaErrorInvalidValue;
  if (a.tokens == 0) return cudaSuccess;
  if (!a.chunks || a.num_chunks < 1) return cudaErrorInvalidValue;
  const int64_t groups = (a.dim + kChannels - 1) / kChannels;
  if (groups > detail::kMaxGridY) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(a.num_chunks), static_cast<unsigned>(groups));
  return detail::DispatchDType(a.out_dtype, [&](auto tag) {
    ScanPrefillKernel<typename decltype(tag)::type><<<grid, kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t SelectiveScanDecode(const SelectiveScanArgs& a, cudaStream_t stream) {
  if (!ValidCommon(a)) return cudaErrorInvalidValue;
  if (a.tokens == 0) return cudaSuccess;
  if (!a.slots) return cudaErrorInvalidValue;
  const dim3 grid(CeilDiv(a.dim, kDecodeThreads),
                  static_cast<unsigned>(std::min(a.tokens, detail::kMaxGridY)));
  return detail::DispatchDType(a.out_dtype, [&](auto tag) {
    ScanDecodeKernel<typename decltype(tag)::type><<<grid, kDecodeThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace mamba::kernels::cuda
