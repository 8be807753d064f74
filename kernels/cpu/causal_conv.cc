#include "kernels/cpu/causal_conv.h"

#include <algorithm>

#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

// One chunk, channels [d0, d0 + n): the window of the last width-1 inputs lives in registers.
MAMBA_CPU_CLONES void ConvBlock(const CausalConvArgs& a, const SeqChunk& c, int64_t d0, int n) {
  const int hist = a.width - 1;
  float* state = a.state + static_cast<int64_t>(c.slot) * hist * a.dim + d0;
  VecF w[kMaxConvWidth];
  VecF win[kMaxConvWidth];
  for (int k = 0; k < a.width; ++k) w[k] = LoadN(a.weight + k * a.dim + d0, n);
  for (int k = 0; k < hist; ++k) win[k] = LoadN(state + k * a.dim, n);
  const VecF bias = a.bias ? LoadN(a.bias + d0, n) : Splat(0.0f);
  const float* x = a.x + c.begin * a.x_stride + d0;
  float* out = a.out + c.begin * a.out_stride + d0;
  for (int64_t t = 0; t < c.length; ++t) {
    const VecF xv = LoadN(x + t * a.x_stride, n);
    VecF acc = bias;
    for (int k = 0; k < hist; ++k) acc += w[k] * win[k];
    acc += w[hist] * xv;
    StoreN(out + t * a.out_stride, Silu(acc), n);
    for (int k = 0; k + 1 < hist; ++k) win[k] = win[k + 1];
    if (hist > 0) win[hist - 1] = xv;
  }
  for (int k = 0; k < hist; ++k) StoreN(state + k * a.dim, win[k], n);
}

}  // namespace

void CausalConv(const CausalConvArgs& a) {
  const int64_t blocks = (a.dim + kLanes - 1) / kLanes;
  int64_t tokens = 0;
  for (const SeqChunk& c : a.chunks) tokens += c.length;
  auto run_item = [&](const SeqChunk& c, int64_t block) {
    const int64_t d0 = block * kLanes;
    ConvBlock(a, c, d0, static_cast<int>(std::min<int64_t>(kLanes, a.dim - d0)));
  };
  if (tokens * a.dim < 32768) {
    for (const SeqChunk& c : a.chunks) {
      for (int64_t b = 0; b < blocks; ++b) run_item(c, b);
    }
  } else {
    ParallelForChunkBlocks(a.chunks, blocks, run_item);
  }
}

}  // namespace mamba::kernels::cpu
