// Weight-only int8 GEMM on the GPU (issue 17): y[m, n] (+)= x[m, k] (q[n, k] * scale)^T (+ bias)
// with symmetric int8 weights and fp32 scales per output row or per group of inputs (the CPU
// engine's quantization: kernels/cpu/int8_gemm.h, QuantizeWeight), x in bf16, fp16 or fp32 and an
// fp32 result. CPU twin: kernels::cpu::Int8GemmReference with quantize_x = false.
//
// m <= kInt8GemvMaxRows (decode): a GEMV kernel that reads each int8 weight once (a warp per output
// column, 16-byte loads, dequantized in registers, fp32 sums, a warp-shuffle reduction). Larger m
// (prefill): the weights are dequantized to x's dtype a tile of rows at a time into the caller's
// workspace and multiplied by cuBLAS. Neither allocates nor synchronizes, so both can be captured
// in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace mamba::kernels::cuda {

class CublasGemm;

inline constexpr int64_t kInt8GemvMaxRows = 8;
// The dequantized tile the larger-m path aims for (Int8GemmWorkspaceBytes).
inline constexpr size_t kInt8TileBytes = size_t{32} << 20;

struct Int8GemmArgs {
  const void* x = nullptr;  // [m, k] in x_dtype, rows ldx apart (device)
  int64_t ldx = 0;
  DType x_dtype = DType::kBF16;  // kBF16, kF16 or kF32
  const int8_t* q = nullptr;     // [n, k] row-major (device)
  // [n, groups] with groups = Int8Groups(k, group_size): w[j][l] = q[j][l] * scales[j * groups +
  // l / group_size] (device).
  const float* scales = nullptr;
  int64_t group_size = 0;  // inputs per scale, >= 1; k or more: one scale per row
  int64_t n = 0;
  int64_t k = 0;
  const float* bias = nullptr;  // [n] or null (device)
  float* y = nullptr;           // [m, n] fp32, rows ldy apart (device)
  int64_t ldy = 0;
  int64_t m = 0;
  bool accumulate = false;  // y += x W^T (+ bias) instead of y = x W^T (+ bias)
  // m > kInt8GemvMaxRows only: room for at least one dequantized row of k x_dtype values (more
  // rows per tile, fewer cuBLAS calls); Int8GemmWorkspaceBytes gives the usual size.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// ceil(k / group_size), at least 1 and without overflow for any group size (one scale per row
// from group_size >= k on; a group size < 1, which Int8Gemm refuses, also gives 1).
inline int64_t Int8Groups(int64_t k, int64_t group_size) {
  if (group_size < 1 || k <= group_size) return 1;
  return (k - 1) / group_size + 1;
}

// Workspace for W [n, k] dequantized to x_dtype a tile at a time: the whole matrix if it fits
// kInt8TileBytes, else as many rows as fit it (at least 64).
size_t Int8GemmWorkspaceBytes(int64_t n, int64_t k, DType x_dtype);

// Enqueues the product on `stream`, which must be the stream `blas` is bound to (the larger-m
// path runs cuBLAS there after its dequantization kernel). Errors: InvalidArgument for bad
// arguments, Internal for a failed launch or cuBLAS call, naming the path and the shape.
absl::Status Int8Gemm(const Int8GemmArgs& a, const CublasGemm& blas, cudaStream_t stream);

namespace detail {  // the kernels' launchers (int8_gemm.cu), used by Int8Gemm (int8_gemm.cc)

// The GEMV path, 1 <= m <= kInt8GemvMaxRows, bias and accumulate included.
cudaError_t Int8Gemv(const Int8GemmArgs& a, cudaStream_t stream);

// out[j, l] = x_dtype(q[j, l] * scales[j * groups + l / group_size]) for j < rows, l < k; out
// rows are k apart. groups must be Int8Groups(k, group_size).
struct Int8DequantArgs {
  const int8_t* q = nullptr;      // [rows, k]
  const float* scales = nullptr;  // [rows, groups]
  int64_t groups = 0;
  int64_t group_size = 0;
  int64_t rows = 0;
  int64_t k = 0;
  void* out = nullptr;  // [rows, k] in out_dtype
  DType out_dtype = DType::kBF16;
};
cudaError_t Int8Dequantize(const Int8DequantArgs& a, cudaStream_t stream);

}  // namespace detail

}  // namespace mamba::kernels::cuda
