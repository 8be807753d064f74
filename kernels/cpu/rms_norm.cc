#include "kernels/cpu/rms_norm.h"

#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

MAMBA_CPU_CLONES void RmsNormRows(const RmsNormArgs& a, int64_t begin, int64_t end) {
  const int64_t full = a.dim / kLanes * kLanes;
  for (int64_t r = begin; r < end; ++r) {
    const float* x = a.x + r * a.x_stride;
    float* out = a.out + r * a.out_stride;
    VecF acc = Splat(0.0f);
    for (int64_t i = 0; i < full; i += kLanes) {
      const VecF v = Load(x + i);
      acc += v * v;
    }
    float sum = HorizontalSum(acc);
    for (int64_t i = full; i < a.dim; ++i) sum += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(a.dim) + static_cast<float>(a.eps));
    for (int64_t i = 0; i < full; i += kLanes) {
      Store(out + i, Load(a.weight + i) * (Load(x + i) * inv));
    }
    for (int64_t i = full; i < a.dim; ++i) out[i] = a.weight[i] * (x[i] * inv);
  }
}

}  // namespace

void RmsNorm(const RmsNormArgs& a) {
  // Small batches are not worth waking threads for.
  if (a.rows * a.dim < 16384) {
    RmsNormRows(a, 0, a.rows);
    return;
  }
  ParallelFor(a.rows, [&](int64_t b, int64_t e) { RmsNormRows(a, b, e); });
}

}  // namespace mamba::kernels::cpu
