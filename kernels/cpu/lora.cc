#include "kernels/cpu/lora.h"

#include <vector>

#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

// y[0, out) += sum_j t[j] * bt[j, :], j in order, 16 outputs at a time.
MAMBA_INLINE void Expand(const float* t, const float* bt, int64_t rank, int64_t out, float* y) {
  int64_t o = 0;
  for (; o + kLanes <= out; o += kLanes) {
    VecF acc = Load(y + o);
    for (int64_t j = 0; j < rank; ++j) acc += Splat(t[j]) * Load(bt + j * out + o);
    Store(y + o, acc);
  }
  if (o < out) {
    const int n = static_cast<int>(out - o);
    VecF acc = LoadN(y + o, n);
    for (int64_t j = 0; j < rank; ++j) acc += Splat(t[j]) * LoadN(bt + j * out + o, n);
    StoreN(y + o, acc, n);
  }
}

MAMBA_CPU_CLONES void LoraRows(const LoraRowsArgs& a, int64_t begin, int64_t end) {
  std::vector<float> t(static_cast<size_t>(a.rank));
  const int64_t full = a.in / kLanes * kLanes;
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = a.rows[static_cast<size_t>(i)];
    const float* x = a.x + r * a.ldx;
    for (int64_t j = 0; j < a.rank; ++j) {
      const float* w = a.a + j * a.in;
      VecF acc = Splat(0.0f);
      for (int64_t k = 0; k < full; k += kLanes) acc += Load(x + k) * Load(w + k);
      if (full < a.in) {
        const int n = static_cast<int>(a.in - full);
        acc += LoadN(x + full, n) * LoadN(w + full, n);
      }
      t[j] = HorizontalSum(acc);
    }
    Expand(t.data(), a.bt, a.rank, a.out, a.y + r * a.ldy);
  }
}

MAMBA_CPU_CLONES void EmbeddingRows(const LoraEmbeddingArgs& a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = a.rows[static_cast<size_t>(i)];
    Expand(a.at + int64_t{a.tokens[r]} * a.rank, a.bt, a.rank, a.out, a.y + r * a.ldy);
  }
}

// Rows are worth spreading over threads only when there is enough work in them.
template <typename F>
void ForRows(int64_t rows, int64_t work_per_row, F&& f) {
  if (rows <= 1 || rows * work_per_row < (int64_t{1} << 16)) {
    f(0, rows);
    return;
  }
  ParallelFor(rows, [&](int64_t b, int64_t e) { f(b, e); });
}

}  // namespace

void LoraAddRows(const LoraRowsArgs& a) {
  const auto n = static_cast<int64_t>(a.rows.size());
  ForRows(n, a.rank * (a.in + a.out), [&](int64_t b, int64_t e) { LoraRows(a, b, e); });
}

void LoraAddEmbeddingRows(const LoraEmbeddingArgs& a) {
  const auto n = static_cast<int64_t>(a.rows.size());
  ForRows(n, a.rank * a.out, [&](int64_t b, int64_t e) { EmbeddingRows(a, b, e); });
}

}  // namespace mamba::kernels::cpu
