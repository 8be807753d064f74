// y = x W^T through cuBLAS, with W stored [n, k] row-major like torch.nn.Linear.weight: bf16 or
// fp16 operands with fp32 accumulation and an fp32 result, or fp32 throughout (no TF32).
// CPU twin: kernels/cpu/gemm.h (GemmReference).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

struct cublasContext;

namespace mamba::kernels::cuda {

struct GemmArgs {
  const void* x = nullptr;  // [m, k] in dtype, rows ldx apart (device)
  int64_t ldx = 0;
  const void* w = nullptr;  // [n, k] row-major in dtype (device)
  DType dtype = DType::kF32;
  int64_t n = 0;
  int64_t k = 0;
  float* y = nullptr;  // [m, n] fp32, rows ldy apart (device)
  int64_t ldy = 0;
  int64_t m = 0;
  bool accumulate = false;  // y += x W^T instead of y = x W^T
};

// One cuBLAS handle bound to a stream, with its own workspace so that calls can be captured in
// CUDA graphs (no allocation inside cuBLAS). Not thread-safe; use one per stream.
class CublasGemm {
 public:
  static absl::StatusOr<std::unique_ptr<CublasGemm>> Create(cudaStream_t stream,
                                                            size_t workspace_bytes = 32u << 20);
  ~CublasGemm();
  CublasGemm(const CublasGemm&) = delete;
  CublasGemm& operator=(const CublasGemm&) = delete;

  // Enqueues the product on the stream; errors name cublasGemmEx and the shape.
  absl::Status Run(const GemmArgs& a) const;

 private:
  CublasGemm() = default;
  cublasContext* handle_ = nullptr;
  void* workspace_ = nullptr;
};

}  // namespace mamba::kernels::cuda
