// Causal depthwise conv1d + bias + SiLU over packed chunks, continuing from and updating each
// chunk's conv state (the Mamba mixer's conv1d; a decode step is a chunk of length 1).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/packed_chunks.h"

namespace mamba::kernels::cpu {

inline constexpr int kMaxConvWidth = 8;

template <typename T>
struct CausalConvArgsT {
  const T* x = nullptr;  // [tokens, dim], rows x_stride apart
  int64_t x_stride = 0;
  const T* weight = nullptr;  // [width, dim]: weight[k*dim + d] = HF conv1d.weight[d, 0, k];
                              // k = width-1 multiplies the current token
  const T* bias = nullptr;    // [dim] or nullptr
  T* state = nullptr;         // [num_slots, width-1, dim]: the slot's last width-1 inputs, oldest
                              // first (zeros for a fresh sequence)
  T* out = nullptr;           // [tokens, dim] = silu(conv(x) + bias), rows out_stride apart
  int64_t out_stride = 0;
  int64_t dim = 0;
  int width = 4;  // 1..kMaxConvWidth
  SeqChunks chunks;
};
using CausalConvArgs = CausalConvArgsT<float>;

// Fast fp32 version: vectorized over channels, (chunk, channel block) pairs over threads.
void CausalConv(const CausalConvArgs& a);

// Plain reference, meant to run in float64.
template <typename T>
void CausalConvReference(const CausalConvArgsT<T>& a) {
  const int hist = a.width - 1;
  for (const SeqChunk& c : a.chunks) {
    T* state = a.state + static_cast<int64_t>(c.slot) * hist * a.dim;
    for (int64_t d = 0; d < a.dim; ++d) {
      // Input at position j of the chunk; negative j reaches into the state.
      auto input = [&](int64_t j) {
        return j >= 0 ? a.x[(c.begin + j) * a.x_stride + d] : state[(hist + j) * a.dim + d];
      };
      for (int64_t t = 0; t < c.length; ++t) {
        T acc = a.bias ? a.bias[d] : T(0);
        for (int k = 0; k < a.width; ++k) acc += a.weight[k * a.dim + d] * input(t + k - hist);
        a.out[(c.begin + t) * a.out_stride + d] = acc / (T(1) + std::exp(-acc));
      }
      T tail[kMaxConvWidth];
      for (int k = 0; k < hist; ++k) tail[k] = input(c.length - hist + k);
      for (int k = 0; k < hist; ++k) state[k * a.dim + d] = tail[k];
    }
  }
}

}  // namespace mamba::kernels::cpu
