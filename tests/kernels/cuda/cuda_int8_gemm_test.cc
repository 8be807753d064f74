// The weight-only int8 GEMM on the GPU (kernels/cuda/int8_gemm.h) against the CPU's float64
// reference, Int8GemmReference<double>(..., quantize_x = false), with weights quantized by the
// CPU's QuantizeWeight: the GEMV path (m 1, 3, 8; 16-byte loads where k, the group and x allow,
// one weight per lane otherwise) and the dequantize-then-cuBLAS path (m 64, 300; the whole matrix
// or tiles of a few rows), per-row and per-group scales (64, and 20 which straddles loads), k and
// n tails, padded x rows, bias and accumulate, x in bf16, fp16 and fp32. Both paths captured in a
// CUDA graph give the eager bits. Label `gpu`; the GPU cases skip without a usable device (fail
// under MAMBA_REQUIRE_GPU=1).
//
// Tolerance, per output: |got - want| <= 1e-6 + rtol * sum_l |x_l| |w_jl| (+ |bias| + |y0|), the
// sum of the magnitudes the result is made of. rtol: GEMV 2e-5 (fp32 products and sums: ~sqrt(k)
// x 2^-24 expected); larger m with fp32 x 2e-5 (W dequantized to fp32, cuBLAS fp32 without TF32);
// with bf16 / fp16 x 5e-3 / 1e-3 (each dequantized weight is rounded to x's dtype: at most 2^-8 /
// 2^-11 relative, plus the sums). The weights of group g of row j are scaled by 2^((j + g) % 4)
// before quantizing, so the scales of neighbouring groups and rows differ 2x to 8x: a wrong group
// or row of scales changes those weights by 50% or more. Simulated in float64 for six of these
// shapes (the largest error over a matrix's outputs, in units of the bf16 bound): the group index
// one too high, 20x to 70x (grouped shapes); row 0's scales for every row, 18x to 67x; only the
// last group's scale wrong, 3.5x to 53x. With uniform weights every scale is ~max|w| / 127 and
// such mistakes stayed under the bound (0.03x to 0.98x) for k >= 512.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "kernels/cpu/int8_gemm.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/int8_gemm.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace mamba::kernels::cuda {
namespace {

using namespace testing;  // NOLINT: test helpers

struct Case {
  const char* name;
  int64_t m, n, k;
  int64_t group;    // inputs per scale; 0: one per row
  int64_t x_pad;    // ldx = k + x_pad
  int64_t ws_rows;  // workspace rows for m > 8; 0: Int8GemmWorkspaceBytes
};

const Case kCases[] = {
    {"m1_rows", 1, 96, 768, 0, 0, 0},
    {"m1_group64", 1, 80, 1536, 64, 0, 0},
    {"m1_tail_k", 1, 33, 1000, 0, 0, 0},
    {"m3_tail_k_padded_x", 3, 37, 1000, 0, 3, 0},
    {"m3_group64_tail", 3, 50, 200, 64, 0, 0},
    {"m8_group64", 8, 129, 512, 64, 0, 0},
    {"m8_group20", 8, 33, 100, 20, 0, 0},
    {"m64_rows", 64, 160, 768, 0, 0, 0},
    {"m64_group64_tiles", 64, 300, 256, 64, 0, 7},
    {"m300_group64_padded_x", 300, 257, 1000, 64, 3, 0},
    {"m300_rows_tiles", 300, 96, 768, 0, 0, 40},
};

// W [n, k] with group g of row j scaled by 2^((j + g) % 4) (group 0: one group per row), so that
// scales differ strongly between neighbouring groups and rows.
std::vector<float> Weights(int64_t n, int64_t k, int64_t group, uint64_t seed, float lo = -1.0f,
                           float hi = 1.0f) {
  std::vector<float> w = Random(static_cast<size_t>(n * k), seed, lo, hi);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t l = 0; l < k; ++l) {
      const int64_t g = group > 0 ? l / group : 0;
      w[static_cast<size_t>(j * k + l)] *= static_cast<float>(1 << ((j + g) % 4));
    }
  }
  return w;
}

