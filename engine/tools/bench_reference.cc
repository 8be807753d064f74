#include "engine/tools/bench_reference.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "kernels/cpu/memory.h"

namespace mamba::engine::tools {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double MeasureTriadGBps() {
  const int64_t n = int64_t{32} << 20;
  // The same memory as the packed weights (huge-page hinted), so the ratio compares like with like.
  const auto a = kernels::cpu::MakeStreamedArray<float>(static_cast<size_t>(n));
  const auto b = kernels::cpu::MakeStreamedArray<float>(static_cast<size_t>(n));
  const auto c = kernels::cpu::MakeStreamedArray<float>(static_cast<size_t>(n));
  if (!a || !b || !c) return 0.0;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 0.0f;
    b[i] = 1.0f;
    c[i] = 2.0f;
  }
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = Now();
    float* pa = a.get();
    const float* pb = b.get();
    const float* pc = c.get();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    best = std::min(best, Now() - t0);
  }
  return 12.0 * static_cast<double>(n) / best / 1e9;
}

double MeasureOneDnnGemmSeconds(int64_t m, int64_t n, int64_t k, kernels::DType dtype) {
  using dnnl::memory;
  using Tag = memory::format_tag;
  const auto dt = dtype == kernels::DType::kF32    ? memory::data_type::f32
                  : dtype == kernels::DType::kBF16 ? memory::data_type::bf16
                                                   : memory::data_type::f16;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  memory::desc x_md({m, k}, dt, Tag::ab), w_any({k, n}, dt, Tag::any),
      y_md({m, n}, memory::data_type::f32, Tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_md, w_any, y_md), eng);
  dnnl::matmul mm(pd);
  memory x(x_md, eng), w_plain({{k, n}, dt, Tag::ba}, eng), w(pd.weights_desc(), eng), y(y_md, eng);
  std::fill_n(static_cast<uint8_t*>(x.get_data_handle()), x_md.get_size(), 0x3c);
  std::fill_n(static_cast<uint8_t*>(w_plain.get_data_handle()), w_plain.get_desc().get_size(),
              0x3c);
  dnnl::reorder(w_plain, w).execute(s, w_plain, w);
  const int iters =
      std::max<int64_t>(3, std::min<int64_t>(200, 2e9 / std::max<int64_t>(1, 2 * m * n * k)));
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = Now();
    for (int i = 0; i < iters; ++i)
      mm.execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, y}});
    s.wait();
    best = std::min(best, (Now() - t0) / iters);
  }
  return best;
}

}  // namespace mamba::engine::tools
