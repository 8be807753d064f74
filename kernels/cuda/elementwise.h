// Small elementwise CUDA kernels of the Mamba-2 mixer: in_proj's bias added to its fp32 output
// (Mamba-2 reads five slices of that row, so the bias is added once rather than by each
// consumer), and the MLP split of mamba_ssm's d_ssm < d_inner layers, silu(z0) * x0.
// CPU twin: the loops of engine/cpu/cpu_backend.cc's RunMamba2Layer.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace mamba::kernels::cuda {

// data[r, k] += bias[k] for r < rows, k < dim. All pointers are device pointers.
struct AddBiasArgs {
  float* data = nullptr;  // [rows, dim], rows stride apart
  int64_t stride = 0;
  const float* bias = nullptr;  // [dim]
  int64_t rows = 0;
  int64_t dim = 0;
};

cudaError_t AddBias(const AddBiasArgs& a, cudaStream_t stream);

// out[r, k] = silu(gate[r, k]) * x[r, k] in out_dtype.
struct SiluMulArgs {
  const float* gate = nullptr;  // [rows, dim], rows in_stride apart
  const float* x = nullptr;     // [rows, dim], rows in_stride apart
  int64_t in_stride = 0;
  void* out = nullptr;  // [rows, dim], rows out_stride apart
  DType out_dtype = DType::kF32;
  int64_t out_stride = 0;
  int64_t rows = 0;
  int64_t dim = 0;
};

cudaError_t SiluMul(const SiluMulArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
