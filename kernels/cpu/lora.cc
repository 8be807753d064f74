#include "kernels/cpu/lora.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

// Rows are taken R at a time so that each A and Bt block loaded serves R rows; every row still
// runs the same operations in the same order as alone (R = 1), so its bits never depend on its
// neighbours. kRows x kRanks vector accumulators in the shrink.
constexpr int kRows = 4;
constexpr int kRanks = 4;

// t[i][j] = x[rows[i]] . a[j] for R rows and ranks [j0, j0 + J).
template <int R, int J>
MAMBA_INLINE void ShrinkTile(const LoraRowsArgs& a, const int32_t* rows, int64_t j0, float* t) {
  const int64_t full = a.in / kLanes * kLanes;
  const float* x[R];
  for (int i = 0; i < R; ++i) x[i] = a.x + int64_t{rows[i]} * a.ldx;
  VecF acc[R][J];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < J; ++j) acc[i][j] = Splat(0.0f);
  }
  for (int64_t k = 0; k < full; k += kLanes) {
    VecF w[J];
    for (int j = 0; j < J; ++j) w[j] = Load(a.a + (j0 + j) * a.in + k);
    for (int i = 0; i < R; ++i) {
      const VecF v = Load(x[i] + k);
      for (int j = 0; j < J; ++j) acc[i][j] += v * w[j];
    }
  }
  if (full < a.in) {
    const int n = static_cast<int>(a.in - full);
    for (int i = 0; i < R; ++i) {
      const VecF v = LoadN(x[i] + full, n);
      for (int j = 0; j < J; ++j) acc[i][j] += v * LoadN(a.a + (j0 + j) * a.in + full, n);
    }
  }
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < J; ++j) t[i * a.rank + j0 + j] = HorizontalSum(acc[i][j]);
  }
}

template <int R>
MAMBA_INLINE void Shrink(const LoraRowsArgs& a, const int32_t* rows, float* t) {
  int64_t j = 0;
  for (; j + kRanks <= a.rank; j += kRanks) ShrinkTile<R, kRanks>(a, rows, j, t);
  for (; j < a.rank; ++j) ShrinkTile<R, 1>(a, rows, j, t);
}

// y[rows[i]][0, out) += sum_j t[i][j] * bt[j, :], j in order, 16 outputs at a time.
template <int R>
MAMBA_INLINE void Expand(const float* t, const float* bt, int64_t rank, int64_t out,
                         float* const* y) {
  int64_t o = 0;
  for (; o + kLanes <= out; o += kLanes) {
    VecF acc[R];
    for (int i = 0; i < R; ++i) acc[i] = Load(y[i] + o);
    for (int64_t j = 0; j < rank; ++j) {
      const VecF b = Load(bt + j * out + o);
      for (int i = 0; i < R; ++i) acc[i] += Splat(t[i * rank + j]) * b;
    }
    for (int i = 0; i < R; ++i) Store(y[i] + o, acc[i]);
  }
  if (o < out) {
    const int n = static_cast<int>(out - o);
    VecF acc[R];
    for (int i = 0; i < R; ++i) acc[i] = LoadN(y[i] + o, n);
    for (int64_t j = 0; j < rank; ++j) {
      const VecF b = LoadN(bt + j * out + o, n);
      for (int i = 0; i < R; ++i) acc[i] += Splat(t[i * rank + j]) * b;
    }
    for (int i = 0; i < R; ++i) StoreN(y[i] + o, acc[i], n);
  }
}

template <int R>
MAMBA_INLINE void RowsTile(const LoraRowsArgs& a, const int32_t* rows, float* t) {
  Shrink<R>(a, rows, t);
  float* y[R];
  for (int i = 0; i < R; ++i) y[i] = a.y + int64_t{rows[i]} * a.ldy;
  Expand<R>(t, a.bt, a.rank, a.out, y);
}

MAMBA_CPU_CLONES void LoraRows(const LoraRowsArgs& a, int64_t begin, int64_t end) {
  std::vector<float> t(static_cast<size_t>(kRows * a.rank));
  const int32_t* rows = a.rows.data();
  int64_t i = begin;
  for (; i + kRows <= end; i += kRows) RowsTile<kRows>(a, rows + i, t.data());
  for (; i < end; ++i) RowsTile<1>(a, rows + i, t.data());
}

MAMBA_CPU_CLONES void EmbeddingRows(const LoraEmbeddingArgs& a, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const int64_t r = a.rows[static_cast<size_t>(i)];
    float* y = a.y + r * a.ldy;
    Expand<1>(a.at + int64_t{a.tokens[r]} * a.rank, a.bt, a.rank, a.out, &y);
  }
}

// Rows are worth spreading over threads only when there is enough work in them; each thread
// gets whole tiles.
template <typename F>
void ForRows(int64_t rows, int64_t work_per_row, F&& f) {
  if (rows <= 1 || rows * work_per_row < (int64_t{1} << 16)) {
    f(0, rows);
    return;
  }
  const int64_t tiles = (rows + kRows - 1) / kRows;
  ParallelFor(tiles, [&](int64_t b, int64_t e) { f(b * kRows, std::min(rows, e * kRows)); });
}

}  // namespace

void LoraAddRows(const LoraRowsArgs& a) { LoraAddRows(std::span<const LoraRowsArgs>(&a, 1)); }

void LoraAddRows(std::span<const LoraRowsArgs> updates) {
  // Tiles of kRows rows, numbered across the updates; threads take contiguous runs of them.
  std::vector<int64_t> first_tile(updates.size() + 1, 0);
  int64_t work = 0;
  for (size_t u = 0; u < updates.size(); ++u) {
    const auto n = static_cast<int64_t>(updates[u].rows.size());
    first_tile[u + 1] = first_tile[u] + (n + kRows - 1) / kRows;
    work += n * updates[u].rank * (updates[u].in + updates[u].out);
  }
  auto run = [&](int64_t begin, int64_t end) {
    for (size_t u = 0; u < updates.size(); ++u) {
      const int64_t b = std::max(begin, first_tile[u]), e = std::min(end, first_tile[u + 1]);
      if (b >= e) continue;
      const auto n = static_cast<int64_t>(updates[u].rows.size());
      LoraRows(updates[u], (b - first_tile[u]) * kRows, std::min(n, (e - first_tile[u]) * kRows));
    }
  };
  const int64_t tiles = first_tile.back();
  if (tiles <= 1 || work < (int64_t{1} << 16)) {
    run(0, tiles);
    return;
  }
  ParallelFor(tiles, run);
}

void LoraAddEmbeddingRows(const LoraEmbeddingArgs& a) {
  const auto n = static_cast<int64_t>(a.rows.size());
  ForRows(n, a.rank * a.out, [&](int64_t b, int64_t e) { EmbeddingRows(a, b, e); });
}

}  // namespace mamba::kernels::cpu
