// The CUDA engine's copy of a checkpoint in device memory, uploaded once: GEMM weights in the
// compute dtype, small per-channel tensors in fp32 laid out for the kernels (as cpu_weights.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/cuda/cuda_util.h"
#include "kernels/dtype.h"

namespace mamba::engine::cuda {

// Device pointers into CudaWeights::arena; optional tensors are null when absent. Shapes are
// Mamba-1's; Mamba-2's (H heads, conv_dim = d_inner + 2*n_groups*d_state) where noted.
struct CudaLayerWeights {
  const void* in_proj = nullptr;  // [2*d_inner, d_model]; Mamba-2 [in_proj_size, d_model]
  const void* x_proj = nullptr;   // [dt_rank + 2*d_state, d_inner]; null in Mamba-2
  // [d_inner, dt_rank] always fp32: its input is x_proj's fp32 output, so no cast kernel runs
  // between the two GEMMs (this matrix is ~2% of a layer's bytes). Null in Mamba-2.
  const float* dt_proj = nullptr;
  const void* out_proj = nullptr;        // [d_model, d_inner]; Mamba-2 [d_model, mlp + d_inner]
  const float* norm = nullptr;           // [d_model]
  const float* in_proj_bias = nullptr;   // [in_proj rows]
  const float* out_proj_bias = nullptr;  // [d_model]
  const float* conv = nullptr;        // [d_conv, d_inner] (transposed from [d_inner, 1, d_conv]);
                                      // Mamba-2 [d_conv, conv_dim]
  const float* conv_bias = nullptr;   // [d_inner]; Mamba-2 [conv_dim]
  const float* dt_bias = nullptr;     // [d_inner]; Mamba-2 [H]
  const float* a = nullptr;           // [d_state, d_inner] = -exp(A_log)^T; Mamba-2 [H]
  const float* d = nullptr;           // [d_inner]; Mamba-2 [H]
  const float* gated_norm = nullptr;  // Mamba-2 only: [d_inner], the gated RMS norm's weight
};

struct CudaWeights {
  kernels::DType compute = kernels::DType::kF32;
  const void* embedding = nullptr;  // [vocab, d_model] in embedding_dtype (as stored)
  kernels::DType embedding_dtype = kernels::DType::kF32;
  const void* lm_head = nullptr;  // [vocab, d_model] in compute dtype (may alias embedding)
  const float* norm_f = nullptr;  // [d_model]
  // FalconMamba's weightless mixer RMS norms as the kernel's weight: ones, [max(dt_rank,
  // d_state)]; null for Mamba.
  const float* mixer_norm_ones = nullptr;
  std::vector<CudaLayerWeights> layers;
  int64_t gemm_bytes = 0;  // GEMM weight bytes read by one decode step (incl. the LM head)
  DeviceBuffer arena;      // every tensor above, 256-byte aligned
};

// Plans, allocates and uploads (synchronously) every tensor the engine uses.
absl::StatusOr<std::unique_ptr<CudaWeights>> UploadCudaWeights(const Checkpoint& checkpoint,
                                                               kernels::DType compute);

}  // namespace mamba::engine::cuda
