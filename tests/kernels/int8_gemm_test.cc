// int8 GEMM (kernels/cpu/int8_gemm.h): every path against the reference, the int8 error against
// the fp32 product within its proven bound, bitwise batch independence, and the quantization
// round trip.
#include "kernels/cpu/int8_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/gemm.h"
#include "tests/kernels/kernel_test_util.h"

namespace mamba::kernels::cpu {
namespace {

using ::mamba::kernels::testing::Close;
using ::mamba::kernels::testing::Random;
using ::mamba::kernels::testing::ToDouble;

struct Case {
  Int8Path path;
  int64_t m, n, k, group;
  bool bias, accumulate;
};

std::string Name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  const char* p[] = {"auto", "vnni", "dequant", "scalar", "avx2", "avxvnni"};
  return std::string(p[static_cast<int>(c.path)]) + "_m" + std::to_string(c.m) + "_n" +
         std::to_string(c.n) + "_k" + std::to_string(c.k) + "_g" + std::to_string(c.group) +
         (c.bias ? "_bias" : "") + (c.accumulate ? "_acc" : "");
}

class Int8GemmTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!Int8GemmSupported(GetParam().path)) {
      GTEST_SKIP() << "this CPU lacks what the " << Int8PathName(GetParam().path)
                   << " path needs (kAvx2: AVX2 + FMA; kAvxVnni: + AVX-VNNI; kVnni: AVX-512 VNNI)";
    }
  }
};

// Proven bound of |int8 result - exact fp32-input product| for element (i, j): with
// x = x^ + dx, w = w^ + dw, |dx| <= sx / 2, |dw| <= sw / 2 (round to nearest),
// |x.w - x^.w^| <= sum |x||dw| + |dx||w| + |dx||dw|; plus fp32 rounding of the kernel.
double ErrorBound(const float* x, const std::vector<float>& w, const Int8Weight& q, int64_t j,
                  double sx) {
  double b = 0, mag = 0;
  for (int64_t l = 0; l < q.k; ++l) {
    const double dw = q.Scale(j, l) / 2.0, ax = std::fabs(x[l]);
    const double aw = std::fabs(w[static_cast<size_t>(j * q.k + l)]);
    b += ax * dw + sx / 2 * aw + sx / 2 * dw;
    mag += ax * aw;
  }
  return b + 1e-5 * mag + 1e-6;
}

TEST_P(Int8GemmTest, MatchesReferenceAndStaysWithinTheInt8Bound) {
  const Case& c = GetParam();
  const int64_t ldx = c.k + 3, ldy = c.n + 5;  // strided rows, as the engine uses
  auto x = Random(static_cast<size_t>(c.m * ldx), 40);
  auto w = Random(static_cast<size_t>(c.n * c.k), 41);
  auto b = Random(static_cast<size_t>(c.n), 42);
  auto y = Random(static_cast<size_t>(c.m * ldy), 43);
  auto q = QuantizeWeight(w.data(), DType::kF32, c.n, c.k, c.group);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<double> want = ToDouble(y), exact = ToDouble(y);
  const bool quantize_x = c.path != Int8Path::kDequantF32;
  Int8GemmReference<double>(x.data(), ldx, *q, c.bias ? b.data() : nullptr, want.data(), ldy, c.m,
                            c.accumulate, quantize_x);
  const auto xd = ToDouble(x), wd = ToDouble(w), bd = ToDouble(b);
  GemmReference<double>(xd.data(), ldx, wd.data(), c.bias ? bd.data() : nullptr, exact.data(), ldy,
                        c.m, c.n, c.k, c.accumulate);
  ASSERT_TRUE(Int8Gemm({x.data(), ldx, &*q, c.bias ? b.data() : nullptr, y.data(), ldy, c.m,
                        c.accumulate, c.path})
                  .ok());
  // Against the reference: only fp32 rounding (sums of up to k products of size <= 1).
  EXPECT_TRUE(Close(y, want, 1e-6 * static_cast<double>(c.k), 1e-5, "vs int8 reference"));
  // Against the exact product of the unquantized inputs: the proven bound, element by element;
  // and the error relative to ||x_i|| ||w_j|| (reported; the bound's scale).
  double worst = 0;
  std::vector<int8_t> xq(static_cast<size_t>(c.k));
  for (int64_t i = 0; i < c.m; ++i) {
    const double sx = quantize_x ? QuantizeActivationRow(x.data() + i * ldx, c.k, xq.data()) : 0;
    double nx = 0;
    for (int64_t l = 0; l < c.k; ++l) nx += double(x[i * ldx + l]) * x[i * ldx + l];
    for (int64_t j = 0; j < c.n; ++j) {
      const size_t at = static_cast<size_t>(i * ldy + j);
      const double err = std::fabs(y[at] - exact[at]);
      ASSERT_LE(err, ErrorBound(x.data() + i * ldx, w, *q, j, sx)) << "row " << i << " col " << j;
      double nw = 0;
      for (int64_t l = 0; l < c.k; ++l) nw += wd[j * c.k + l] * wd[j * c.k + l];
      worst = std::max(worst, err / std::sqrt(nx * nw));
    }
  }
  // Rounding errors of +-scale/2 are ~uniform: relative to ||x|| ||w|| they are ~1/(127 sqrt(k))
  // for inputs of even magnitude (measured worst over these cases: under 2e-3).
  EXPECT_LT(worst, 4.0 / (127.0 * std::sqrt(static_cast<double>(std::min<int64_t>(c.k, 128)))));
  RecordProperty("worst_relative_error", std::to_string(worst));
}

