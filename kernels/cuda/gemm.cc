#include "kernels/cuda/gemm.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace mamba::kernels::cuda {
namespace {

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kI8:
      return CUDA_R_8I;
  }
  return CUDA_R_32F;
}

bool FitsInt(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

absl::Status BlasError(cublasStatus_t s, const std::string& what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ")"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CublasGemm>> CublasGemm::Create(cudaStream_t stream,
                                                               size_t workspace_bytes) {
  std::unique_ptr<CublasGemm> g(new CublasGemm());
  if (cublasStatus_t s = cublasCreate(&g->handle_); s != CUBLAS_STATUS_SUCCESS) {
    g->handle_ = nullptr;
    return BlasError(s, "cublasCreate");
  }
  if (cublasStatus_t s = cublasSetStream(g->handle_, stream); s != CUBLAS_STATUS_SUCCESS) {
    return BlasError(s, "cublasSetStream");
  }
  // Plain fp32 stays fp32 (no TF32): fp32 mode is the accuracy reference.
  if (cublasStatus_t s = cublasSetMathMode(g->handle_, CUBLAS_DEFAULT_MATH);
      s != CUBLAS_STATUS_SUCCESS) {
    return BlasError(s, "cublasSetMathMode");
  }
  if (workspace_bytes > 0) {
    if (cudaError_t e = cudaMalloc(&g->workspace_, workspace_bytes); e != cudaSuccess) {
      g->workspace_ = nullptr;
      return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc of the cuBLAS workspace (",
                                                       workspace_bytes,
                                                       " bytes): ", cudaGetErrorString(e)));
    }
    if (cublasStatus_t s = cublasSetWorkspace(g->handle_, g->workspace_, workspace_bytes);
        s != CUBLAS_STATUS_SUCCESS) {
      return BlasError(s, "cublasSetWorkspace");
    }
  }
  return g;
}

CublasGemm::~CublasGemm() {
  if (handle_) cublasDestroy(handle_);
  if (workspace_) cudaFree(workspace_);
}

absl::Status CublasGemm::Run(const GemmArgs& a) const {
  // Built only on error: Run is on the decode path (hundreds of calls per step).
  auto shape = [&] {
    return absl::StrCat("cublasGemmEx [", a.m, " x ", a.k, "] x [", a.n, " x ", a.k, "]^T ",
                        Name(a.dtype));
  };
  if (a.m == 0 || a.n == 0) return absl::OkStatus();
  if (!FitsInt(a.m) || !FitsInt(a.n) || !FitsInt(a.k) || !FitsInt(a.ldx) || !FitsInt(a.ldy) ||
      a.k < 1 || a.ldx < a.k || a.ldy < a.n || !a.x || !a.w || !a.y) {
    return absl::InvalidArgumentError(
        absl::StrCat(shape(), ": bad arguments (ldx ", a.ldx, ", ldy ", a.ldy, ")"));
  }
  // Row-major y[m, n] = x[m, k] W^T is column-major y^T[n, m] = W[n, k] x^T: A = W seen as
  // column-major [k, n] and transposed, B = x^T as column-major [k, m].
  const float alpha = 1.0f, beta = a.accumulate ? 1.0f : 0.0f;
  const cudaDataType_t t = CudaType(a.dtype);
  const cublasStatus_t s = cublasGemmEx(
      handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(a.n), static_cast<int>(a.m),
      static_cast<int>(a.k), &alpha, a.w, t, static_cast<int>(a.k), a.x, t, static_cast<int>(a.ldx),
      &beta, a.y, CUDA_R_32F, static_cast<int>(a.ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) return BlasError(s, shape());
  return absl::OkStatus();
}

}  // namespace mamba::kernels::cuda
