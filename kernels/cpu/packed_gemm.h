// Our own GEMM for the engine's weights: W [n, k] repacked once at load into column blocks of
// 16 (fp32: [n/16][k][16]; bf16: [n/16][k/2][16][2], the dot-product pair layout), multiplied by
// an AVX-512 outer-product micro-kernel. Every output element is accumulated in the same order
// whatever m, the tile or the thread, so a row's result is bitwise independent of the batch.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace mamba::kernels::cpu {

inline constexpr int64_t kPackCols = 16;

struct PackedWeight {
  DType dtype = DType::kF32;  // kF32 or kBF16
  int64_t n = 0;
  int64_t k = 0;
  int64_t k_packed = 0;  // k (fp32) or ceil(k / 2) pairs (bf16)
  std::shared_ptr<std::byte[]> data;
  int64_t bytes = 0;
};

// Whether this CPU runs the packed kernel for `dtype` (AVX-512F; AVX512-BF16 for bfloat16).
bool PackedGemmSupported(DType dtype);

// Repacks W [n, k] stored as `src_dtype` into `dtype`. Row blocks are converted in parallel.
absl::StatusOr<PackedWeight> PackWeight(const void* src, DType src_dtype, int64_t n, int64_t k,
                                        DType dtype);

struct PackedGemmArgs {
  const float* x = nullptr;  // [m, k], rows ldx apart
  int64_t ldx = 0;
  const PackedWeight* w = nullptr;
  const float* bias = nullptr;  // [n] or nullptr
  float* y = nullptr;           // [m, n], rows ldy apart
  int64_t ldy = 0;
  int64_t m = 0;
  bool accumulate = false;  // y += x W^T (+ bias)
};

absl::Status PackedGemm(const PackedGemmArgs& a);

}  // namespace mamba::kernels::cpu