// The engine relies on batch independence: the same row in a batch of 1 or 77 gives the same
// bits. Exact int32 sums and one float recipe make this hold for kVnni/kScalar/kAuto, and the two
// integer paths agree bit for bit; kDequantF32 runs the same one-row kernel for every m.
TEST_P(Int8GemmTest, RowsAreBitwiseIndependentOfM) {
  const Case& c = GetParam();
  auto x = Random(static_cast<size_t>(77 * c.k), 50);
  auto w = Random(static_cast<size_t>(c.n * c.k), 51);
  auto b = Random(static_cast<size_t>(c.n), 52);
  auto q = QuantizeWeight(w.data(), DType::kF32, c.n, c.k, c.group);
  ASSERT_TRUE(q.ok());
  const float* bias = c.bias ? b.data() : nullptr;
  std::vector<float> all(static_cast<size_t>(77 * c.n));
  ASSERT_TRUE(Int8Gemm({x.data(), c.k, &*q, bias, all.data(), c.n, 77, false, c.path}).ok());
  for (int64_t m : {1, 3, 8, 32}) {
    for (int64_t r0 : std::vector<int64_t>{0, 5, 77 - m}) {
      std::vector<float> part(static_cast<size_t>(m * c.n));
      ASSERT_TRUE(
          Int8Gemm({x.data() + r0 * c.k, c.k, &*q, bias, part.data(), c.n, m, false, c.path}).ok());
      EXPECT_EQ(0, std::memcmp(part.data(), all.data() + r0 * c.n, part.size() * 4))
          << "m " << m << " from row " << r0;
    }
  }
  // Every integer path gives the same bits as every other this CPU runs (kScalar always runs).
  if (c.path == Int8Path::kDequantF32) return;
  for (Int8Path other : {Int8Path::kScalar, Int8Path::kVnni, Int8Path::kAvxVnni, Int8Path::kAvx2}) {
    if (other == c.path || !Int8GemmSupported(other)) continue;
    std::vector<float> got(all.size());
    ASSERT_TRUE(Int8Gemm({x.data(), c.k, &*q, bias, got.data(), c.n, 77, false, other}).ok());
    EXPECT_EQ(0, std::memcmp(got.data(), all.data(), all.size() * 4))
        << Int8PathName(other) << " vs " << Int8PathName(c.path);
  }
}

std::vector<Case> Cases() {
  std::vector<Case> out;
  for (Int8Path p : {Int8Path::kVnni, Int8Path::kDequantF32, Int8Path::kScalar, Int8Path::kAuto,
                     Int8Path::kAvx2, Int8Path::kAvxVnni}) {
    for (int64_t m : {1, 3, 32, 77}) {
      out.push_back({p, m, 45, 37, 0, m % 2 == 1, m >= 32});
      out.push_back({p, m, 131, 301, 64, m != 3, m % 2 == 1});
    }
    out.push_back({p, 9, 200, 768, 128, true, true});
    out.push_back({p, 2, 17, 3, 0, true, false});
    out.push_back({p, 100, 33, 700, 0, false, false});  // activations quantized in parallel
  }
  return out;
}
INSTANTIATE_TEST_SUITE_P(Paths, Int8GemmTest, ::testing::ValuesIn(Cases()), Name);