// W quantized on the host, and its row-major q [n, k] and scales [n, groups] for the device.
struct Quantized {
  cpu::Int8Weight w;
  std::vector<int8_t> q;
  std::vector<float> scales;
  int64_t group_size = 0;
};

Quantized Quantize(const std::vector<float>& w, int64_t n, int64_t k, int64_t group) {
  Quantized out;
  auto qw = cpu::QuantizeWeight(w.data(), DType::kF32, n, k, group);
  EXPECT_TRUE(qw.ok()) << qw.status();
  if (!qw.ok()) return out;
  out.w = *std::move(qw);
  out.group_size = out.w.group_size;
  const int64_t groups = Int8Groups(k, out.group_size);
  out.q.resize(static_cast<size_t>(n * k));
  out.scales.resize(static_cast<size_t>(n * groups));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t l = 0; l < k; ++l) out.q[static_cast<size_t>(j * k + l)] = out.w.Q(j, l);
    for (int64_t g = 0; g < groups; ++g)
      out.scales[static_cast<size_t>(j * groups + g)] = out.w.Scale(j, g * out.group_size);
  }
  return out;
}

double Rtol(int64_t m, DType t) {
  if (m <= kInt8GemvMaxRows || t == DType::kF32) return 2e-5;
  return t == DType::kBF16 ? 5e-3 : 1e-3;
}

::testing::AssertionResult Within(const std::vector<float>& got, const std::vector<double>& want,
                                  const std::vector<double>& magnitude, double rtol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size differs";
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= 1e-6 + rtol * magnitude[i])) {  // NaN fails
      return ::testing::AssertionFailure()
             << "at " << i << ": got " << got[i] << " want " << want[i] << " (error " << err
             << ", bound " << 1e-6 + rtol * magnitude[i] << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

class CudaInt8GemmTest : public ::testing::TestWithParam<std::tuple<Case, DType>> {
 protected:
  void SetUp() override {
    MAMBA_SKIP_WITHOUT_GPU();
    MAMBA_CUDA_ASSERT(cudaStreamCreate(&stream_));
    auto g = CublasGemm::Create(stream_);
    ASSERT_TRUE(g.ok()) << g.status();
    blas_ = *std::move(g);
  }
  void TearDown() override {
    blas_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CublasGemm> blas_;
};

TEST_P(CudaInt8GemmTest, MatchesReference) {
  const auto& [c, t] = GetParam();
  const int64_t ldx = c.k + c.x_pad, ldy = c.n + 2;
  // x in t's precision (the reference reads the same values as fp32).
  const auto x = RoundTo(Random(static_cast<size_t>(c.m * ldx), 1), t);
  const auto w = Weights(c.n, c.k, c.group, 2, -0.3f, 0.3f);
  const auto bias = Random(static_cast<size_t>(c.n), 3);
  const auto y0 = Random(static_cast<size_t>(c.m * ldy), 4);
  const Quantized qw = Quantize(w, c.n, c.k, c.group);
  ASSERT_FALSE(qw.q.empty());
  DeviceArray<float> x32(t == DType::kF32 ? x : std::vector<float>{});
  DeviceArray<uint16_t> x16(t == DType::kF32 ? std::vector<uint16_t>{} : ToHalfBits(x, t));
  DeviceArray<int8_t> q(qw.q);
  DeviceArray<float> scales(qw.scales), bias_dev(bias);
  const size_t ws_bytes = c.ws_rows > 0 ? static_cast<size_t>(c.ws_rows * c.k) * SizeOf(t)
                                        : Int8GemmWorkspaceBytes(c.n, c.k, t);
  DeviceArray<std::byte> ws(c.m > kInt8GemvMaxRows ? ws_bytes : 0);
  ASSERT_TRUE(x32.ok() && x16.ok() && q.ok() && scales.ok() && bias_dev.ok() && ws.ok());

  // sum_l |x_l| |w_jl| for the tolerance.
  std::vector<double> mag(static_cast<size_t>(c.m * ldy), 0.0);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < c.k; ++l) {
        s += std::abs(static_cast<double>(x[static_cast<size_t>(i * ldx + l)]) * qw.w.Q(j, l) *
                      qw.w.Scale(j, l));
      }
      mag[static_cast<size_t>(i * ldy + j)] = s;
    }
  }
  for (bool with_bias : {false, true}) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << (with_bias ? "bias, " : "no bias, ")
                                        << (accumulate ? "accumulate" : "overwrite"));
      DeviceArray<float> y(y0);
      Int8GemmArgs a;
      a.x = t == DType::kF32 ? static_cast<const void*>(x32.get()) : x16.get();
      a.ldx = ldx;
      a.x_dtype = t;
      a.q = q.get();
      a.scales = scales.get();
      a.group_size = qw.group_size;
      a.n = c.n;
      a.k = c.k;
      a.bias = with_bias ? bias_dev.get() : nullptr;
      a.y = y.get();
      a.ldy = ldy;
      a.m = c.m;
      a.accumulate = accumulate;
      a.workspace = ws.get();
      a.workspace_bytes = c.m > kInt8GemvMaxRows ? ws_bytes : 0;
      const absl::Status s = Int8Gemm(a, *blas_, stream_);
      ASSERT_TRUE(s.ok()) << s;
      MAMBA_CUDA_ASSERT(cudaStreamSynchronize(stream_));
      std::vector<double> want = ToDouble(y0);
      cpu::Int8GemmReference<double>(x.data(), ldx, qw.w, with_bias ? bias.data() : nullptr,
                                     want.data(), ldy, c.m, accumulate, /*quantize_x=*/false);
      std::vector<double> m = mag;
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          const size_t at = static_cast<size_t>(i * ldy + j);
          if (with_bias) m[at] += std::abs(bias[static_cast<size_t>(j)]);
          if (accumulate) m[at] += std::abs(y0[at]);
        }
      }
      // The whole array: the padding columns past n must keep y0 (bound 1e-6 there).
      EXPECT_TRUE(Within(y.Get(), want, m, Rtol(c.m, t)));
    }
  }
}

