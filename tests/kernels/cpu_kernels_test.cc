// Every CPU kernel against its float64 reference on random inputs of several shapes: odd channel
// counts (vector tails), chunk boundaries, many slots in shuffled order.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/causal_conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/selective_scan.h"
#include "kernels/cpu/threading.h"
#include "tests/kernels/kernel_test_util.h"

namespace mamba::kernels::cpu {
namespace {

using testing::Close;
using testing::MakeChunks;
using testing::Random;
using testing::ToDouble;

int64_t Total(const std::vector<SeqChunk>& c) { return c.back().begin + c.back().length; }

struct Shape {
  int64_t dim;
  int64_t d_state;
  int width;
  std::vector<int64_t> lengths;
};

class KernelTest : public ::testing::TestWithParam<Shape> {};

TEST_P(KernelTest, RmsNormMatchesReference) {
  const Shape& s = GetParam();
  const int64_t rows = 37;
  auto x = Random(static_cast<size_t>(rows * s.dim), 1, -3, 3);
  auto w = Random(static_cast<size_t>(s.dim), 2, 0.5, 1.5);
  std::vector<float> out(x.size());
  RmsNorm({x.data(), s.dim, w.data(), out.data(), s.dim, rows, s.dim, 1e-5});
  auto xd = ToDouble(x), wd = ToDouble(w);
  std::vector<double> want(x.size());
  RmsNormReference<double>({xd.data(), s.dim, wd.data(), want.data(), s.dim, rows, s.dim, 1e-5});
  EXPECT_TRUE(Close(out, want, 1e-6, 1e-5, "rmsnorm"));
}

TEST_P(KernelTest, CausalConvMatchesReferenceAndUpdatesState) {
  const Shape& s = GetParam();
  const int slots = 9;
  auto chunks = MakeChunks(s.lengths, slots, 3);
  const int64_t T = Total(chunks), hist = s.width - 1, stride = 2 * s.dim;
  auto x = Random(static_cast<size_t>(T * stride), 4, -2, 2);  // strided like xz
  auto w = Random(static_cast<size_t>(s.width * s.dim), 5);
  auto b = Random(static_cast<size_t>(s.dim), 6);
  auto state = Random(static_cast<size_t>(slots * hist * s.dim), 7);
  std::vector<float> out(static_cast<size_t>(T * s.dim));
  auto xd = ToDouble(x), wd = ToDouble(w), bd = ToDouble(b), sd = ToDouble(state);
  std::vector<double> want(out.size());
  CausalConv({x.data(), stride, w.data(), b.data(), state.data(), out.data(), s.dim, s.dim, s.width,
              chunks});
  CausalConvReference<double>({xd.data(), stride, wd.data(), bd.data(), sd.data(), want.data(),
                               s.dim, s.dim, s.width, chunks});
  EXPECT_TRUE(Close(out, want, 1e-5, 1e-5, "conv out"));
  EXPECT_TRUE(Close(state, sd, 0, 0, "conv state"));
}

TEST_P(KernelTest, SelectiveScanMatchesReferenceAndUpdatesState) {
  const Shape& s = GetParam();
  const int slots = 9;
  auto chunks = MakeChunks(s.lengths, slots, 8);
  const int64_t T = Total(chunks), e = s.dim, n = s.d_state, bc = 5 + 2 * n;
  auto x = Random(static_cast<size_t>(T * e), 9, -2, 2);
  auto dt = Random(static_cast<size_t>(T * e), 10, -6, 3);  // softplus over its whole range
  auto dt_bias = Random(static_cast<size_t>(e), 11, -1, 1);
  auto a = Random(static_cast<size_t>(n * e), 12, -8, -0.1f);
  auto bcm = Random(static_cast<size_t>(T * bc), 13, -1, 1);
  auto dsk = Random(static_cast<size_t>(e), 14);
  auto z = Random(static_cast<size_t>(T * 2 * e), 15, -4, 4);
  auto state = Random(static_cast<size_t>(slots * n * e), 16);
  std::vector<float> out(static_cast<size_t>(T * e));
  auto xd = ToDouble(x), dtd = ToDouble(dt), dbd = ToDouble(dt_bias), ad = ToDouble(a),
       bcd = ToDouble(bcm), dd = ToDouble(dsk), zd = ToDouble(z), sd = ToDouble(state);
  std::vector<double> want(out.size());
  SelectiveScan({x.data(), e, dt.data(), e, dt_bias.data(), a.data(), bcm.data() + 5,
                 bcm.data() + 5 + n, bc, dsk.data(), z.data() + e, 2 * e, state.data(), out.data(),
                 e, e, n, chunks});
  SelectiveScanReference<double>({xd.data(), e, dtd.data(), e, dbd.data(), ad.data(),
                                  bcd.data() + 5, bcd.data() + 5 + n, bc, dd.data(), zd.data() + e,
                                  2 * e, sd.data(), want.data(), e, e, n, chunks});
  EXPECT_TRUE(Close(out, want, 2e-5, 2e-5, "scan out"));
  EXPECT_TRUE(Close(state, sd, 2e-5, 2e-5, "scan state"));
}

// Chunked processing equals one pass: split every chunk in two calls.
TEST_P(KernelTest, ScanInTwoPiecesEqualsOnePass) {
  const Shape& s = GetParam();
  const int64_t e = s.dim, n = s.d_state, L = 23;
  auto x = Random(static_cast<size_t>(L * e), 20),
       dt = Random(static_cast<size_t>(L * e), 21, -5, 1), dtb = Random(static_cast<size_t>(e), 22),
       a = Random(static_cast<size_t>(n * e), 23, -4, -0.5f),
       bc = Random(static_cast<size_t>(L * 2 * n), 24), dsk = Random(static_cast<size_t>(e), 25),
       z = Random(static_cast<size_t>(L * e), 26);
  std::vector<float> s1(static_cast<size_t>(n * e), 0.0f), s2 = s1, o1(static_cast<size_t>(L * e)),
                                                           o2 = o1;
  auto run = [&](std::vector<float>& st, std::vector<float>& o, int64_t begin, int64_t len) {
    SeqChunk c{begin, len, 0};
    SelectiveScan({x.data(),
                   e,
                   dt.data(),
                   e,
                   dtb.data(),
                   a.data(),
                   bc.data(),
                   bc.data() + n,
                   2 * n,
                   dsk.data(),
                   z.data(),
                   e,
                   st.data(),
                   o.data(),
                   e,
                   e,
                   n,
                   {&c, 1}});
  };
  run(s1, o1, 0, L);
  run(s2, o2, 0, 7);
  run(s2, o2, 7, L - 7);
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(s1, s2);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, KernelTest,
    ::testing::Values(Shape{16, 16, 4, {1, 1, 1}}, Shape{64, 16, 4, {5, 1, 17, 2, 1}},
                      Shape{24, 4, 3, {3, 40}}, Shape{100, 17, 2, {1, 2, 3, 4, 5, 6, 7}},
                      Shape{33, 1, 4, {2}}, Shape{1536, 16, 4, {64, 1, 1, 9}}));

struct GemmCase {
  DType dtype;
  int64_t m, n, k;
  bool bias, accumulate;
  bool packed = false;  // our AVX-512 kernel instead of oneDNN
};

bool Supported(const GemmCase& g) {
  return g.packed ? PackedGemmSupported(g.dtype)
                  : (g.dtype == DType::kF32 || GemmHasFastPath(g.dtype));
}

// Runs the case's implementation on x [m, k] (ldx) with W given in fp32 [n, k].
absl::Status RunGemm(const GemmCase& g, const float* x, int64_t ldx, const std::vector<float>& w,
                     const float* bias, float* y, int64_t ldy, int64_t m, bool accumulate) {
  if (g.packed) {
    auto p = PackWeight(w.data(), DType::kF32, g.n, g.k, g.dtype);
    if (!p.ok()) return p.status();
    return PackedGemm({x, ldx, &*p, bias, y, ldy, m, accumulate});
  }
  std::vector<uint16_t> w16(w.size());
  for (size_t i = 0; i < w.size(); ++i)
    w16[i] = g.dtype == DType::kBF16 ? F32ToBf16(w[i]) : F32ToF16(w[i]);
  const void* wp = g.dtype == DType::kF32 ? static_cast<const void*>(w.data()) : w16.data();
  return Gemm({x, ldx, {g.dtype, wp, g.n, g.k}, bias, y, ldy, m, accumulate});
}
class GemmTest : public ::testing::TestWithParam<GemmCase> {};

std::vector<double> Rounded(const std::vector<float>& v, DType t) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = t == DType::kF32    ? v[i]
             : t == DType::kBF16 ? Bf16ToF32(F32ToBf16(v[i]))
                                 : F16ToF32(F32ToF16(v[i]));
  }
  return out;
}

