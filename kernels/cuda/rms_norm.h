// CUDA RMSNorm with the fp32 residual add fused (the Mamba block's Add + MambaRMSNorm), the
// final norm over selected rows, Mamba-2's gated norm per group of channels, and the embedding
// lookup that starts the residual stream. CPU twin: kernels/cpu/rms_norm.h (RmsNormReference).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace mamba::kernels::cuda {

// For each output row r, with i = rows_index ? rows_index[r] : r:
//   residual[i] += delta[i] + delta_bias      (when delta is set; residual keeps the sum)
//   out[r] = weight * (residual[i] * rsqrt(mean(residual[i]^2) + eps))   in out_dtype
// rows_index must not repeat a row when delta is set. All pointers are device pointers.
struct AddRmsNormArgs {
  float* residual = nullptr;  // [*, dim], rows residual_stride apart
  int64_t residual_stride = 0;
  const float* delta = nullptr;  // [*, dim] or nullptr, rows delta_stride apart
  int64_t delta_stride = 0;
  const float* delta_bias = nullptr;  // [dim] or nullptr (the previous layer's out_proj bias)
  const float* weight = nullptr;      // [dim]
  void* out = nullptr;                // [rows, dim], rows out_stride apart
  DType out_dtype = DType::kF32;
  int64_t out_stride = 0;
  const int32_t* rows_index = nullptr;  // [rows] or nullptr
  int64_t rows = 0;
  int64_t dim = 0;
  double eps = 1e-5;
};

cudaError_t AddRmsNorm(const AddRmsNormArgs& a, cudaStream_t stream);

// RMSNorm over each group of group_size channels of a row on its own (Mamba-2's RMSNormGated
// after the scan, whose output already carries the silu(z) gate): for row r and group g,
//   v = in[r, g*group_size : (g+1)*group_size]
//   out[r, same columns] = weight[same] * (v * rsqrt(mean(v^2) + eps))   in out_dtype
struct GroupRmsNormArgs {
  const float* in = nullptr;  // [rows, groups * group_size], rows in_stride apart
  int64_t in_stride = 0;
  const float* weight = nullptr;  // [groups * group_size]
  void* out = nullptr;            // [rows, groups * group_size], rows out_stride apart
  DType out_dtype = DType::kF32;
  int64_t out_stride = 0;
  int64_t rows = 0;
  int64_t groups = 1;
  int64_t group_size = 0;
  double eps = 1e-5;
};

cudaError_t GroupRmsNorm(const GroupRmsNormArgs& a, cudaStream_t stream);

// out[t] = float(table[tokens[t]]) for t < rows. Ids out of [0, vocab) give a row of NaNs
// (callers validate ids; this keeps a bad id from reading outside the table).
struct EmbeddingArgs {
  const int32_t* tokens = nullptr;  // [rows]
  const void* table = nullptr;      // [vocab, dim] in dtype
  DType dtype = DType::kF32;
  int64_t vocab = 0;
  int64_t dim = 0;
  float* out = nullptr;  // [rows, dim], rows out_stride apart
  int64_t out_stride = 0;
  int64_t rows = 0;
};

cudaError_t Embedding(const EmbeddingArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
