// Micro-benchmarks of the CPU kernels on the 130m shapes (Google Benchmark):
//   ./build/bin/cpu_kernels_bench --benchmark_filter=Gemm
// GEMMs cycle through 24 weight copies so that, like a real decode step, weights come from DRAM.
#include <algorithm>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/causal_conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/selective_scan.h"
#include "kernels/cpu/threading.h"

namespace mamba::kernels::cpu {
namespace {

constexpr int kLayers = 24;

std::vector<float> Random(size_t n, uint64_t seed, float lo = -1, float hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// args: m, n, k, dtype (0 f32, 1 bf16), impl (0 packed, 1 oneDNN)
void BM_Gemm(benchmark::State& st) {
  const int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  const DType dt = st.range(3) ? DType::kBF16 : DType::kF32;
  const bool packed = st.range(4) == 0;
  if (packed && !PackedGemmSupported(dt)) return st.SkipWithError("no AVX-512 for this dtype");
  auto w = Random(static_cast<size_t>(n * k), 1);
  std::vector<PackedWeight> pw;
  std::vector<std::vector<uint16_t>> w16;
  std::vector<std::vector<float>> w32;
  for (int l = 0; l < kLayers; ++l) {
    if (packed) {
      pw.push_back(*PackWeight(w.data(), DType::kF32, n, k, dt));
    } else if (dt == DType::kBF16) {
      w16.emplace_back(w.size());
      ConvertF32ToBf16(w.data(), w16.back().data(), static_cast<int64_t>(w.size()));
    } else {
      w32.push_back(w);
    }
  }
  auto x = Random(static_cast<size_t>(m * k), 2);
  std::vector<float> y(static_cast<size_t>(m * n));
  int l = 0;
  for (auto _ : st) {
    if (packed) {
      benchmark::DoNotOptimize(PackedGemm({x.data(), k, &pw[l], nullptr, y.data(), n, m, false}));
    } else {
      const void* wp = dt == DType::kBF16 ? static_cast<const void*>(w16[l].data()) : w32[l].data();
      benchmark::DoNotOptimize(Gemm({x.data(), k, {dt, wp, n, k}, nullptr, y.data(), n, m, false}));
    }
    l = (l + 1) % kLayers;
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["weight_GB/s"] = benchmark::Counter(static_cast<double>(n * k * SizeOf(dt)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Gemm)
    ->ArgNames({"m", "n", "k", "bf16", "onednn"})
    ->ArgsProduct({{1, 8, 32, 128, 512}, {3072}, {768}, {0, 1}, {0, 1}})
    ->Args({1, 50280, 768, 1, 0})
    ->Args({1, 50280, 768, 1, 1})
    ->UseRealTime();

// int8 against our bf16 packed GEMM on the same shape, adjacent in one run (issue 17). args: m,
// n, k, impl (0 bf16 packed, 1 int8 kVnni, 2 int8 kDequantF32, 3 int8 kAvx2, 4 int8 kAvxVnni).
// Enough weight copies to cycle through >= 384 MB, so that the weights come from DRAM as in a
// decode step.
void BM_Int8VsBf16(benchmark::State& st) {
  const int64_t m = st.range(0), n = st.range(1), k = st.range(2), impl = st.range(3);
  const Int8Path paths[] = {Int8Path::kVnni, Int8Path::kVnni, Int8Path::kDequantF32,
                            Int8Path::kAvx2, Int8Path::kAvxVnni};
  const Int8Path path = paths[impl];
  if (impl == 0 && !PackedGemmSupported(DType::kBF16)) return st.SkipWithError("no AVX512-BF16");
  if (impl != 0 && !Int8GemmSupported(path)) return st.SkipWithError("CPU lacks this int8 path");
  st.SetLabel(impl == 0 ? "bf16" : Int8PathName(path));
  const int64_t bytes = impl == 0 ? 2 * n * k : n * k;
  const int copies = static_cast<int>(std::clamp<int64_t>((384 << 20) / bytes, 2, kLayers));
  auto w = Random(static_cast<size_t>(n * k), 1);
  std::vector<PackedWeight> pw;
  std::vector<Int8Weight> qw;
  for (int l = 0; l < copies; ++l) {
    if (impl == 0) {
      pw.push_back(*PackWeight(w.data(), DType::kF32, n, k, DType::kBF16));
    } else {
      qw.push_back(*QuantizeWeight(w.data(), DType::kF32, n, k));
    }
  }
  auto x = Random(static_cast<size_t>(m * k), 2);
  std::vector<float> y(static_cast<size_t>(m * n));
  int l = 0;
  for (auto _ : st) {
    if (impl == 0) {
      benchmark::DoNotOptimize(PackedGemm({x.data(), k, &pw[l], nullptr, y.data(), n, m, false}));
    } else {
      benchmark::DoNotOptimize(
          Int8Gemm({x.data(), k, &qw[l], nullptr, y.data(), n, m, false, path}));
    }
    l = (l + 1) % copies;
  }
  st.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["weight_GB/s"] =
      benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Int8VsBf16)
    ->ArgNames({"m", "n", "k", "impl"})
    ->ArgsProduct({{1}, {3072}, {768}, {0, 1, 2}})
    ->ArgsProduct({{8, 32, 512}, {3072}, {768}, {0, 1}})
    ->ArgsProduct({{1}, {768}, {1536}, {0, 1, 2}})
    ->ArgsProduct({{8, 32, 512}, {768}, {1536}, {0, 1}})
    ->ArgsProduct({{1}, {8192}, {2048}, {0, 1, 2}})
    ->ArgsProduct({{8, 32, 512}, {8192}, {2048}, {0, 1}})
    ->ArgsProduct({{1, 8, 32, 512}, {3072}, {768}, {3, 4}})  // the 256-bit paths, 130m shapes
    ->ArgsProduct({{1, 8, 32, 512}, {768}, {1536}, {3, 4}})
    ->UseRealTime();

// args: tokens per chunk, chunks
void BM_SelectiveScan(benchmark::State& st) {
  const int64_t len = st.range(0), chunks = st.range(1), e = 1536, n = 16, T = len * chunks;
  auto x = Random(static_cast<size_t>(T * e), 1), dt = Random(static_cast<size_t>(T * e), 2, -5, 0),
       bias = Random(static_cast<size_t>(e), 3), a = Random(static_cast<size_t>(n * e), 4, -16, -1),
       bc = Random(static_cast<size_t>(T * 2 * n), 5), d = Random(static_cast<size_t>(e), 6),
       z = Random(static_cast<size_t>(T * e), 7);
  std::vector<float> state(static_cast<size_t>(chunks * n * e)), out(static_cast<size_t>(T * e));
  std::vector<SeqChunk> cs;
  for (int64_t c = 0; c < chunks; ++c) cs.push_back({c * len, len, static_cast<int32_t>(c)});
  for (auto _ : st) {
    SelectiveScan({x.data(), e, dt.data(), e, bias.data(), a.data(), bc.data(), bc.data() + n,
                   2 * n, d.data(), z.data(), e, state.data(), out.data(), e, e, n, cs});
  }
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SelectiveScan)
    ->ArgNames({"len", "chunks"})
    ->Args({512, 1})
    ->Args({1, 1})
    ->Args({1, 32})
    ->UseRealTime();

void BM_CausalConv(benchmark::State& st) {
  const int64_t len = st.range(0), chunks = st.range(1), e = 1536, T = len * chunks;
  auto x = Random(static_cast<size_t>(T * 2 * e), 1), w = Random(static_cast<size_t>(4 * e), 2),
       b = Random(static_cast<size_t>(e), 3);
  std::vector<float> state(static_cast<size_t>(chunks * 3 * e)), out(static_cast<size_t>(T * e));
  std::vector<SeqChunk> cs;
  for (int64_t c = 0; c < chunks; ++c) cs.push_back({c * len, len, static_cast<int32_t>(c)});
  for (auto _ : st) {
    CausalConv({x.data(), 2 * e, w.data(), b.data(), state.data(), out.data(), e, e, 4, cs});
  }
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CausalConv)->ArgNames({"len", "chunks"})->Args({512, 1})->Args({1, 32})->UseRealTime();

}  // namespace
}  // namespace mamba::kernels::cpu

BENCHMARK_MAIN();
