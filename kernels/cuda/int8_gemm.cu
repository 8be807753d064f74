// The int8 GEMM's kernels: the decode GEMV and the dequantization of a tile of rows (the larger-m
// path multiplies the tile with cuBLAS, int8_gemm.cc).
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/int8_gemm.h"

namespace mamba::kernels::cuda::detail {
namespace {

constexpr int kGemvWarps = 8;  // output columns per block, one warp each
constexpr int kDequantThreads = 256;
constexpr int64_t kMaxDequantBlocks = 1 << 16;

// The 16 int8 values of a 16-byte load as floats (little-endian: byte i is element i).
__device__ __forceinline__ void ExpandInt8(const uint4& v, float* f) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      f[4 * w + b] = static_cast<float>(static_cast<int8_t>((words[w] >> (8 * b)) & 0xffu));
    }
  }
}

// The 16 / sizeof(T) activations of a 16-byte load as floats.
template <typename T>
struct Expand16;
template <>
struct Expand16<float> {
  static constexpr int kValues = 4;
  __device__ __forceinline__ static void Run(const uint4& v, float* f) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  }
};
template <>
struct Expand16<__nv_bfloat16> {
  static constexpr int kValues = 8;
  __device__ __forceinline__ static void Run(const uint4& v, float* f) {
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      f[2 * w] = __uint_as_float(words[w] << 16);
      f[2 * w + 1] = __uint_as_float(words[w] & 0xffff0000u);
    }
  }
};
template <>
struct Expand16<__half> {
  static constexpr int kValues = 8;
  __device__ __forceinline__ static void Run(const uint4& v, float* f) {
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      f[2 * w] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[w] & 0xffffu)));
      f[2 * w + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[w] >> 16)));
    }
  }
};

// A warp per output column j: each lane takes 16 weights at a time (kVec: one 16-byte load, the
// same scale for all 16; else one weight per lane, any k and group size), multiplies them with
// rows r < m <= M of x in fp32, and the warp sums its lanes. x (at most 8 rows) stays in cache
// while every weight is read once.
template <int M, typename XT, bool kVec>
__global__ void __launch_bounds__(kGemvWarps * 32)
    Int8GemvKernel(Int8GemmArgs a, int64_t groups) {  // groups: Int8Groups(a.k, a.group_size)
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (j >= a.n) return;  // the whole warp leaves together
  const int8_t* q = a.q + j * a.k;
  const float* scale = a.scales + j * groups;
  const XT* x = static_cast<const XT*>(a.x);
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  if constexpr (kVec) {
    using E = Expand16<XT>;
    constexpr int kLoads = 16 / E::kValues;  // 16-byte loads of x per 16 weights
    for (int64_t l = static_cast<int64_t>(lane) * 16; l < a.k; l += 32 * 16) {
      float w[16];
      ExpandInt8(__ldg(reinterpret_cast<const uint4*>(q + l)), w);
      const float s = scale[l / a.group_size];
#pragma unroll
      for (int r = 0; r < M; ++r) {
        if (r >= a.m) break;
        const uint4* xr = reinterpret_cast<const uint4*>(x + r * a.ldx + l);
        float dot = 0.0f;
#pragma unroll
        for (int v = 0; v < kLoads; ++v) {
          float f[E::kValues];
          E::Run(xr[v], f);
#pragma unroll
          for (int i = 0; i < E::kValues; ++i) dot = fmaf(w[v * E::kValues + i], f[i], dot);
        }
        acc[r] = fmaf(s, dot, acc[r]);
      }
    }
  } else {
    for (int64_t l = lane; l < a.k; l += 32) {
      const float w = static_cast<float>(q[l]) * scale[l / a.group_size];
#pragma unroll
      for (int r = 0; r < M; ++r) {
        if (r >= a.m) break;
        acc[r] = fmaf(w, ToFloat(x[r * a.ldx + l]), acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = WarpSum(acc[r]);
  if (lane != 0) return;
  const float b = a.bias ? a.bias[j] : 0.0f;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    if (r >= a.m) break;
    float* y = a.y + r * a.ldy + j;
    *y = a.accumulate ? *y + (acc[r] + b) : acc[r] + b;
  }
}

template <typename OutT>
__global__ void __launch_bounds__(kDequantThreads) Int8DequantKernel(Int8DequantArgs a) {
  OutT* out = static_cast<OutT*>(a.out);
  const int64_t total = a.rows * a.k;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kDequantThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kDequantThreads) {
    const int64_t j = i / a.k, l = i - j * a.k;
    out[i] =
        FromFloat<OutT>(static_cast<float>(a.q[i]) * a.scales[j * a.groups + l / a.group_size]);
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <int M, typename XT>
cudaError_t LaunchGemv(const Int8GemmArgs& a, cudaStream_t stream) {
  // 16 weights per load with one scale: k a multiple of 16 (every row 16-byte aligned), groups of
  // a multiple of 16 (or one per row), x rows 16-byte aligned.
  const bool vec = a.k % 16 == 0 && (a.group_size % 16 == 0 || a.group_size >= a.k) &&
                   Aligned16(a.q) && Aligned16(a.x) &&
                   (a.ldx * static_cast<int64_t>(sizeof(XT))) % 16 == 0;
  const unsigned blocks = CeilDiv(a.n, kGemvWarps);
  const int64_t groups = Int8Groups(a.k, a.group_size);
  if (vec) {
    Int8GemvKernel<M, XT, true><<<blocks, kGemvWarps * 32, 0, stream>>>(a, groups);
  } else {
    Int8GemvKernel<M, XT, false><<<blocks, kGemvWarps * 32, 0, stream>>>(a, groups);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t Int8Gemv(const Int8GemmArgs& a, cudaStream_t stream) {
  if (a.m < 1 || a.m > kInt8GemvMaxRows || a.n < 1 || a.n > int64_t{kGemvWarps} * 0x7fffffff ||
      a.k < 1 || a.group_size < 1 || a.ldx < a.k || a.ldy < a.n || !a.x || !a.q || !a.scales ||
      !a.y) {
    return cudaErrorInvalidValue;
  }
  return DispatchDType(a.x_dtype, [&](auto tag) {
    using XT = typename decltype(tag)::type;
    if (a.m == 1) return LaunchGemv<1, XT>(a, stream);
    if (a.m == 2) return LaunchGemv<2, XT>(a, stream);
    if (a.m <= 4) return LaunchGemv<4, XT>(a, stream);
    return LaunchGemv<8, XT>(a, stream);
  });
}

cudaError_t Int8Dequantize(const Int8DequantArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.k < 1 || a.group_size < 1 || a.groups != Int8Groups(a.k, a.group_size)) {
    return cudaErrorInvalidValue;
  }
  if (a.rows == 0) return cudaSuccess;
  if (!a.q || !a.scales || !a.out) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(
      std::min<int64_t>(kMaxDequantBlocks, CeilDiv(a.rows * a.k, kDequantThreads)));
  return DispatchDType(a.out_dtype, [&](auto tag) {
    Int8DequantKernel<typename decltype(tag)::type><<<blocks, kDequantThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace mamba::kernels::cuda::detail