// Every integer path against kScalar, bit for bit, over the tails of every kernel: n not a
// multiple of 16 (the last block's columns), k not a multiple of 4 (the padded quad), groups,
// m = 1..33 (every row tile and its remainder), bias and accumulate. The second weight is all
// +-1 and the activations +-1 too, so every q is +-127: the products a saturating int16 pair sum
// would get wrong (vpmaddubsw on u8 q + 128 reaches 2 * 255 * 127).
TEST(Int8GemmPathsTest, IntegerPathsGiveTheScalarBitsOnEveryTail) {
  struct Shape {
    int64_t n, k, group;
    bool extreme;
  };
  const Shape shapes[] = {{1, 3, 0, false},   {15, 37, 0, false}, {17, 301, 64, false},
                          {45, 130, 4, true}, {33, 768, 0, true}, {131, 64, 32, false}};
  std::vector<Int8Path> paths;
  for (Int8Path p : {Int8Path::kVnni, Int8Path::kAvxVnni, Int8Path::kAvx2, Int8Path::kAuto}) {
    if (Int8GemmSupported(p)) paths.push_back(p);
  }
  if (!Int8GemmSupported(Int8Path::kAvx2)) {
    GTEST_SKIP() << "this CPU lacks AVX2 + FMA: only the scalar path runs";
  }
  for (const Shape& sh : shapes) {
    auto x = Random(static_cast<size_t>(33 * sh.k), 70);
    auto w = Random(static_cast<size_t>(sh.n * sh.k), 71);
    if (sh.extreme) {
      for (auto& v : x) v = v < 0 ? -1.0f : 1.0f;
      for (auto& v : w) v = v < 0 ? -1.0f : 1.0f;
    }
    const auto b = Random(static_cast<size_t>(sh.n), 72);
    const auto y0 = Random(static_cast<size_t>(33 * sh.n), 73);
    auto q = QuantizeWeight(w.data(), DType::kF32, sh.n, sh.k, sh.group);
    ASSERT_TRUE(q.ok());
    for (int64_t m = 1; m <= 33; ++m) {
      for (int variant = 0; variant < 2; ++variant) {
        const float* bias = variant == 1 ? b.data() : nullptr;
        const bool acc = variant == 1;
        std::vector<float> want(y0.begin(), y0.begin() + m * sh.n);
        ASSERT_TRUE(
            Int8Gemm({x.data(), sh.k, &*q, bias, want.data(), sh.n, m, acc, Int8Path::kScalar})
                .ok());
        for (Int8Path p : paths) {
          std::vector<float> got(y0.begin(), y0.begin() + m * sh.n);
          ASSERT_TRUE(Int8Gemm({x.data(), sh.k, &*q, bias, got.data(), sh.n, m, acc, p}).ok());
          ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4))
              << Int8PathName(p) << " n " << sh.n << " k " << sh.k << " group " << sh.group << " m "
              << m << (acc ? " bias acc" : "");
        }
        if (sh.extreme && m == 33 && acc) {  // the scalar bits are the right ones
          std::vector<double> ref(y0.begin(), y0.begin() + m * sh.n);
          Int8GemmReference<double>(x.data(), sh.k, *q, bias, ref.data(), sh.n, m, acc, true);
          EXPECT_TRUE(Close(want, ref, 1e-6 * static_cast<double>(sh.k), 1e-5, "extreme"));
        }
      }
    }
  }
}

// kAuto takes the first path this CPU runs in the documented order (int8_gemm.h), and it and
// every explicit path this CPU lacks are refused, never run.
TEST(Int8GemmPathsTest, AutoTakesTheFirstSupportedPathInOrder) {
  Int8Path want = Int8Path::kScalar;
  for (Int8Path p : {Int8Path::kAvx2, Int8Path::kAvxVnni, Int8Path::kVnni}) {
    if (Int8GemmSupported(p)) want = p;
  }
  EXPECT_EQ(Int8PathName(Int8AutoPath()), std::string(Int8PathName(want)));
  EXPECT_TRUE(Int8GemmSupported(Int8Path::kScalar));
  // AVX-VNNI and AVX-512 imply AVX2 on every CPU that has them.
  if (Int8GemmSupported(Int8Path::kAvxVnni) || Int8GemmSupported(Int8Path::kVnni)) {
    EXPECT_TRUE(Int8GemmSupported(Int8Path::kAvx2));
  }
  std::vector<float> w(16 * 8, 0.5f), x(8, 1.0f), y(16);
  auto q = QuantizeWeight(w.data(), DType::kF32, 16, 8, 0);
  ASSERT_TRUE(q.ok());
  for (Int8Path p : {Int8Path::kVnni, Int8Path::kDequantF32, Int8Path::kAvx2, Int8Path::kAvxVnni}) {
    const absl::Status s = Int8Gemm({x.data(), 8, &*q, nullptr, y.data(), 16, 1, false, p});
    EXPECT_EQ(s.ok(), Int8GemmSupported(p)) << Int8PathName(p) << ": " << s;
  }
}

