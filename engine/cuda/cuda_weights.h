// The CUDA engine's copy of a checkpoint in device memory, uploaded once: GEMM weights in the
// compute dtype (or int8 with fp32 scales, quantized at load), small per-channel tensors in fp32
// laid out for the kernels (as cpu_weights.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/cuda/cuda_util.h"
#include "kernels/dtype.h"

namespace mamba::engine::cuda {

// A GEMM weight W [n, k] row-major (torch.nn.Linear.weight) in device memory: multiplied by
// cuBLAS in `dtype` (fp32, bf16, fp16; x in the same dtype), or int8 with fp32 scales and x in
// x_dtype (kernels/cuda/int8_gemm.h). Every GEMM of the engine takes one of these
// (CudaBackend::Gemm picks the kernel).
struct DeviceMatrix {
  const void* data = nullptr;  // [n, k] in dtype
  kernels::DType dtype = kernels::DType::kF32;
  kernels::DType x_dtype = kernels::DType::kF32;  // its inputs' dtype: dtype, unless int8
  const float* scales = nullptr;                  // int8: [n, Int8Groups(k, group_size)]
  // int8: inputs per scale, at most k rounded up to 4 (>= k: one scale per row).
  int64_t group_size = 0;
  int64_t n = 0;
  int64_t k = 0;
};

// Device pointers into CudaWeights::arena; optional tensors are null when absent. Shapes are
// Mamba-1's; Mamba-2's (H heads, conv_dim = d_inner + 2*n_groups*d_state) where noted.
struct CudaLayerWeights {
  DeviceMatrix in_proj;  // [2*d_inner, d_model]; Mamba-2 [in_proj_size, d_model]
  DeviceMatrix x_proj;   // [dt_rank + 2*d_state, d_inner]; absent in Mamba-2
  // [d_inner, dt_rank] fp32 in the float dtypes: its input is x_proj's fp32 output, so no cast
  // kernel runs between the two GEMMs (this matrix is ~2% of a layer's bytes). With int8 weights
  // int8 like the other matrices (as the CPU engine quantizes it), with fp32 x. Absent in
  // Mamba-2.
  DeviceMatrix dt_proj;
  DeviceMatrix out_proj;                 // [d_model, d_inner]; Mamba-2 [d_model, mlp + d_inner]
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
  // The GEMM weights' dtype (kI8: int8 weights) and the dtype of the GEMM inputs (normed
  // activations, conv and scan outputs, the LM head's input): the weight dtype, bf16 with int8
  // weights (their dequantized tiles and cuBLAS run in bf16; the GEMV reads bf16 x).
  kernels::DType weights = kernels::DType::kF32;
  kernels::DType compute = kernels::DType::kF32;
  const void* embedding = nullptr;  // [vocab, d_model] in embedding_dtype (as stored)
  kernels::DType embedding_dtype = kernels::DType::kF32;
  DeviceMatrix lm_head;           // [vocab, d_model] in the weights' dtype (may alias embedding)
  const float* norm_f = nullptr;  // [d_model]
  // FalconMamba's weightless mixer RMS norms as the kernel's weight: ones, [max(dt_rank,
  // d_state)]; null for Mamba.
  const float* mixer_norm_ones = nullptr;
  std::vector<CudaLayerWeights> layers;
  int64_t gemm_bytes = 0;  // GEMM weight bytes read by one decode step (incl. the LM head;
                           // int8: the int8 bytes and the scales)
  // int8: the largest Int8GemmWorkspaceBytes of the int8 matrices (0 otherwise).
  size_t int8_workspace_bytes = 0;
  DeviceBuffer arena;  // every tensor above, 256-byte aligned
};

// Plans, allocates and uploads (synchronously) every tensor the engine uses. `weights` kI8
// quantizes float GEMM matrices on the host (kernels::cpu::QuantizeRowMajor, int8_group_size
// inputs per scale, 0: one per row) and uploads a quantized checkpoint's int8 matrices and scales
// as they are (with its group size); a float `weights` dtype dequantizes those.
absl::StatusOr<std::unique_ptr<CudaWeights>> UploadCudaWeights(const Checkpoint& checkpoint,
                                                               kernels::DType weights,
                                                               int64_t int8_group_size = 0);

}  // namespace mamba::engine::cuda
