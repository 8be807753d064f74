// The CPU engine's view of a checkpoint: GEMM weights in the compute dtype (zero-copy from the
// memory-mapped file when the stored dtype already matches) and the small per-channel tensors
// in fp32, laid out for the kernels.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/packed_gemm.h"

namespace mamba::engine::cpu {

// A weight matrix [n, k] in the compute dtype: int8 with scales (compute int8); else packed for
// our AVX-512 kernel where the CPU has it, else plain row-major for oneDNN.
struct CpuMatrix {
  kernels::cpu::Int8Weight int8;      // used when int8.data is set
  kernels::cpu::PackedWeight packed;  // used when packed.data is set
  kernels::cpu::GemmWeight plain;

  // y[m, n] (+)= x[m, k] W^T (+ bias)
  absl::Status MatMul(const float* x, int64_t ldx, const float* bias, float* y, int64_t ldy,
                      int64_t m, bool accumulate) const;
};

// Shapes are Mamba-1's; Mamba-2's (H heads, conv_dim = d_inner + 2*G*d_state) where noted.
struct CpuLayerWeights {
  CpuMatrix in_proj;                 // [2*d_inner, d_model]; Mamba-2 [in_proj_size, d_model]
  CpuMatrix x_proj;                  // [dt_rank + 2*d_state, d_inner]; unset in Mamba-2
  CpuMatrix dt_proj;                 // [d_inner, dt_rank]; unset in Mamba-2
  CpuMatrix out_proj;                // [d_model, d_inner]; Mamba-2 [d_model, mlp + d_inner]
  std::vector<float> norm;           // [d_model]
  std::vector<float> in_proj_bias;   // [in_proj rows] or empty
  std::vector<float> out_proj_bias;  // [d_model] or empty
  std::vector<float> conv;           // [d_conv, d_inner] (transposed from [d_inner, 1, d_conv]); or
                                     // [d_conv, conv_dim]
  std::vector<float> conv_bias;      // [d_inner] or [conv_dim] or empty
  std::vector<float> dt_bias;        // [d_inner]; Mamba-2 [H]
  std::vector<float> a;           // [d_state, d_inner] = -exp(A_log)^T; Mamba-2 [H] = -exp(A_log)
  std::vector<float> d;           // [d_inner]; Mamba-2 [H]
  std::vector<float> gated_norm;  // Mamba-2: [d_inner], the gated RMS norm's weight
};

struct CpuWeights {
  kernels::DType compute = kernels::DType::kF32;
  bool packed = false;                    // our AVX-512 GEMM (else oneDNN); not for int8
  int64_t int8_group_size = 0;            // compute int8: inputs per scale (0: one per row)
  const TensorInfo* embedding = nullptr;  // any stored dtype; rows converted on lookup
  CpuMatrix lm_head;                      // [vocab, d_model]
  std::vector<float> norm_f;              // [d_model]
  // FalconMamba's weightless mixer RMS norms as the kernel's weight: ones, [max(dt_rank,
  // d_state)] (x * 1.0f is exact); empty for Mamba.
  std::vector<float> mixer_norm_ones;
  std::vector<CpuLayerWeights> layers;
  int64_t gemm_bytes = 0;   // bytes of GEMM weights read per token
  int64_t owned_bytes = 0;  // bytes converted into memory we own

  // Converted copies live here (weights used zero-copy point into the checkpoint's mapping).
  std::vector<std::unique_ptr<std::byte[]>> storage;
};

// `int8_group_size` applies when `compute` is int8 (see BackendOptions::int8_group_size).
absl::StatusOr<std::unique_ptr<CpuWeights>> PrepareCpuWeights(const Checkpoint& checkpoint,
                                                              kernels::DType compute,
                                                              int64_t int8_group_size = 0);

}  // namespace mamba::engine::cpu
