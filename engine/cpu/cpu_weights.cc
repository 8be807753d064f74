#include "engine/cpu/cpu_weights.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/threading.h"

namespace mamba::engine::cpu {
namespace {

using kernels::DType;
using kernels::cpu::GemmWeight;

std::vector<float> ToF32(const TensorInfo* t) {
  if (t == nullptr) return {};
  std::vector<float> v(static_cast<size_t>(t->NumElements()));
  kernels::ConvertToF32(t->data, t->dtype, v.data(), t->NumElements());
  return v;
}

// A [n, k] matrix in `compute`: the mapped bytes when the dtype matches, else a converted copy.
GemmWeight MakeGemmWeight(const TensorInfo& t, DType compute, CpuWeights* w) {
  const int64_t n = t.shape[0];
  const int64_t k = t.NumElements() / n;
  w->gemm_bytes += t.NumElements() * static_cast<int64_t>(kernels::SizeOf(compute));
  if (t.dtype == compute) return GemmWeight{compute, t.data, n, k};
  const int64_t count = t.NumElements();
  const size_t bytes = static_cast<size_t>(count) * kernels::SizeOf(compute);
  auto buf = std::make_unique<std::byte[]>(bytes);
  // Convert in row blocks across threads: the big matrices are up to ~100M elements.
  kernels::cpu::ParallelFor(n, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = r0; r < r1; ++r) {
      kernels::ConvertToF32(t.data + r * k * kernels::SizeOf(t.dtype), t.dtype, row.data(), k);
      if (compute == DType::kF32) {
        std::memcpy(buf.get() + r * k * 4, row.data(), static_cast<size_t>(k) * 4);
      } else {
        auto* dst = reinterpret_cast<uint16_t*>(buf.get()) + r * k;
        for (int64_t i = 0; i < k; ++i) {
          dst[i] = compute == DType::kBF16 ? kernels::F32ToBf16(row[i]) : kernels::F32ToF16(row[i]);
        }
      }
    }
  });
  const void* data = buf.get();
  w->owned_bytes += static_cast<int64_t>(bytes);
  w->storage.push_back(std::move(buf));
  return GemmWeight{compute, data, n, k};
}

// [rows, cols] -> [cols, rows] with f applied.
template <typename F>
std::vector<float> Transpose(const std::vector<float>& in, int64_t rows, int64_t cols, F f) {
  std::vector<float> out(in.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = f(in[r * cols + c]);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuWeights>> PrepareCpuWeights(const Checkpoint& ckpt,
                                                               DType compute) {
  const ModelConfig& c = ckpt.config();
  auto w = std::make_unique<CpuWeights>();
  w->compute = compute;
  w->embedding = &ckpt.embedding();
  w->lm_head = MakeGemmWeight(ckpt.lm_head() ? *ckpt.lm_head() : ckpt.embedding(), compute, w.get());
  w->norm_f = ToF32(&ckpt.norm_f());
  const int64_t e = c.intermediate_size, n = c.state_size;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensors& t = ckpt.layer(i);
    CpuLayerWeights L;
    L.in_proj = MakeGemmWeight(*t.in_proj, compute, w.get());
    L.x_proj = MakeGemmWeight(*t.x_proj, compute, w.get());
    L.dt_proj = MakeGemmWeight(*t.dt_proj, compute, w.get());
    L.out_proj = MakeGemmWeight(*t.out_proj, compute, w.get());
    L.norm = ToF32(t.norm);
    L.in_proj_bias = ToF32(t.in_proj_bias);
    L.out_proj_bias = ToF32(t.out_proj_bias);
    L.conv = Transpose(ToF32(t.conv), e, c.conv_kernel, [](float v) { return v; });
    L.conv_bias = ToF32(t.conv_bias);
    L.dt_bias = ToF32(t.dt_proj_bias);
    L.a = Transpose(ToF32(t.a_log), e, n, [](float v) { return -std::exp(v); });
    L.d = ToF32(t.d);
    w->layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace mamba::engine::cpu
