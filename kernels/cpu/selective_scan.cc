#include "kernels/cpu/selective_scan.h"

#include <algorithm>

#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

// One chunk, channels [d0, d0 + n): the block's state (d_state vectors of 16 channels) stays in
// L1 for the whole chunk; each token costs d_state vector exps and two FMAs per state.
MAMBA_CPU_CLONES void ScanBlock(const SelectiveScanArgs& a, const SeqChunk& ch, int64_t d0, int n) {
  const int64_t ns = a.d_state;
  float* state = a.state + static_cast<int64_t>(ch.slot) * ns * a.dim + d0;
  VecF h[kMaxStateSize];
  // A decode step touches one line of each of the 2 * d_state rows (state, A) per block: too
  // short a run for the hardware prefetcher, so fetch the block two ahead (batch-1 scan -25%).
  constexpr int64_t kAhead = 2 * kLanes;
  if (d0 + kAhead < a.dim) {
    for (int64_t s = 0; s < ns; ++s) {
      __builtin_prefetch(state + s * a.dim + kAhead, 1, 3);
      __builtin_prefetch(a.a + s * a.dim + d0 + kAhead, 0, 3);
    }
  }
  for (int64_t s = 0; s < ns; ++s) h[s] = LoadN(state + s * a.dim, n);
  const VecF dt_bias = LoadN(a.dt_bias + d0, n);
  const VecF d_skip = LoadN(a.d_skip + d0, n);
  for (int64_t t = ch.begin; t < ch.begin + ch.length; ++t) {
    const VecF dt = Softplus(LoadN(a.dt + t * a.dt_stride + d0, n) + dt_bias);
    const VecF x = LoadN(a.x + t * a.x_stride + d0, n);
    const VecF dtx = dt * x;
    const VecF dt2 = dt * 1.44269504088896341f;  // exp(dt*A) = 2^(dt*log2(e)*A)
    const float* b = a.b + t * a.bc_stride;
    const float* c = a.c + t * a.bc_stride;
    // Four partial sums of C.h: one chain of d_state dependent adds would bound the loop by
    // FMA latency rather than throughput.
    VecF y[4] = {Splat(0.0f), Splat(0.0f), Splat(0.0f), Splat(0.0f)};
    for (int64_t s = 0; s < ns; ++s) {
      const VecF decay = Exp2(dt2 * LoadN(a.a + s * a.dim + d0, n));
      h[s] = decay * h[s] + dtx * b[s];
      y[s & 3] += h[s] * c[s];
    }
    const VecF z = LoadN(a.z + t * a.z_stride + d0, n);
    StoreN(a.out + t * a.out_stride + d0, ((y[0] + y[1]) + (y[2] + y[3]) + d_skip * x) * Silu(z),
           n);
  }
  for (int64_t s = 0; s < ns; ++s) StoreN(state + s * a.dim, h[s], n);
}

}  // namespace

void SelectiveScan(const SelectiveScanArgs& a) {
  const int64_t blocks = (a.dim + kLanes - 1) / kLanes;
  int64_t tokens = 0;
  for (const SeqChunk& c : a.chunks) tokens += c.length;
  auto run_item = [&](const SeqChunk& c, int64_t block) {
    const int64_t d0 = block * kLanes;
    ScanBlock(a, c, d0, static_cast<int>(std::min<int64_t>(kLanes, a.dim - d0)));
  };
  if (tokens * a.dim * a.d_state < 16384) {
    for (const SeqChunk& c : a.chunks) {
      for (int64_t b = 0; b < blocks; ++b) run_item(c, b);
    }
  } else {
    ParallelForChunkBlocks(a.chunks, blocks, run_item);
  }
}

}  // namespace mamba::kernels::cpu
