// RMSNorm over rows (HF MambaRMSNorm): out = weight * (x * rsqrt(mean(x^2) + eps)).
#pragma once

#include <cmath>
#include <cstdint>

namespace mamba::kernels::cpu {

template <typename T>
struct RmsNormArgsT {
  const T* x = nullptr;  // [rows, dim], rows x_stride apart
  int64_t x_stride = 0;
  const T* weight = nullptr;  // [dim]
  T* out = nullptr;           // [rows, dim], rows out_stride apart; may alias x
  int64_t out_stride = 0;
  int64_t rows = 0;
  int64_t dim = 0;
  double eps = 1e-5;
};
using RmsNormArgs = RmsNormArgsT<float>;

// Fast fp32 version: vectorized, rows spread over threads.
void RmsNorm(const RmsNormArgs& a);

// Plain reference, meant to run in float64.
template <typename T>
void RmsNormReference(const RmsNormArgsT<T>& a) {
  for (int64_t r = 0; r < a.rows; ++r) {
    const T* x = a.x + r * a.x_stride;
    T* out = a.out + r * a.out_stride;
    T sum = 0;
    for (int64_t i = 0; i < a.dim; ++i) sum += x[i] * x[i];
    const T inv = T(1) / std::sqrt(sum / T(a.dim) + T(a.eps));
    for (int64_t i = 0; i < a.dim; ++i) out[i] = a.weight[i] * (x[i] * inv);
  }
}

}  // namespace mamba::kernels::cpu