// Enqueued inside a stream capture (no allocation, no synchronization), replayed from the graph:
// the eager bits.
TEST_P(CudaInt8GemmTest, GraphCaptureGivesEagerBits) {
  const auto& [c, t] = GetParam();
  const int64_t ldx = c.k + c.x_pad, ldy = c.n;
  const auto x = RoundTo(Random(static_cast<size_t>(c.m * ldx), 5), t);
  const Quantized qw = Quantize(Weights(c.n, c.k, c.group, 6), c.n, c.k, c.group);
  ASSERT_FALSE(qw.q.empty());
  DeviceArray<float> x32(t == DType::kF32 ? x : std::vector<float>{});
  DeviceArray<uint16_t> x16(t == DType::kF32 ? std::vector<uint16_t>{} : ToHalfBits(x, t));
  DeviceArray<int8_t> q(qw.q);
  DeviceArray<float> scales(qw.scales);
  const size_t ws_bytes = Int8GemmWorkspaceBytes(c.n, c.k, t);
  DeviceArray<std::byte> ws(ws_bytes);
  DeviceArray<float> eager(static_cast<size_t>(c.m * ldy)), replay(static_cast<size_t>(c.m * ldy));
  Int8GemmArgs a;
  a.x = t == DType::kF32 ? static_cast<const void*>(x32.get()) : x16.get();
  a.ldx = ldx;
  a.x_dtype = t;
  a.q = q.get();
  a.scales = scales.get();
  a.group_size = qw.group_size;
  a.n = c.n;
  a.k = c.k;
  a.ldy = ldy;
  a.m = c.m;
  a.workspace = ws.get();
  a.workspace_bytes = ws_bytes;
  a.y = eager.get();
  ASSERT_TRUE(Int8Gemm(a, *blas_, stream_).ok());
  MAMBA_CUDA_ASSERT(cudaStreamSynchronize(stream_));
  a.y = replay.get();
  MAMBA_CUDA_ASSERT(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  const absl::Status s = Int8Gemm(a, *blas_, stream_);
  cudaGraph_t graph = nullptr;
  MAMBA_CUDA_ASSERT(cudaStreamEndCapture(stream_, &graph));
  ASSERT_TRUE(s.ok()) << s;
  cudaGraphExec_t exec = nullptr;
  MAMBA_CUDA_ASSERT(cudaGraphInstantiate(&exec, graph, 0));
  MAMBA_CUDA_ASSERT(cudaGraphLaunch(exec, stream_));
  MAMBA_CUDA_ASSERT(cudaStreamSynchronize(stream_));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  EXPECT_EQ(eager.Get(), replay.Get());
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaInt8GemmTest,
                         ::testing::Combine(::testing::ValuesIn(kCases),
                                            ::testing::Values(DType::kBF16, DType::kF16,
                                                              DType::kF32)),
                         [](const ::testing::TestParamInfo<std::tuple<Case, DType>>& i) {
                           return std::string(std::get<0>(i.param).name) + "_" +
                                  Name(std::get<1>(i.param));
                         });

// Bad arguments are refused before anything is enqueued.
TEST(CudaInt8GemmArgs, RefusesBadArguments) {
  MAMBA_SKIP_WITHOUT_GPU();
  cudaStream_t stream = nullptr;
  MAMBA_CUDA_ASSERT(cudaStreamCreate(&stream));
  auto blas = CublasGemm::Create(stream);
  ASSERT_TRUE(blas.ok()) << blas.status();
  DeviceArray<float> x(64 * 32), y(64 * 16), scales(16);
  DeviceArray<int8_t> q(16 * 32);
  Int8GemmArgs a;
  a.x = x.get();
  a.ldx = 32;
  a.x_dtype = DType::kF32;
  a.q = q.get();
  a.scales = scales.get();
  a.group_size = 32;
  a.n = 16;
  a.k = 32;
  a.y = y.get();
  a.ldy = 16;
  a.m = 64;  // needs a workspace
  EXPECT_EQ(Int8Gemm(a, **blas, stream).code(), absl::StatusCode::kInvalidArgument);
  a.m = 4;
  a.ldx = 31;
  EXPECT_EQ(Int8Gemm(a, **blas, stream).code(), absl::StatusCode::kInvalidArgument);
  a.ldx = 32;
  a.group_size = 0;
  EXPECT_EQ(Int8Gemm(a, **blas, stream).code(), absl::StatusCode::kInvalidArgument);
  a.group_size = 32;
  EXPECT_TRUE(Int8Gemm(a, **blas, stream).ok());
  MAMBA_CUDA_ASSERT(cudaStreamSynchronize(stream));
  blas->reset();
  cudaStreamDestroy(stream);
}

// Host-only: the group count is ceil(k / group_size), at least 1, without overflow for a huge
// group size (one scale per row).
TEST(CudaInt8GemmGroups, Count) {
  EXPECT_EQ(Int8Groups(100, 20), 5);
  EXPECT_EQ(Int8Groups(100, 64), 2);
  EXPECT_EQ(Int8Groups(1000, 64), 16);
  EXPECT_EQ(Int8Groups(100, 100), 1);
  EXPECT_EQ(Int8Groups(100, 104), 1);
  EXPECT_EQ(Int8Groups(100, std::numeric_limits<int64_t>::max()), 1);
  EXPECT_EQ(Int8Groups(100, std::numeric_limits<int64_t>::max() - 3), 1);
  EXPECT_EQ(Int8Groups(100, 0), 1);
}

// Host-only: the workspace holds the whole matrix when it fits kInt8TileBytes, else a tile.
TEST(CudaInt8GemmWorkspace, Sizes) {
  EXPECT_EQ(Int8GemmWorkspaceBytes(100, 64, DType::kBF16), size_t{100 * 64 * 2});
  EXPECT_EQ(Int8GemmWorkspaceBytes(50280, 768, DType::kBF16), kInt8TileBytes / 1536 * 1536);
  EXPECT_EQ(Int8GemmWorkspaceBytes(1000, 1 << 20, DType::kF32), size_t{64} * (4u << 20));
  EXPECT_EQ(Int8GemmWorkspaceBytes(0, 64, DType::kBF16), 0u);
}

}  // namespace
}  // namespace mamba::kernels::cuda
