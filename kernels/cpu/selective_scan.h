// Selective scan (Mamba's SSM) over packed chunks, each starting from its slot's state and
// leaving its final state there; dt bias + softplus, D skip and SiLU(z) gating fused. A decode
// step is a chunk of length 1 (the reference implementations' selective_state_update).
//   dt = softplus(dt_raw + dt_bias); h = exp(dt*A) * h + dt*B*x; y = (C.h + D*x) * silu(z)
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/packed_chunks.h"

namespace mamba::kernels::cpu {

inline constexpr int64_t kMaxStateSize = 256;

template <typename T>
struct SelectiveScanArgsT {
  const T* x = nullptr;  // [tokens, dim] conv output, rows x_stride apart
  int64_t x_stride = 0;
  const T* dt = nullptr;  // [tokens, dim] dt_proj output before its bias
  int64_t dt_stride = 0;
  const T* dt_bias = nullptr;  // [dim]
  const T* a = nullptr;        // [d_state, dim] = -exp(A_log), transposed
  const T* b = nullptr;        // [tokens, d_state], rows bc_stride apart
  const T* c = nullptr;        // [tokens, d_state], rows bc_stride apart
  int64_t bc_stride = 0;
  const T* d_skip = nullptr;  // [dim]
  const T* z = nullptr;       // [tokens, dim] gate, rows z_stride apart
  int64_t z_stride = 0;
  T* state = nullptr;  // [num_slots, d_state, dim]
  T* out = nullptr;    // [tokens, dim], rows out_stride apart
  int64_t out_stride = 0;
  int64_t dim = 0;
  int64_t d_state = 0;  // 1..kMaxStateSize
  SeqChunks chunks;
};
using SelectiveScanArgs = SelectiveScanArgsT<float>;

// Fast fp32 version: vectorized over channels, (chunk, channel block) pairs over threads.
void SelectiveScan(const SelectiveScanArgs& a);

template <typename T>
T SoftplusReference(T v) {
  return v > T(20) ? v : std::log1p(std::exp(v));  // torch's threshold
}

// Plain reference, meant to run in float64.
template <typename T>
void SelectiveScanReference(const SelectiveScanArgsT<T>& a) {
  for (const SeqChunk& ch : a.chunks) {
    T* h = a.state + static_cast<int64_t>(ch.slot) * a.d_state * a.dim;
    for (int64_t t = ch.begin; t < ch.begin + ch.length; ++t) {
      const T* b = a.b + t * a.bc_stride;
      const T* c = a.c + t * a.bc_stride;
      for (int64_t d = 0; d < a.dim; ++d) {
        const T dt = SoftplusReference(a.dt[t * a.dt_stride + d] + a.dt_bias[d]);
        const T x = a.x[t * a.x_stride + d];
        T y = 0;
        for (int64_t n = 0; n < a.d_state; ++n) {
          T& hn = h[n * a.dim + d];
          hn = std::exp(dt * a.a[n * a.dim + d]) * hn + dt * b[n] * x;
          y += c[n] * hn;
        }
        const T z = a.z[t * a.z_stride + d];
        a.out[t * a.out_stride + d] = (y + a.d_skip[d] * x) * (z / (T(1) + std::exp(-z)));
      }
    }
  }
}

}  // namespace mamba::kernels::cpu
