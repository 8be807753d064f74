// The cuBLAS GEMM wrapper against GemmReference (operands rounded to the weight dtype, float64
// accumulation), and greedy sampling on the device against a float64 log-softmax and a sort.
// Skips without a usable device.
#include <cuda_runtime.h>

#include <numeric>
#include <tuple>

#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/sampling.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace mamba::kernels::cuda {
namespace {

using namespace testing;  // NOLINT: test helpers

struct GemmShape {
  const char* name;
  int64_t m, n, k;
};

class CudaGemmTest : public ::testing::TestWithParam<std::tuple<GemmShape, DType>> {
 protected:
  void SetUp() override { MAMBA_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaGemmTest, MatchesReference) {
  const auto& [s, t] = GetParam();
  const int64_t ldx = s.k + 3, ldy = s.n + 2;
  const auto x = RoundTo(Random(static_cast<size_t>(s.m * ldx), 1), t);
  const auto w = RoundTo(Random(static_cast<size_t>(s.n * s.k), 2, -0.3f, 0.3f), t);
  const auto y0 = Random(static_cast<size_t>(s.m * ldy), 3);
  DeviceArray<float> x32(x), w32(w);
  DeviceArray<uint16_t> x16(t == DType::kF32 ? std::vector<uint16_t>{} : ToHalfBits(x, t));
  DeviceArray<uint16_t> w16(t == DType::kF32 ? std::vector<uint16_t>{} : ToHalfBits(w, t));
  cudaStream_t stream = nullptr;
  MAMBA_CUDA_ASSERT(cudaStreamCreate(&stream));
  auto gemm = CublasGemm::Create(stream);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  for (bool accumulate : {false, true}) {
    SCOPED_TRACE(accumulate ? "accumulate" : "overwrite");
    DeviceArray<float> y(y0);
    GemmArgs a;
    a.x = t == DType::kF32 ? static_cast<const void*>(x32.get()) : x16.get();
    a.ldx = ldx;
    a.w = t == DType::kF32 ? static_cast<const void*>(w32.get()) : w16.get();
    a.dtype = t;
    a.n = s.n;
    a.k = s.k;
    a.y = y.get();
    a.ldy = ldy;
    a.m = s.m;
    a.accumulate = accumulate;
    ASSERT_TRUE((*gemm)->Run(a).ok());
    MAMBA_CUDA_ASSERT(cudaStreamSynchronize(stream));
    std::vector<double> want = ToDouble(y0);
    const std::vector<double> xd = ToDouble(x), wd = ToDouble(w);
    cpu::GemmReference<double>(xd.data(), ldx, wd.data(), nullptr, want.data(), ldy, s.m, s.n, s.k,
                               accumulate);
    // Columns past n in each row must be untouched: the comparison covers the whole array.
    EXPECT_TRUE(Close(y.Get(), want, 1e-4, 1e-4, "gemm"));
  }
  gemm->reset();
  cudaStreamDestroy(stream);
}

const GemmShape kGemmShapes[] = {
    {"gemv", 1, 96, 80},
    {"odd", 7, 33, 37},
    {"batch64", 64, 160, 128},
    {"tall_k", 5, 16, 1000},
};

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGemmTest,
                         ::testing::Combine(::testing::ValuesIn(kGemmShapes),
                                            ::testing::Values(DType::kF32, DType::kBF16,
                                                              DType::kF16)),
                         [](const ::testing::TestParamInfo<std::tuple<GemmShape, DType>>& i) {
                           return std::string(std::get<0>(i.param).name) + "_" +
                                  Name(std::get<1>(i.param));
                         });

// ---- Greedy sampling ----

struct SampleShape {
  const char* name;
  int64_t rows, vocab;
  int top_n;
};

class CudaGreedyTest : public ::testing::TestWithParam<SampleShape> {
 protected:
  void SetUp() override { MAMBA_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaGreedyTest, MatchesSortedLogSoftmax) {
  const SampleShape& s = GetParam();
  const int64_t stride = s.vocab + 5;
  std::vector<float> logits = Random(static_cast<size_t>(s.rows * stride), 9, -8, 8);
  // Ties (lowest id must win) and NaNs (never chosen) in some rows.
  for (int64_t r = 0; r < s.rows; r += 3) {
    float* row = logits.data() + r * stride;
    const int64_t a = (r * 7) % s.vocab, b = (r * 13 + 5) % s.vocab;
    row[a] = row[b] = 20.0f;
    row[(r * 3 + 1) % s.vocab] = std::nanf("");
  }
  DeviceArray<float> dl(logits);
  DeviceArray<int32_t> tok(static_cast<size_t>(s.rows)), ids(static_cast<size_t>(s.rows * s.top_n));
  DeviceArray<float> lp(static_cast<size_t>(s.rows)), tlp(static_cast<size_t>(s.rows * s.top_n));
  GreedyArgs a;
  a.logits = dl.get();
  a.logits_stride = stride;
  a.rows = s.rows;
  a.vocab = s.vocab;
  a.top_n = s.top_n;
  a.token = tok.get();
  a.logprob = lp.get();
  a.top_ids = ids.get();
  a.top_logprobs = tlp.get();
  MAMBA_CUDA_ASSERT(GreedySample(a, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  const auto got_tok = tok.Get(), got_ids = ids.Get();
  const auto got_lp = lp.Get(), got_tlp = tlp.Get();
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* row = logits.data() + r * stride;
    std::vector<int32_t> order;
    double mx = -INFINITY;
    for (int64_t i = 0; i < s.vocab; ++i) {
      if (std::isnan(row[i])) continue;
      order.push_back(static_cast<int32_t>(i));
      mx = std::max(mx, static_cast<double>(row[i]));
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t p, int32_t q) { return row[p] > row[q]; });
    double sum = 0;
    for (int32_t i : order) sum += std::exp(row[i] - mx);
    const double lse = mx + std::log(sum);
    ASSERT_EQ(got_tok[static_cast<size_t>(r)], order[0]) << "row " << r;
    EXPECT_NEAR(got_lp[static_cast<size_t>(r)], row[order[0]] - lse, 1e-4) << "row " << r;
    for (int k = 0; k < s.top_n; ++k) {
      const size_t at = static_cast<size_t>(r * s.top_n + k);
      if (k >= static_cast<int>(order.size())) {
        EXPECT_EQ(got_ids[at], -1);
        continue;
      }
      ASSERT_EQ(got_ids[at], order[static_cast<size_t>(k)]) << "row " << r << " rank " << k;
      EXPECT_NEAR(got_tlp[at], row[order[static_cast<size_t>(k)]] - lse, 1e-4)
          << "row " << r << " rank " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGreedyTest,
                         ::testing::Values(SampleShape{"argmax_only", 5, 1000, 0},
                                           SampleShape{"top5", 17, 50280, 5},
                                           SampleShape{"top20_small_vocab", 4, 12, 20},
                                           SampleShape{"top20_many_rows", 300, 4099, 20}),
                         [](const ::testing::TestParamInfo<SampleShape>& i) {
                           return std::string(i.param.name);
                         });

}  // namespace
}  // namespace mamba::kernels::cuda