// A NaN or an infinity in an activation row makes that row's outputs NaN on every integer path
// (as in float; never a finite number quantized from a zeroed row), and leaves the other rows'
// bits alone.
TEST(Int8GemmPathsTest, NonFiniteActivationsGiveNaNRows) {
  constexpr int64_t n = 37, k = 40, m = 4;
  const std::vector<float> w = Random(n * k, 3);
  auto q = QuantizeWeight(w.data(), DType::kF32, n, k, 8);
  ASSERT_TRUE(q.ok());
  std::vector<float> x = Random(m * k, 4), bias = Random(n, 5);
  x[1 * k + 7] = std::numeric_limits<float>::quiet_NaN();
  x[2 * k + 30] = -std::numeric_limits<float>::infinity();
  for (Int8Path p : {Int8Path::kScalar, Int8Path::kAvx2, Int8Path::kAvxVnni, Int8Path::kVnni}) {
    if (!Int8GemmSupported(p)) continue;
    std::vector<float> y(m * n), clean(n);
    ASSERT_TRUE(Int8Gemm({x.data(), k, &*q, bias.data(), y.data(), n, m, false, p}).ok());
    for (int64_t r = 0; r < m; ++r) {
      ASSERT_TRUE(
          Int8Gemm({x.data() + r * k, k, &*q, bias.data(), clean.data(), n, 1, false, p}).ok());
      for (int64_t j = 0; j < n; ++j) {
        const float got = y[r * n + j];
        if (r == 1 || r == 2) {
          EXPECT_TRUE(std::isnan(got)) << Int8PathName(p) << " row " << r << " col " << j;
        } else {
          EXPECT_EQ(0, std::memcmp(&got, &clean[j], 4)) << Int8PathName(p) << " row " << r;
        }
      }
    }
  }
}

// Round trip: every weight within half a step (scale / 2) of its value, from every source
// dtype; a bf16 source quantizes like its fp32 value.
TEST(Int8QuantizeTest, RoundTripWithinHalfAStep) {
  const int64_t n = 19, k = 133;
  auto w = Random(static_cast<size_t>(n * k), 60, -3, 3);
  for (int64_t group : {0, 4, 32, 128}) {
    for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
      const auto rounded = ::mamba::kernels::testing::RoundTo(w, t);
      std::vector<uint16_t> bits;
      const void* src = rounded.data();
      if (t != DType::kF32) {
        bits = ::mamba::kernels::testing::ToHalfBits(w, t);
        src = bits.data();
      }
      auto q = QuantizeWeight(src, t, n, k, group);
      ASSERT_TRUE(q.ok());
      const auto back = DequantizeWeight(*q);
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t l = 0; l < k; ++l) {
          const size_t at = static_cast<size_t>(j * k + l);
          ASSERT_LE(std::fabs(back[at] - rounded[at]), q->Scale(j, l) * 0.5f * (1 + 1e-5f))
              << "group " << group << " dtype " << ::mamba::kernels::Name(t);
          ASSERT_LE(std::abs(q->Q(j, l)), 127);
        }
      }
    }
  }
}

