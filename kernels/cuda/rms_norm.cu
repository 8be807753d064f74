#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/rms_norm.h"

namespace mamba::kernels::cuda {
namespace {

using detail::FromFloat;
using detail::ToFloat;

constexpr int kThreads = 256;

// One block per output row (looping when rows exceed the grid). Each thread keeps to the
// same elements in both passes, so it reads back only what it wrote itself.
template <typename OutT>
__global__ void __launch_bounds__(kThreads) AddRmsNormKernel(AddRmsNormArgs a) {
  __shared__ float scratch[32];
  OutT* out_base = static_cast<OutT*>(a.out);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int64_t i = a.rows_index ? a.rows_index[r] : r;
    float* res = a.residual + i * a.residual_stride;
    const float* delta = a.delta ? a.delta + i * a.delta_stride : nullptr;
    float sum = 0.0f;
    for (int64_t k = threadIdx.x; k < a.dim; k += kThreads) {
      float v = res[k];
      if (delta) {
        v += delta[k] + (a.delta_bias ? a.delta_bias[k] : 0.0f);
        res[k] = v;
      }
      sum += v * v;
    }
    sum = detail::BlockSum(sum, scratch);
    const float inv = 1.0f / sqrtf(sum / static_cast<float>(a.dim) + static_cast<float>(a.eps));
    OutT* out = out_base + r * a.out_stride;
    for (int64_t k = threadIdx.x; k < a.dim; k += kThreads) {
      out[k] = FromFloat<OutT>(a.weight[k] * (res[k] * inv));
    }
  }
}

// One block per (row, group), looping when there are more than the grid.
template <typename OutT>
__global__ void __launch_bounds__(kThreads) GroupRmsNormKernel(GroupRmsNormArgs a) {
  __shared__ float scratch[32];
  OutT* out_base = static_cast<OutT*>(a.out);
  const int64_t gs = a.group_size;
  for (int64_t rg = blockIdx.x; rg < a.rows * a.groups; rg += gridDim.x) {
    const int64_t r = rg / a.groups, first = (rg % a.groups) * gs;
    const float* in = a.in + r * a.in_stride + first;
    float sum = 0.0f;
    for (int64_t k = threadIdx.x; k < gs; k += kThreads) sum += in[k] * in[k];
    sum = detail::BlockSum(sum, scratch);
    const float inv = 1.0f / sqrtf(sum / static_cast<float>(gs) + static_cast<float>(a.eps));
    OutT* out = out_base + r * a.out_stride + first;
    const float* w = a.weight + first;
    for (int64_t k = threadIdx.x; k < gs; k += kThreads)
      out[k] = FromFloat<OutT>(w[k] * (in[k] * inv));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) EmbeddingKernel(EmbeddingArgs a) {
  const T* table = static_cast<const T*>(a.table);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int32_t id = a.tokens[r];
    float* out = a.out + r * a.out_stride;
    const bool ok = id >= 0 && id < a.vocab;
    const T* row = table + (ok ? static_cast<int64_t>(id) : 0) * a.dim;
    for (int64_t k = threadIdx.x; k < a.dim; k += kThreads)
      out[k] = ok ? ToFloat(row[k]) : nanf("");
  }
}

constexpr int64_t kMaxBlocks = 1 << 20;

}  // namespace

cudaError_t AddRmsNorm(const AddRmsNormArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.dim <= 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  if (!a.residual || !a.weight || !a.out || a.residual_stride < a.dim || a.out_stride < a.dim ||
      (a.delta && a.delta_stride < a.dim)) {
    return cudaErrorInvalidValue;
  }
  const unsigned blocks = static_cast<unsigned>(std::min(a.rows, kMaxBlocks));
  return detail::DispatchDType(a.out_dtype, [&](auto tag) {
    AddRmsNormKernel<typename decltype(tag)::type><<<blocks, kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t GroupRmsNorm(const GroupRmsNormArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.groups < 1 || a.group_size <= 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  const int64_t width = a.groups * a.group_size;
  if (!a.in || !a.weight || !a.out || a.in_stride < width || a.out_stride < width) {
    return cudaErrorInvalidValue;
  }
  const unsigned blocks = static_cast<unsigned>(std::min(a.rows * a.groups, kMaxBlocks));
  return detail::DispatchDType(a.out_dtype, [&](auto tag) {
    GroupRmsNormKernel<typename decltype(tag)::type><<<blocks, kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

cudaError_t Embedding(const EmbeddingArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.dim <= 0 || a.vocab <= 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  if (!a.tokens || !a.table || !a.out || a.out_stride < a.dim) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(std::min(a.rows, kMaxBlocks));
  return detail::DispatchDType(a.dtype, [&](auto tag) {
    EmbeddingKernel<typename decltype(tag)::type><<<blocks, kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace mamba::kernels::cuda