TEST_P(GemmTest, MatchesReference) {
  const GemmCase& g = GetParam();
  if (!Supported(g)) GTEST_SKIP() << "no fast path on this CPU";
  const int64_t ldx = g.k + 3, ldy = g.n + 5;  // strided rows, as the engine uses
  auto x = Random(static_cast<size_t>(g.m * ldx), 30);
  auto w = Random(static_cast<size_t>(g.n * g.k), 31);
  auto b = Random(static_cast<size_t>(g.n), 32);
  auto y = Random(static_cast<size_t>(g.m * ldy), 33);
  auto xd = Rounded(x, g.dtype), wd = Rounded(w, g.dtype), bd = ToDouble(b), yd = ToDouble(y);
  ASSERT_TRUE(
      RunGemm(g, x.data(), ldx, w, g.bias ? b.data() : nullptr, y.data(), ldy, g.m, g.accumulate)
          .ok());
  GemmReference<double>(xd.data(), ldx, wd.data(), g.bias ? bd.data() : nullptr, yd.data(), ldy,
                        g.m, g.n, g.k, g.accumulate);
  const double tol = g.dtype == DType::kF32 ? 1e-5 : 1e-3;
  EXPECT_TRUE(Close(y, yd, tol * std::sqrt(static_cast<double>(g.k)), tol, "gemm"));
}