// A quantized checkpoint stores QuantizeRowMajor's q and scales; loading packs them with
// PackInt8Weight. That must be QuantizeWeight's result byte for byte (data, scales, offsets), so
// a quantized checkpoint computes the same bits as quantizing at load.
TEST(Int8QuantizeTest, RowMajorThenPackIsQuantizeWeight) {
  struct Shape {
    int64_t n, k, group;
  };
  for (Shape s : {Shape{45, 37, 0}, Shape{131, 301, 64}, Shape{17, 3, 0}, Shape{16, 128, 32},
                  Shape{33, 130, 128}, Shape{5, 70, 8}, Shape{20, 64, 256}}) {
    auto w = Random(static_cast<size_t>(s.n * s.k), 70, -2, 2);
    w[3] = 0.0f;
    for (int64_t l = 0; l < s.k; ++l) w[static_cast<size_t>(s.k + l)] = 0.0f;  // a zero row
    for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
      std::vector<uint16_t> bits;
      const void* src = w.data();
      if (t != DType::kF32) {
        bits = ::mamba::kernels::testing::ToHalfBits(w, t);
        src = bits.data();
      }
      const std::string what = "n " + std::to_string(s.n) + " k " + std::to_string(s.k) +
                               " group " + std::to_string(s.group) + " " +
                               ::mamba::kernels::Name(t);
      auto want = QuantizeWeight(src, t, s.n, s.k, s.group);
      ASSERT_TRUE(want.ok()) << want.status();
      const int64_t groups = Int8GroupCount(s.k, s.group);
      ASSERT_EQ(groups, want->groups) << what;
      std::vector<int8_t> q(static_cast<size_t>(s.n * s.k));
      std::vector<float> scales(static_cast<size_t>(s.n * groups));
      ASSERT_TRUE(QuantizeRowMajor(src, t, s.n, s.k, s.group, q.data(), scales.data()).ok());
      for (int64_t j = 0; j < s.n; ++j) {
        for (int64_t l = 0; l < s.k; ++l) ASSERT_EQ(q[j * s.k + l], want->Q(j, l)) << what;
      }
      auto got = PackInt8Weight(q.data(), scales.data(), s.n, s.k, s.group);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->n, want->n);
      EXPECT_EQ(got->k_pad, want->k_pad);
      EXPECT_EQ(got->n_pad, want->n_pad);
      EXPECT_EQ(got->group_size, want->group_size);
      EXPECT_EQ(got->groups, want->groups);
      ASSERT_EQ(got->bytes, want->bytes);
      EXPECT_EQ(0, std::memcmp(got->data.get(), want->data.get(), static_cast<size_t>(got->bytes)))
          << what;
      ASSERT_EQ(got->scales.size(), want->scales.size());
      EXPECT_EQ(0, std::memcmp(got->scales.data(), want->scales.data(), got->scales.size() * 4))
          << what;
      EXPECT_EQ(got->offsets, want->offsets) << what;
    }
  }
}

TEST(Int8QuantizeTest, PackRefusesWhatQuantizationNeverWrites) {
  std::vector<int8_t> q(2 * 8, 1);
  std::vector<float> scales = {0.5f, 0.25f};
  ASSERT_TRUE(PackInt8Weight(q.data(), scales.data(), 2, 8, 0).ok());
  EXPECT_FALSE(PackInt8Weight(q.data(), scales.data(), 2, 8, 6).ok());  // group not a multiple of 4
  std::vector<float> bad = {0.5f, -0.25f};
  auto r = PackInt8Weight(q.data(), bad.data(), 2, 8, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("scale [1, 0]"), std::string::npos) << r.status();
  bad = {std::nanf(""), 0.25f};
  EXPECT_FALSE(PackInt8Weight(q.data(), bad.data(), 2, 8, 0).ok());
  bad = {INFINITY, 0.25f};
  EXPECT_FALSE(PackInt8Weight(q.data(), bad.data(), 2, 8, 0).ok());
  q[9] = -128;
  r = PackInt8Weight(q.data(), scales.data(), 2, 8, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("-128 at [1, 1]"), std::string::npos) << r.status();
  EXPECT_EQ(Int8GroupCount(37, 0), 1);
  EXPECT_EQ(Int8GroupCount(301, 64), 5);   // k_pad 304
  EXPECT_EQ(Int8GroupCount(130, 128), 2);  // k_pad 132
  EXPECT_EQ(Int8GroupCount(64, 256), 1);
  EXPECT_EQ(Int8GroupCount(64, 6), 0);
}

TEST(Int8QuantizeTest, ZeroRowsAndBadGroups) {
  std::vector<float> w(3 * 8, 0.0f);
  w[8] = 2.0f;  // row 1 has one value; rows 0 and 2 are zero
  auto q = QuantizeWeight(w.data(), DType::kF32, 3, 8, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->Scale(0, 0), 0.0f);
  EXPECT_EQ(q->Q(1, 0), 127);
  EXPECT_FLOAT_EQ(q->Scale(1, 0), 2.0f / 127);
  EXPECT_FALSE(QuantizeWeight(w.data(), DType::kF32, 3, 8, 6).ok());
  EXPECT_FALSE(QuantizeWeight(w.data(), DType::kF32, 0, 8, 0).ok());
  std::vector<float> x(8, 0.0f), y(3, 1.0f);
  ASSERT_TRUE(Int8Gemm({x.data(), 8, &*q, nullptr, y.data(), 3, 1, false}).ok());
  EXPECT_EQ(y, std::vector<float>(3, 0.0f));
}

}  // namespace
}  // namespace mamba::kernels::cpu
