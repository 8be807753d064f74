// Device helpers shared by the CUDA kernels (internal to kernels/cuda/*.cu): element loads and
// stores in fp32/bf16/fp16, the activations of the Mamba mixer, warp and block reductions, and
// the dtype dispatch used by the launchers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace mamba::kernels::cuda::detail {

inline constexpr float kLog2e = 1.44269504088896341f;

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

// Round to nearest even, as kernels::F32ToBf16 / F32ToF16 do on the host.
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

// silu(v) = v * sigmoid(v); -0 for very negative v (exp overflows to inf), never NaN.
__device__ __forceinline__ float Silu(float v) { return v / (1.0f + expf(-v)); }

// torch.nn.functional.softplus with its threshold 20 (SoftplusReference).
__device__ __forceinline__ float Softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call synchronizes the block twice.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with T the device type of `dtype`; returns f's cudaError_t.
template <typename F>
cudaError_t DispatchDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f(Tag<float>{});
    case DType::kBF16:
      return f(Tag<__nv_bfloat16>{});
    case DType::kF16:
      return f(Tag<__half>{});
    case DType::kI8:  // int8 weights go through the int8 GEMM, never these kernels
      break;
  }
  return cudaErrorInvalidValue;
}

// Blocks needed to cover n items, n > 0.
inline unsigned CeilDiv(int64_t n, int64_t d) { return static_cast<unsigned>((n + d - 1) / d); }

// The largest grid.y / grid.z; kernels loop when they need more.
inline constexpr int64_t kMaxGridY = 65535;

}  // namespace mamba::kernels::cuda::detail
