// Mamba-2's multi-head SSM over packed chunks (HF Mamba2Mixer.torch_forward's recurrence, the
// reference implementations' selective_state_update per token), each chunk starting from its
// slot's state and leaving its final state there. Per head h (group g = h / (heads / groups)):
//   dt = clamp(softplus(dt_raw[h] + dt_bias[h]), dt_min, dt_max); dA = exp(dt * A[h])
//   S[n, p] = dA * S[n, p] + dt * B[g, n] * x[h, p];  y[h, p] = sum_n C[g, n] S[n, p]
//   out[h, p] = (y[h, p] + D[h] * x[h, p]) * silu(z[h, p])
// (the gated RMS norm that follows is a separate RmsNorm over each group's channels).
// Sequential in time: every token costs the same arithmetic whatever the chunking, so a prompt
// in any chunks equals token-by-token decoding bitwise (docs/PERF.md has why not SSD's matmuls).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/packed_chunks.h"

namespace mamba::kernels::cpu {

template <typename T>
struct Mamba2ScanArgsT {
  const T* x = nullptr;  // [tokens, heads * head_dim] conv output, rows x_stride apart
  int64_t x_stride = 0;
  const T* dt = nullptr;  // [tokens, heads] raw dt (before bias), rows dt_stride apart
  int64_t dt_stride = 0;
  const T* dt_bias = nullptr;  // [heads]
  const T* a = nullptr;        // [heads] = -exp(A_log)
  const T* b = nullptr;        // [tokens, groups * d_state], rows bc_stride apart
  const T* c = nullptr;        // [tokens, groups * d_state], rows bc_stride apart
  int64_t bc_stride = 0;
  const T* d_skip = nullptr;  // [heads]
  const T* z = nullptr;       // [tokens, heads * head_dim] gate, rows z_stride apart
  int64_t z_stride = 0;
  T* state = nullptr;  // [num_slots, heads, d_state, head_dim]
  T* out = nullptr;    // [tokens, heads * head_dim], rows out_stride apart
  int64_t out_stride = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  int64_t d_state = 0;
  int64_t groups = 1;  // divides heads
  double dt_min = 0.0;
  double dt_max = 0.0;  // 0: no upper limit
  SeqChunks chunks;
};
using Mamba2ScanArgs = Mamba2ScanArgsT<float>;

// Fast fp32 version: (chunk, head) pairs over threads, vectorized over head_dim.
void Mamba2Scan(const Mamba2ScanArgs& a);

// Plain reference, meant to run in float64.
template <typename T>
void Mamba2ScanReference(const Mamba2ScanArgsT<T>& a) {
  const int64_t P = a.head_dim, N = a.d_state, per_group = a.heads / a.groups;
  for (const SeqChunk& ch : a.chunks) {
    for (int64_t h = 0; h < a.heads; ++h) {
      T* s = a.state + (static_cast<int64_t>(ch.slot) * a.heads + h) * N * P;
      const int64_t g = h / per_group;
      for (int64_t t = ch.begin; t < ch.begin + ch.length; ++t) {
        const T raw = a.dt[t * a.dt_stride + h] + a.dt_bias[h];
        T dt = raw > T(20) ? raw : std::log1p(std::exp(raw));
        dt = std::max(dt, T(a.dt_min));
        if (a.dt_max > 0) dt = std::min(dt, T(a.dt_max));
        const T decay = std::exp(dt * a.a[h]);
        const T* b = a.b + t * a.bc_stride + g * N;
        const T* c = a.c + t * a.bc_stride + g * N;
        for (int64_t p = 0; p < P; ++p) {
          const T x = a.x[t * a.x_stride + h * P + p];
          T y = 0;
          for (int64_t n = 0; n < N; ++n) {
            T& sn = s[n * P + p];
            sn = decay * sn + dt * b[n] * x;
            y += c[n] * sn;
          }
          const T z = a.z[t * a.z_stride + h * P + p];
          a.out[t * a.out_stride + h * P + p] = (y + a.d_skip[h] * x) * (z / (T(1) + std::exp(-z)));
        }
      }
    }
  }
}

}  // namespace mamba::kernels::cpu
