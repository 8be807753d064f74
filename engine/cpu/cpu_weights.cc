#include "engine/cpu/cpu_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/logging.h"
#include "engine/status_macros.h"
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

// Row-major [n, k] in `compute` for oneDNN: zero-copy when the stored dtype matches.
GemmWeight MakeGemmWeight(const TensorInfo& t, DType compute, CpuWeights* w) {
  const int64_t n = t.shape[0];
  const int64_t k = t.NumElements() / n;
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

// A stored int8 matrix (`t` I8, `scale` F32 [n, groups]) dequantized to fp32 (q * scale), for a
// quantized checkpoint run in float32/bfloat16/float16: the quantized model, in float.
absl::StatusOr<std::unique_ptr<std::byte[]>> Dequantize(const TensorInfo& t,
                                                        const TensorInfo& scale,
                                                        int64_t group_size) {
  const int64_t n = t.shape[0], k = t.NumElements() / n;
  std::vector<float> s(static_cast<size_t>(scale.NumElements()));
  std::memcpy(s.data(), scale.data, s.size() * 4);  // maybe unaligned in the mapping
  auto buf = std::make_unique<std::byte[]>(static_cast<size_t>(n * k) * 4);
  const absl::Status st =
      kernels::cpu::DequantizeRowMajor(reinterpret_cast<const int8_t*>(t.data), s.data(), n, k,
                                       group_size, reinterpret_cast<float*>(buf.get()));
  if (!st.ok())
    return absl::Status(st.code(), absl::StrCat("tensor '", t.name, "': ", st.message()));
  return buf;
}

// A [n, k] matrix in `compute`. int8: a stored int8 matrix packed as it is (`scale` its scales),
// a float one quantized here. Else packed for our kernel when the CPU runs it; else, for oneDNN,
// the mapped bytes when the dtype matches, or a converted copy (a stored int8 matrix dequantized
// to fp32 first). A copy lets the tensor's mapped pages go (a model is then resident once, not
// twice: falcon-mamba-7b in bf16 is 14.5 GB) unless `keep_mapped` (the embedding, whose rows
// lookups read from the mapping).
absl::StatusOr<CpuMatrix> MakeMatrix(const Checkpoint& ckpt, const TensorInfo& stored,
                                     const TensorInfo* scale, DType compute, CpuWeights* w,
                                     bool keep_mapped = false) {
  const int64_t n = stored.shape[0];
  const int64_t k = stored.NumElements() / n;
  CpuMatrix m;
  if (compute == DType::kI8) {
    if (stored.dtype == DType::kI8) {
      std::vector<float> s(static_cast<size_t>(scale->NumElements()));
      std::memcpy(s.data(), scale->data, s.size() * 4);
      absl::StatusOr<kernels::cpu::Int8Weight> p = kernels::cpu::PackInt8Weight(
          reinterpret_cast<const int8_t*>(stored.data), s.data(), n, k, w->int8_group_size);
      if (!p.ok()) {
        return absl::Status(p.status().code(),
                            absl::StrCat("tensor '", stored.name, "': ", p.status().message()));
      }
      m.int8 = std::move(*p);
    } else {
      MAMBA_ASSIGN_OR_RETURN(m.int8, kernels::cpu::QuantizeWeight(stored.data, stored.dtype, n, k,
                                                                  w->int8_group_size));
    }
    // The scales and the per-column offsets (the VNNI paths read both every step).
    const int64_t side_bytes =
        static_cast<int64_t>(m.int8.scales.size() * 4 + m.int8.offsets.size() * 4);
    w->gemm_bytes += m.int8.bytes + side_bytes;
    w->owned_bytes += m.int8.bytes + side_bytes;
    if (!keep_mapped) ckpt.ReleasePages(stored);
    return m;
  }
  TensorInfo t = stored;
  std::unique_ptr<std::byte[]> dequantized;
  if (stored.dtype == DType::kI8) {
    MAMBA_ASSIGN_OR_RETURN(dequantized, Dequantize(stored, *scale, w->int8_group_size));
    t.dtype = DType::kF32;
    t.data = dequantized.get();
    t.nbytes = static_cast<size_t>(n * k) * 4;
  }
  w->gemm_bytes += t.NumElements() * static_cast<int64_t>(kernels::SizeOf(compute));
  if (w->packed) {
    absl::StatusOr<kernels::cpu::PackedWeight> p =
        kernels::cpu::PackWeight(t.data, t.dtype, n, k, compute);
    if (!p.ok()) return p.status();
    w->owned_bytes += p->bytes;
    m.packed = std::move(*p);
  } else {
    m.plain = MakeGemmWeight(t, compute, w);
  }
  if (dequantized && m.plain.data == dequantized.get()) {  // fp32 for oneDNN: the copy is it
    w->owned_bytes += static_cast<int64_t>(t.nbytes);
    w->storage.push_back(std::move(dequantized));
  }
  if (!keep_mapped && m.plain.data != stored.data) ckpt.ReleasePages(stored);
  return m;
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

float MinusExp(float v) { return -std::exp(v); }

}  // namespace

absl::Status CpuMatrix::MatMul(const float* x, int64_t ldx, const float* bias, float* y,
                               int64_t ldy, int64_t m, bool accumulate) const {
  if (int8.data) {
    kernels::cpu::Int8GemmArgs a;
    a.x = x, a.ldx = ldx, a.w = &int8, a.bias = bias, a.y = y, a.ldy = ldy, a.m = m;
    a.accumulate = accumulate;
    return kernels::cpu::Int8Gemm(a);
  }
  if (packed.data) return kernels::cpu::PackedGemm({x, ldx, &packed, bias, y, ldy, m, accumulate});
  return kernels::cpu::Gemm({x, ldx, plain, bias, y, ldy, m, accumulate});
}

absl::StatusOr<std::unique_ptr<CpuWeights>> PrepareCpuWeights(const Checkpoint& ckpt, DType compute,
                                                              int64_t int8_group_size) {
  const ModelConfig& c = ckpt.config();
  auto w = std::make_unique<CpuWeights>();
  w->compute = compute;
  w->packed = compute != DType::kI8 && kernels::cpu::PackedGemmSupported(compute);
  w->int8_group_size = int8_group_size;
  if (const QuantizationInfo& q = ckpt.quantization(); q.int8) {
    // A quantized checkpoint keeps its grouping (the matrices it does not list are quantized
    // with it too when computing in int8).
    if (int8_group_size != 0 && int8_group_size != q.group_size && compute == DType::kI8) {
      NamedLogger("engine")->warn(
          "cpu: --int8-group-size {} ignored: the quantized checkpoint's group size is {}",
          int8_group_size, q.group_size);
    }
    w->int8_group_size = q.group_size;
  }
  w->embedding = &ckpt.embedding();
  MAMBA_ASSIGN_OR_RETURN(
      w->lm_head,
      MakeMatrix(ckpt, ckpt.lm_head() ? *ckpt.lm_head() : ckpt.embedding(), ckpt.lm_head_scale(),
                 compute, w.get(), /*keep_mapped=*/ckpt.lm_head() == nullptr));
  w->norm_f = ToF32(&ckpt.norm_f());
  if (c.mixer_rms_norm()) {
    w->mixer_norm_ones.assign(static_cast<size_t>(std::max(c.time_step_rank, c.state_size)), 1.0f);
  }
  const int64_t e = c.intermediate_size, n = c.state_size;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensors& t = ckpt.layer(i);
    CpuLayerWeights L;
    MAMBA_ASSIGN_OR_RETURN(L.in_proj,
                           MakeMatrix(ckpt, *t.in_proj, t.in_proj_scale, compute, w.get()));
    if (!c.is_mamba2()) {
      MAMBA_ASSIGN_OR_RETURN(L.x_proj,
                             MakeMatrix(ckpt, *t.x_proj, t.x_proj_scale, compute, w.get()));
      MAMBA_ASSIGN_OR_RETURN(L.dt_proj,
                             MakeMatrix(ckpt, *t.dt_proj, t.dt_proj_scale, compute, w.get()));
    }
    MAMBA_ASSIGN_OR_RETURN(L.out_proj,
                           MakeMatrix(ckpt, *t.out_proj, t.out_proj_scale, compute, w.get()));
    L.norm = ToF32(t.norm);
    L.in_proj_bias = ToF32(t.in_proj_bias);
    L.out_proj_bias = ToF32(t.out_proj_bias);
    L.conv = Transpose(ToF32(t.conv), c.conv_dim(), c.conv_kernel, [](float v) { return v; });
    L.conv_bias = ToF32(t.conv_bias);
    L.dt_bias = ToF32(t.dt_proj_bias);
    // Mamba-1's A_log is [d_inner, d_state] (transposed for the kernel), Mamba-2's one per head.
    L.a = c.is_mamba2() ? Transpose(ToF32(t.a_log), 1, c.num_heads, MinusExp)
                        : Transpose(ToF32(t.a_log), e, n, MinusExp);
    L.d = ToF32(t.d);
    L.gated_norm = ToF32(t.gated_norm);
    w->layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace mamba::engine::cpu
