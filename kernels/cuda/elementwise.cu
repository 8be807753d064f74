#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.h"

namespace mamba::kernels::cuda {
namespace {

using detail::CeilDiv;
using detail::FromFloat;
using detail::Silu;

constexpr int kThreads = 256;

// Grid: x over blocks of kThreads columns, y over rows (looping past the grid's limit).
__global__ void __launch_bounds__(kThreads) AddBiasKernel(AddBiasArgs a) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= a.dim) return;
  const float b = a.bias[k];
  for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) a.data[r * a.stride + k] += b;
}

template <typename OutT>
__global__ void __launch_bounds__(kThreads) SiluMulKernel(SiluMulArgs a) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= a.dim) return;
  OutT* out = static_cast<OutT*>(a.out);
  for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
    const int64_t at = r * a.in_stride + k;
    out[r * a.out_stride + k] = FromFloat<OutT>(a.x[at] * Silu(a.gate[at]));
  }
}

dim3 Grid(int64_t rows, int64_t dim) {
  return dim3(CeilDiv(dim, kThreads), static_cast<unsigned>(std::min(rows, detail::kMaxGridY)));
}

}  // namespace

cudaError_t AddBias(const AddBiasArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.dim <= 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  if (!a.data || !a.bias || a.stride < a.dim) return cudaErrorInvalidValue;
  AddBiasKernel<<<Grid(a.rows, a.dim), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t SiluMul(const SiluMulArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.dim <= 0) return cudaErrorInvalidValue;
  if (a.rows == 0) return cudaSuccess;
  if (!a.gate || !a.x || !a.out || a.in_stride < a.dim || a.out_stride < a.dim) {
    return cudaErrorInvalidValue;
  }
  return detail::DispatchDType(a.out_dtype, [&](auto tag) {
    SiluMulKernel<typename decltype(tag)::type><<<Grid(a.rows, a.dim), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace mamba::kernels::cuda
