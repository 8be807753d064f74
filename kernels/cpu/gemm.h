// y = x W^T (+ bias) with W stored [n, k] row-major like torch.nn.Linear.weight; oneDNN matmul
// with fp32 accumulation. Rows of y are meant to be bitwise independent of m (see gemm.cc),
// which oneDNN does not promise for every shape; the packed kernel (packed_gemm.h) does.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace mamba::kernels::cpu {

struct GemmWeight {
  DType dtype = DType::kF32;
  const void* data = nullptr;  // [n, k] row-major
  int64_t n = 0;
  int64_t k = 0;
};

struct GemmArgs {
  const float* x = nullptr;  // [m, k], rows ldx apart
  int64_t ldx = 0;
  GemmWeight w;
  const float* bias = nullptr;  // [n] or nullptr
  float* y = nullptr;           // [m, n], rows ldy apart
  int64_t ldy = 0;
  int64_t m = 0;
  bool accumulate = false;  // y += x W^T (+ bias) instead of y = ...
};

// Runs the product; errors (unsupported dtype, bad shapes) come back as Status.
absl::Status Gemm(const GemmArgs& a);

// Whether this CPU multiplies weights of `dtype` with a fast (non-reference) oneDNN kernel,
// and that kernel's name.
bool GemmHasFastPath(DType dtype, std::string* impl = nullptr);

// Plain reference, meant to run in float64; w is [n, k] in T.
template <typename T>
void GemmReference(const T* x, int64_t ldx, const T* w, const T* bias, T* y, int64_t ldy, int64_t m,
                   int64_t n, int64_t k, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      T acc = bias ? bias[j] : T(0);
      for (int64_t l = 0; l < k; ++l) acc += x[i * ldx + l] * w[j * k + l];
      y[i * ldy + j] = accumulate ? y[i * ldy + j] + acc : acc;
    }
  }
}

}  // namespace mamba::kernels::cpu