// Row i of the product is bitwise the same whatever the number of rows: what makes a request's
// logits independent of the batch it is in.
TEST_P(GemmTest, RowsAreBitwiseIndependentOfM) {
  const GemmCase& g = GetParam();
  if (!Supported(g)) GTEST_SKIP() << "no fast path on this CPU";
  if (!g.packed)
    GTEST_SKIP()
        << "oneDNN picks kernels by m for small shapes; only the packed kernel promises this";
  auto x = Random(static_cast<size_t>(200 * g.k), 40);
  auto w = Random(static_cast<size_t>(g.n * g.k), 41);
  std::vector<float> one(static_cast<size_t>(g.n)), many(static_cast<size_t>(200 * g.n));
  ASSERT_TRUE(RunGemm(g, x.data() + 5 * g.k, g.k, w, nullptr, one.data(), g.n, 1, false).ok());
  for (int64_t m : {6, 13, 64, 200}) {
    ASSERT_TRUE(RunGemm(g, x.data(), g.k, w, nullptr, many.data(), g.n, m, false).ok());
    EXPECT_EQ(0, std::memcmp(one.data(), many.data() + 5 * g.n, one.size() * 4)) << "m=" << m;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GemmTest,
                         ::testing::Values(GemmCase{DType::kF32, 1, 96, 32, false, false},
                                           GemmCase{DType::kF32, 37, 200, 64, true, false},
                                           GemmCase{DType::kF32, 130, 72, 300, true, true},
                                           GemmCase{DType::kBF16, 1, 96, 32, false, false},
                                           GemmCase{DType::kBF16, 37, 200, 64, true, true},
                                           GemmCase{DType::kBF16, 129, 80, 768, false, true},
                                           GemmCase{DType::kF16, 17, 64, 64, true, false},
                                           GemmCase{DType::kF32, 1, 96, 32, false, false, true},
                                           GemmCase{DType::kF32, 37, 200, 64, true, false, true},
                                           GemmCase{DType::kF32, 130, 72, 300, true, true, true},
                                           GemmCase{DType::kF32, 300, 40, 1536, false, true, true},
                                           GemmCase{DType::kBF16, 1, 96, 32, false, false, true},
                                           GemmCase{DType::kBF16, 37, 200, 63, true, true, true},
                                           GemmCase{DType::kBF16, 129, 80, 768, false, true, true},
                                           GemmCase{DType::kBF16, 9, 3, 5, true, false, true}));

TEST(Threading, ParallelForCoversRangeOnce) {
  std::vector<int> hits(1000, 0);
  ParallelFor(1000, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
  });
  EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
}

// Every (chunk, block) pair exactly once, whatever the mix of lengths, thread count and block
// count; and with one long chunk among short ones, no thread gets most of the tokens.
TEST(Threading, ChunkBlocksCoverEveryPairOnceAndBalanceTokens) {
  const int before = NumThreads();
  for (int threads : {1, 2, 3, 7}) {
    SetNumThreads(threads);
    for (const std::vector<int64_t>& lengths : std::vector<std::vector<int64_t>>{
             {1}, {512}, {512, 1, 1, 1, 1}, {1, 1, 300, 1, 17, 2}, {}}) {
      for (int64_t blocks : {1, 3, 96}) {
        std::vector<SeqChunk> chunks;
        int64_t begin = 0;
        for (size_t i = 0; i < lengths.size(); ++i) {
          chunks.push_back({begin, lengths[i], static_cast<int32_t>(i)});
          begin += lengths[i];
        }
        std::vector<std::atomic<int>> hits(chunks.size() * static_cast<size_t>(blocks));
        std::mutex mu;
        std::map<std::thread::id, int64_t> tokens_by_thread;
        ParallelForChunkBlocks(chunks, blocks, [&](const SeqChunk& c, int64_t b) {
          hits[static_cast<size_t>(c.slot * blocks + b)]++;
          std::lock_guard lock(mu);
          tokens_by_thread[std::this_thread::get_id()] += c.length;
        });
        for (const auto& h : hits)
          EXPECT_EQ(h.load(), 1) << threads << " threads, " << blocks << " blocks";
        if (blocks == 96 && threads > 1 && begin > 1) {
          int64_t most = 0;
          for (const auto& [id, t] : tokens_by_thread) most = std::max(most, t);
          // Balanced within one block of the longest chunk.
          EXPECT_LE(most, begin * blocks / threads + 512) << threads << " threads";
        }
      }
    }
  }
  SetNumThreads(before);
}

// The count set where the backend is created must reach the engine's loop thread (OpenMP keeps
// its count per thread). Under ThreadSanitizer the kernels always run on one thread.
TEST(Threading, CountReachesOtherThreads) {
  const int before = NumThreads();
  SetNumThreads(1);
  int seen = -1, regions = -1;
  std::thread([&] {
    seen = NumThreads();
    regions = omp_get_max_threads();
  }).join();
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(regions, 1) << "oneDNN follows OpenMP's count in the calling thread";
  SetNumThreads(before);
}

}  // namespace
}  // namespace mamba::kernels::cpu
