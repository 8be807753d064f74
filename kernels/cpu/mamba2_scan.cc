#include "kernels/cpu/mamba2_scan.h"

#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

// Channels [p0, p0 + NB * 16) of head h over one chunk (the last block may be partial: `tail`
// lanes). A head's state is d_state x head_dim floats (32 KiB for 128 x 64), too large for
// registers, so each token streams the block's state rows through L1 once: per state element
// one load, one store and two FMAs; x, dt * x and the NB partial outputs stay in registers.
template <int NB>
MAMBA_CPU_CLONES void ScanHeadBlocks(const Mamba2ScanArgs& a, const SeqChunk& ch, int64_t h,
                                     int64_t p0, int tail) {
  const int64_t P = a.head_dim, N = a.d_state, g = h / (a.heads / a.groups);
  float* state = a.state + (static_cast<int64_t>(ch.slot) * a.heads + h) * N * P + p0;
  int width[NB];
  for (int i = 0; i < NB; ++i) width[i] = i == NB - 1 ? tail : kLanes;
  const float dt_bias = a.dt_bias[h], a_h = a.a[h], d_skip = a.d_skip[h];
  const auto dt_min = static_cast<float>(a.dt_min), dt_max = static_cast<float>(a.dt_max);
  const int64_t col = h * P + p0;
  for (int64_t t = ch.begin; t < ch.begin + ch.length; ++t) {
    const float raw = a.dt[t * a.dt_stride + h] + dt_bias;
    float dt = raw > 20.0f ? raw : std::log1p(std::exp(raw));  // torch's softplus threshold
    dt = std::max(dt, dt_min);
    if (dt_max > 0.0f) dt = std::min(dt, dt_max);
    const VecF decay = Splat(std::exp(dt * a_h));
    VecF x[NB], dtx[NB], y[NB];
    for (int i = 0; i < NB; ++i) {
      x[i] = LoadN(a.x + t * a.x_stride + col + i * kLanes, width[i]);
      dtx[i] = x[i] * dt;
      y[i] = Splat(0.0f);
    }
    const float* b = a.b + t * a.bc_stride + g * N;
    const float* c = a.c + t * a.bc_stride + g * N;
    for (int64_t n = 0; n < N; ++n) {
      float* row = state + n * P;
      for (int i = 0; i < NB; ++i) {
        const VecF s = decay * LoadN(row + i * kLanes, width[i]) + dtx[i] * b[n];
        StoreN(row + i * kLanes, s, width[i]);
        y[i] += s * c[n];
      }
    }
    for (int i = 0; i < NB; ++i) {
      const VecF z = LoadN(a.z + t * a.z_stride + col + i * kLanes, width[i]);
      StoreN(a.out + t * a.out_stride + col + i * kLanes, (y[i] + x[i] * d_skip) * Silu(z),
             width[i]);
    }
  }
}

void ScanHead(const Mamba2ScanArgs& a, const SeqChunk& ch, int64_t h) {
  constexpr int64_t kGroup = 4 * kLanes;  // 4 blocks: 12 live vectors, no spills
  for (int64_t p0 = 0; p0 < a.head_dim; p0 += kGroup) {
    const int64_t left = std::min(kGroup, a.head_dim - p0);
    const int blocks = static_cast<int>((left + kLanes - 1) / kLanes);
    const int tail = static_cast<int>(left - (blocks - 1) * kLanes);
    switch (blocks) {
      case 1:
        ScanHeadBlocks<1>(a, ch, h, p0, tail);
        break;
      case 2:
        ScanHeadBlocks<2>(a, ch, h, p0, tail);
        break;
      case 3:
        ScanHeadBlocks<3>(a, ch, h, p0, tail);
        break;
      default:
        ScanHeadBlocks<4>(a, ch, h, p0, tail);
        break;
    }
  }
}

}  // namespace

void Mamba2Scan(const Mamba2ScanArgs& a) {
  int64_t tokens = 0;
  for (const SeqChunk& c : a.chunks) tokens += c.length;
  if (tokens * a.heads * a.head_dim * a.d_state < 16384) {
    for (const SeqChunk& c : a.chunks) {
      for (int64_t h = 0; h < a.heads; ++h) ScanHead(a, c, h);
    }
  } else {
    ParallelForChunkBlocks(a.chunks, a.heads,
                           [&](const SeqChunk& c, int64_t h) { ScanHead(a, c, h); });
  }
}

}  // namespace mamba::kernels::cpu
