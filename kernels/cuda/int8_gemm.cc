#include "kernels/cuda/int8_gemm.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"

namespace mamba::kernels::cuda {

size_t Int8GemmWorkspaceBytes(int64_t n, int64_t k, DType x_dtype) {
  const size_t row = static_cast<size_t>(k) * SizeOf(x_dtype);
  if (n <= 0 || row == 0) return 0;
  const size_t rows = std::max<size_t>(64, kInt8TileBytes / row);
  return std::min(static_cast<size_t>(n), rows) * row;
}

absl::Status Int8Gemm(const Int8GemmArgs& a, const CublasGemm& blas, cudaStream_t stream) {
  // Built only on error: this is on the decode path.
  auto shape = [&] {
    return absl::StrCat("int8 GEMM [", a.m, " x ", a.k, "] x [", a.n, " x ", a.k, "]^T (x ",
                        Name(a.x_dtype), ", ",
                        a.group_size >= a.k ? std::string("a scale per row")
                                            : absl::StrCat("groups of ", a.group_size),
                        ")");
  };
  if (a.m == 0 || a.n == 0) return absl::OkStatus();
  if (a.m < 0 || a.n < 0 || a.k < 1 || a.ldx < a.k || a.ldy < a.n || a.group_size < 1 || !a.x ||
      !a.q || !a.scales || !a.y || a.x_dtype == DType::kI8) {
    return absl::InvalidArgumentError(
        absl::StrCat(shape(), ": bad arguments (ldx ", a.ldx, ", ldy ", a.ldy, ")"));
  }
  if (a.m <= kInt8GemvMaxRows) {
    if (const cudaError_t e = detail::Int8Gemv(a, stream); e != cudaSuccess) {
      return absl::InternalError(absl::StrCat(shape(), ", GEMV kernel: ", cudaGetErrorName(e), ": ",
                                              cudaGetErrorString(e)));
    }
    return absl::OkStatus();
  }
  // Tiles of rows of W dequantized into the workspace, each multiplied by cuBLAS into its
  // columns of y. The stream orders each tile's GEMM before the next tile's dequantization.
  const size_t row_bytes = static_cast<size_t>(a.k) * SizeOf(a.x_dtype);
  const int64_t tile =
      a.workspace ? std::min<int64_t>(a.n, static_cast<int64_t>(a.workspace_bytes / row_bytes)) : 0;
  if (tile < 1) {
    return absl::InvalidArgumentError(absl::StrCat(shape(), ": a workspace of ", a.workspace_bytes,
                                                   " bytes holds no dequantized row (", row_bytes,
                                                   " bytes)"));
  }
  const int64_t groups = Int8Groups(a.k, a.group_size);
  for (int64_t n0 = 0; n0 < a.n; n0 += tile) {
    const int64_t rows = std::min(tile, a.n - n0);
    detail::Int8DequantArgs d;
    d.q = a.q + n0 * a.k;
    d.scales = a.scales + n0 * groups;
    d.groups = groups;
    d.group_size = a.group_size;
    d.rows = rows;
    d.k = a.k;
    d.out = a.workspace;
    d.out_dtype = a.x_dtype;
    if (const cudaError_t e = detail::Int8Dequantize(d, stream); e != cudaSuccess) {
      return absl::InternalError(absl::StrCat(
          shape(), ", dequantization kernel: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
    }
    GemmArgs g;
    g.x = a.x;
    g.ldx = a.ldx;
    g.w = a.workspace;
    g.dtype = a.x_dtype;
    g.n = rows;
    g.k = a.k;
    g.y = a.y + n0;
    g.ldy = a.ldy;
    g.m = a.m;
    g.accumulate = a.accumulate;
    if (absl::Status s = blas.Run(g); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat(shape(), ", rows ", n0, "..", n0 + rows, ": ", s.message()));
    }
  }
  if (a.bias) {
    AddBiasArgs b;
    b.data = a.y;
    b.stride = a.ldy;
    b.bias = a.bias;
    b.rows = a.m;
    b.dim = a.n;
    if (const cudaError_t e = AddBias(b, stream); e != cudaSuccess) {
      return absl::InternalError(absl::StrCat(shape(), ", bias kernel: ", cudaGetErrorName(e), ": ",
                                              cudaGetErrorString(e)));
    }
  }
  return absl::OkStatus();
}

}  // namespace mamba::kernels::cuda
