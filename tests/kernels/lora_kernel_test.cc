// kernels/cpu/lora.h against a float64 reference on random inputs (vector tails, ranks 1 to 64,
// rows in any order), and a row's result bitwise independent of the other rows listed and of the
// thread count.
#include <cstring>
#include <numeric>

#include "gtest/gtest.h"
#include "kernels/cpu/lora.h"
#include "kernels/cpu/threading.h"
#include "tests/kernels/kernel_test_util.h"

namespace mamba::kernels::cpu {
namespace {

using testing::Random;

struct Shape {
  int64_t in, out, rank;
};

// y + (x A^T) Bt in float64, for every row.
std::vector<double> Reference(const std::vector<float>& x, const std::vector<float>& a,
                              const std::vector<float>& bt, const std::vector<float>& y, Shape s,
                              int64_t rows, const std::vector<int32_t>& listed) {
  std::vector<double> out(y.begin(), y.end());
  for (int32_t r : listed) {
    std::vector<double> t(static_cast<size_t>(s.rank), 0.0);
    for (int64_t j = 0; j < s.rank; ++j) {
      for (int64_t k = 0; k < s.in; ++k) t[j] += double{a[j * s.in + k]} * x[r * s.in + k];
    }
    for (int64_t o = 0; o < s.out; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < s.rank; ++j) acc += t[j] * bt[j * s.out + o];
      out[r * s.out + o] += acc;
    }
  }
  (void)rows;
  return out;
}

class LoraKernelTest : public ::testing::TestWithParam<Shape> {};

TEST_P(LoraKernelTest, MatchesFloat64AndRowsAreIndependent) {
  const Shape s = GetParam();
  const int64_t rows = 37;
  const auto x = Random(static_cast<size_t>(rows * s.in), 1);
  const auto a = Random(static_cast<size_t>(s.rank * s.in), 2, -0.3f, 0.3f);
  const auto bt = Random(static_cast<size_t>(s.rank * s.out), 3, -0.2f, 0.2f);
  const auto y0 = Random(static_cast<size_t>(rows * s.out), 4);
  // Every third row, in a shuffled order; the rest must stay untouched.
  std::vector<int32_t> listed;
  for (int32_t r = rows - 1; r >= 0; r -= 3) listed.push_back(r);
  std::vector<float> y = y0;
  LoraAddRows({x.data(), s.in, a.data(), bt.data(), y.data(), s.out, s.in, s.out, s.rank, listed});
  const std::vector<double> want = Reference(x, a, bt, y0, s, rows, listed);
  EXPECT_TRUE(::mamba::testing::AllClose(y, want, 1e-5, 1e-5));
  // Each row alone, on one thread, gives the same bits.
  const int threads = NumThreads();
  SetNumThreads(1);
  for (int32_t r : listed) {
    std::vector<float> alone = y0;
    LoraAddRows({x.data(), s.in, a.data(), bt.data(), alone.data(), s.out, s.in, s.out, s.rank,
                 std::span<const int32_t>(&r, 1)});
    EXPECT_EQ(0, std::memcmp(alone.data() + r * s.out, y.data() + r * s.out,
                             static_cast<size_t>(s.out) * 4))
        << "row " << r;
  }
  SetNumThreads(threads);
}

// Several updates in one call (one per adapter of a step, rows distinct): each row gets its own
// update, bitwise what that update alone gives it on one thread.
TEST_P(LoraKernelTest, SeveralUpdatesInOneCallEqualEachAlone) {
  const Shape s = GetParam();
  const int64_t rows = 41;
  const auto x = Random(static_cast<size_t>(rows * s.in), 11);
  const auto y0 = Random(static_cast<size_t>(rows * s.out), 12);
  std::vector<std::vector<float>> a, bt;
  std::vector<std::vector<int32_t>> listed(3);
  for (int u = 0; u < 3; ++u) {
    a.push_back(Random(static_cast<size_t>(s.rank * s.in), 20 + u, -0.3f, 0.3f));
    bt.push_back(Random(static_cast<size_t>(s.rank * s.out), 30 + u, -0.2f, 0.2f));
  }
  for (int32_t r = 0; r < rows; ++r) {
    if (r % 4 != 3) listed[static_cast<size_t>(r % 4)].push_back(r);  // every 4th row: none
  }
  auto args = [&](size_t u, float* y) {
    return LoraRowsArgs{x.data(), s.in, a[u].data(), bt[u].data(), y,
                        s.out,    s.in, s.out,       s.rank,       listed[u]};
  };
  std::vector<float> together = y0;
  const std::vector<LoraRowsArgs> all = {args(0, together.data()), args(1, together.data()),
                                         args(2, together.data())};
  LoraAddRows(all);
  const int threads = NumThreads();
  SetNumThreads(1);
  std::vector<float> alone = y0;
  for (size_t u = 0; u < 3; ++u) LoraAddRows(args(u, alone.data()));
  SetNumThreads(threads);
  EXPECT_EQ(0, std::memcmp(alone.data(), together.data(), alone.size() * 4));
  for (int32_t r = 3; r < rows; r += 4) {  // rows under no update are untouched
    EXPECT_EQ(0, std::memcmp(y0.data() + r * s.out, together.data() + r * s.out,
                             static_cast<size_t>(s.out) * 4));
  }
}

TEST_P(LoraKernelTest, EmbeddingRowsMatchFloat64) {
  const Shape s = GetParam();  // in = the vocabulary
  const int64_t rows = 11;
  const auto at = Random(static_cast<size_t>(s.in * s.rank), 5);
  const auto bt = Random(static_cast<size_t>(s.rank * s.out), 6);
  const auto y0 = Random(static_cast<size_t>(rows * s.out), 7);
  std::vector<int32_t> tokens(rows), listed = {10, 0, 4, 5};
  for (int64_t r = 0; r < rows; ++r) tokens[r] = static_cast<int32_t>((r * 7919) % s.in);
  std::vector<float> y = y0;
  LoraAddEmbeddingRows(
      {at.data(), bt.data(), tokens.data(), y.data(), s.out, s.out, s.rank, listed});
  std::vector<double> want(y0.begin(), y0.end());
  for (int32_t r : listed) {
    for (int64_t o = 0; o < s.out; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < s.rank; ++j)
        acc += double{at[tokens[r] * s.rank + j]} * bt[j * s.out + o];
      want[r * s.out + o] += acc;
    }
  }
  EXPECT_TRUE(::mamba::testing::AllClose(y, want, 1e-5, 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LoraKernelTest,
                         ::testing::Values(Shape{32, 96, 8}, Shape{768, 3072, 8}, Shape{17, 5, 1},
                                           Shape{1536, 80, 64}, Shape{4, 1536, 16},
                                           Shape{50, 33, 3}));

}  // namespace
}  // namespace mamba::kernels::cpu
