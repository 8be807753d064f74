#include "engine/cuda/cuda_weights.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/logging.h"
#include "engine/status_macros.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/threading.h"
#include "kernels/cuda/int8_gemm.h"

namespace mamba::engine::cuda {
namespace {

using kernels::DType;

constexpr size_t kAlign = 256;
constexpr int64_t kUploadBlockElements = int64_t{8} << 20;  // host conversion block

// One tensor to place in the arena: `bytes` at `offset`, written by `upload(device_ptr)`;
// `bind(device_ptr)` stores the pointer where the engine finds it.
struct Entry {
  size_t offset = 0;
  std::function<absl::Status(std::byte*)> upload;
  std::function<void(std::byte*)> bind;
};

std::vector<float> ToF32(const TensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.NumElements()));
  kernels::ConvertToF32(t.data, t.dtype, v.data(), t.NumElements());
  return v;
}

absl::Status CopyToDevice(std::byte* dst, const void* src, size_t bytes, const std::string& name) {
  return CudaStatus(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice),
                    absl::StrCat("upload of ", name));
}

// Converts `count` elements from `src` (stored as `from`) to `to`, block by block, and copies
// them to dst. Same dtype: one copy straight from the mapped file.
absl::Status UploadConverted(std::byte* dst, const std::byte* src, DType from, DType to,
                             int64_t count, const std::string& name) {
  if (from == to)
    return CopyToDevice(dst, src, static_cast<size_t>(count) * kernels::SizeOf(to), name);
  std::vector<float> f32;
  std::vector<uint16_t> half;
  for (int64_t at = 0; at < count; at += kUploadBlockElements) {
    const int64_t n = std::min(kUploadBlockElements, count - at);
    f32.resize(static_cast<size_t>(n));
    kernels::ConvertToF32(src + at * static_cast<int64_t>(kernels::SizeOf(from)), from, f32.data(),
                          n);
    const void* host = f32.data();
    if (to != DType::kF32) {
      half.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        half[static_cast<size_t>(i)] = to == DType::kBF16
                                           ? kernels::F32ToBf16(f32[static_cast<size_t>(i)])
                                           : kernels::F32ToF16(f32[static_cast<size_t>(i)]);
      }
      host = half.data();
    }
    MAMBA_RETURN_IF_ERROR(CopyToDevice(dst + at * static_cast<int64_t>(kernels::SizeOf(to)), host,
                                       static_cast<size_t>(n) * kernels::SizeOf(to), name));
  }
  return absl::OkStatus();
}

// [n, k] of a weight stored as [n, ...] (a Linear's [out, in]).
void MatrixShape(const TensorInfo& t, DeviceMatrix* m) {
  m->n = t.shape.empty() ? 1 : t.shape[0];
  m->k = m->n > 0 ? t.NumElements() / m->n : 0;
}

// The inputs per scale the GPU kernels read for the CPU engine's grouping (QuantizeRowMajor,
// a quantized checkpoint): at most k rounded up to 4 (k_pad), as Int8GroupCount and
// NewInt8Weight cap it, so that ceil(k / group) cannot overflow; group_size 0 is one group over
// k_pad, read as any group size >= k.
int64_t Int8Group(int64_t k, int64_t group_size) {
  const int64_t k_pad = (k + 3) / 4 * 4;
  return group_size > 0 ? std::min(group_size, k_pad) : k_pad;
}

// What PackInt8Weight refuses on the CPU: -128 (symmetric int8 is [-127, 127]).
absl::Status RefuseMinus128(const TensorInfo& t, const int8_t* q, int64_t n, int64_t k) {
  const int8_t* at = std::find(q, q + n * k, int8_t{-128});
  if (at == q + n * k) return absl::OkStatus();
  const int64_t i = at - q;
  return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': int8 value -128 at [",
                                                 i / k, ", ", i % k,
                                                 "] (symmetric int8 is [-127, 127])"));
}

class Planner {
 public:
  // A tensor converted to dtype `to` (the embedding), straight from the checkpoint.
  void Raw(const TensorInfo& t, DType to, const void** slot) {
    const size_t bytes = static_cast<size_t>(t.NumElements()) * kernels::SizeOf(to);
    Add(bytes, slot, [&t, to](std::byte* dst) {
      return UploadConverted(dst, t.data, t.dtype, to, t.NumElements(), t.name);
    });
  }
  // A GEMM weight in dtype `to` (fp32/bf16/fp16), straight from the checkpoint; a stored int8
  // one (`scale` its scales, `group_size` the checkpoint's) dequantized on the host first.
  void Matrix(const TensorInfo& t, const TensorInfo* scale, int64_t group_size, DType to,
              DeviceMatrix* m, int64_t* gemm_bytes) {
    MatrixShape(t, m);
    m->dtype = to;
    m->x_dtype = to;
    *gemm_bytes += t.NumElements() * static_cast<int64_t>(kernels::SizeOf(to));
    if (t.dtype != DType::kI8) return Raw(t, to, &m->data);
    const int64_t n = m->n, k = m->k, group = Int8Group(k, group_size),
                  groups = kernels::cpu::Int8GroupCount(k, group);
    Add(static_cast<size_t>(n * k) * kernels::SizeOf(to), &m->data,
        [&t, scale, n, k, group, groups, to](std::byte* dst) -> absl::Status {
          if (scale == nullptr || groups < 1 ||
              scale->nbytes != static_cast<size_t>(n * groups) * 4) {
            return absl::InternalError(
                absl::StrCat(t.name, ": scales missing or not [", n, ", ", groups, "] fp32"));
          }
          std::vector<float> s(static_cast<size_t>(n * groups)), w(static_cast<size_t>(n * k));
          std::memcpy(s.data(), scale->data, s.size() * 4);  // maybe unaligned
          const absl::Status st = kernels::cpu::DequantizeRowMajor(
              reinterpret_cast<const int8_t*>(t.data), s.data(), n, k, group, w.data());
          if (!st.ok()) {
            return absl::Status(st.code(), absl::StrCat("tensor '", t.name, "': ", st.message()));
          }
          return UploadConverted(dst, reinterpret_cast<const std::byte*>(w.data()), DType::kF32, to,
                                 n * k, t.name);
        });
  }
  // An int8 GEMM weight, q [n, k] then its scales [n, groups] in one arena entry: a float
  // tensor quantized at upload as the CPU engine quantizes it, or a stored int8 one (`scale` its
  // scales) copied as it is. `x_dtype` is the dtype of its inputs (for the workspace of the
  // larger-m path).
  void Int8Matrix(const TensorInfo& t, const TensorInfo* scale, int64_t group_size, DType x_dtype,
                  DeviceMatrix* m, int64_t* gemm_bytes, size_t* workspace_bytes) {
    MatrixShape(t, m);
    m->dtype = DType::kI8;
    m->x_dtype = x_dtype;
    m->group_size = Int8Group(m->k, group_size);
    const int64_t n = m->n, k = m->k, groups = kernels::cpu::Int8GroupCount(k, group_size);
    const size_t q_bytes = static_cast<size_t>(n * k), at_scales = AlignUp(q_bytes),
                 s_bytes = static_cast<size_t>(n * groups) * 4;
    *gemm_bytes += static_cast<int64_t>(q_bytes + s_bytes);
    *workspace_bytes =
        std::max(*workspace_bytes, kernels::cuda::Int8GemmWorkspaceBytes(n, k, x_dtype));
    Entry e;
    e.offset = total_;
    e.upload = [&t, scale, n, k, groups, group_size, at_scales,
                s_bytes](std::byte* dst) -> absl::Status {
      if (t.dtype == DType::kI8) {
        if (scale == nullptr || scale->nbytes != s_bytes) {
          return absl::InternalError(
              absl::StrCat(t.name, ": scales missing or not [", n, ", ", groups, "] fp32"));
        }
        // What PackInt8Weight refuses on the CPU: -128 and negative or non-finite scales.
        const auto* q = reinterpret_cast<const int8_t*>(t.data);
        MAMBA_RETURN_IF_ERROR(RefuseMinus128(t, q, n, k));
        std::vector<float> s(static_cast<size_t>(n * groups));
        std::memcpy(s.data(), scale->data, s_bytes);  // maybe unaligned
        for (float v : s) {
          if (!(v >= 0.0f) || !std::isfinite(v)) {
            return absl::InvalidArgumentError(absl::StrCat(
                "tensor '", scale->name, "': a negative or non-finite scale (", v, ")"));
          }
        }
        MAMBA_RETURN_IF_ERROR(CopyToDevice(dst, q, static_cast<size_t>(n * k), t.name));
        return CopyToDevice(dst + at_scales, s.data(), s_bytes, scale->name);
      }
      std::vector<int8_t> q(static_cast<size_t>(n * k));
      std::vector<float> scales(static_cast<size_t>(n * groups));
      MAMBA_RETURN_IF_ERROR(kernels::cpu::QuantizeRowMajor(t.data, t.dtype, n, k, group_size,
                                                           q.data(), scales.data()));
      MAMBA_RETURN_IF_ERROR(CopyToDevice(dst, q.data(), q.size(), t.name));
      return CopyToDevice(dst + at_scales, scales.data(), scales.size() * 4,
                          absl::StrCat(t.name, " (int8 scales)"));
    };
    e.bind = [m, at_scales](std::byte* p) {
      m->data = p;
      m->scales = reinterpret_cast<const float*>(p + at_scales);
    };
    total_ += AlignUp(at_scales + s_bytes);
    entries_.push_back(std::move(e));
  }
  // An fp32 tensor computed on the host (small: norms, conv, A, biases); null tensor -> null.
  void Floats(const TensorInfo* t, const float** slot,
              std::function<std::vector<float>(const TensorInfo&)> make = ToF32) {
    if (t == nullptr) return;
    const size_t bytes = static_cast<size_t>(t->NumElements()) * 4;
    Add(bytes, slot, [t, make, bytes](std::byte* dst) {
      const std::vector<float> v = make(*t);
      return CopyToDevice(dst, v.data(), bytes, t->name);
    });
  }

  // `count` floats of `value`.
  void Constant(int64_t count, float value, const float** slot) {
    const size_t bytes = static_cast<size_t>(count) * 4;
    Add(bytes, slot, [count, value, bytes](std::byte* dst) {
      const std::vector<float> v(static_cast<size_t>(count), value);
      return CopyToDevice(dst, v.data(), bytes, "constant");
    });
  }

  absl::Status Run(DeviceBuffer* arena) {
    MAMBA_ASSIGN_OR_RETURN(*arena, DeviceBuffer::Allocate(total_, "model weights"));
    auto* base = arena->as<std::byte>();
    for (Entry& e : entries_) {
      MAMBA_RETURN_IF_ERROR(e.upload(base + e.offset));
      e.bind(base + e.offset);
    }
    return absl::OkStatus();
  }

 private:
  template <typename P>
  void Add(size_t bytes, const P** slot, std::function<absl::Status(std::byte*)> upload) {
    Entry e;
    e.offset = total_;
    e.upload = std::move(upload);
    e.bind = [slot](std::byte* p) { *slot = static_cast<const P*>(static_cast<void*>(p)); };
    total_ += AlignUp(bytes);
    entries_.push_back(std::move(e));
  }
  static size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

  std::vector<Entry> entries_;
  size_t total_ = 0;
};

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

absl::StatusOr<std::unique_ptr<CudaWeights>> UploadCudaWeights(const Checkpoint& ckpt,
                                                               DType weight_dtype,
                                                               int64_t int8_group_size) {
  const ModelConfig& c = ckpt.config();
  const int64_t e = c.intermediate_size, n = c.state_size, w = c.conv_kernel;
  const bool int8 = weight_dtype == DType::kI8;
  if (int8 && (int8_group_size < 0 || int8_group_size % 4 != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("int8 group size ", int8_group_size,
                                                   ": 0 (a scale per row) or a multiple of 4"));
  }
  // A quantized checkpoint keeps its grouping (matrices it does not list are quantized with it
  // too when computing in int8).
  if (const QuantizationInfo& qi = ckpt.quantization(); qi.int8) {
    if (int8 && int8_group_size != 0 && int8_group_size != qi.group_size) {
      NamedLogger("cuda")->warn(
          "cuda: --int8-group-size {} ignored: the quantized checkpoint's group size is {}",
          int8_group_size, qi.group_size);
    }
    int8_group_size = qi.group_size;
  }
  auto weights = std::make_unique<CudaWeights>();
  CudaWeights& cw = *weights;
  cw.weights = weight_dtype;
  cw.compute = int8 ? DType::kBF16 : weight_dtype;
  cw.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  Planner plan;
  // A GEMM weight in the weights' dtype (quantized at upload for int8, unless stored so).
  auto gemm_matrix = [&](const TensorInfo& t, const TensorInfo* scale, DeviceMatrix* m) {
    if (int8) {
      plan.Int8Matrix(t, scale, int8_group_size, cw.compute, m, &cw.gemm_bytes,
                      &cw.int8_workspace_bytes);
    } else {
      plan.Matrix(t, scale, int8_group_size, weight_dtype, m, &cw.gemm_bytes);
    }
  };
  // The embedding stays in its stored dtype (rows are converted on lookup, as on the CPU); the
  // head is the embedding itself when tied and already in the weights' dtype.
  const TensorInfo& emb = ckpt.embedding();
  cw.embedding_dtype = emb.dtype;
  plan.Raw(emb, emb.dtype, &cw.embedding);
  const TensorInfo* head = ckpt.lm_head();
  const bool alias_head = head == nullptr && emb.dtype == weight_dtype;
  if (!alias_head) gemm_matrix(head ? *head : emb, ckpt.lm_head_scale(), &cw.lm_head);
  plan.Floats(&ckpt.norm_f(), &cw.norm_f);
  if (c.mixer_rms_norm()) {
    plan.Constant(std::max(c.time_step_rank, c.state_size), 1.0f, &cw.mixer_norm_ones);
  }
  const bool m2 = c.is_mamba2();
  const int64_t conv_dim = c.conv_dim();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensors& t = ckpt.layer(i);
    CudaLayerWeights& L = cw.layers[static_cast<size_t>(i)];
    gemm_matrix(*t.in_proj, t.in_proj_scale, &L.in_proj);
    if (!m2) {  // Mamba-2's dt, B and C come from in_proj
      gemm_matrix(*t.x_proj, t.x_proj_scale, &L.x_proj);
      // fp32 in the float dtypes; int8 with int8 weights, quantized at load like the other
      // matrices (or as stored), as the CPU engine does, so that a quantized checkpoint computes
      // what --dtype int8 on its original computes. Its input, x_proj's output, is fp32.
      if (int8) {
        plan.Int8Matrix(*t.dt_proj, t.dt_proj_scale, int8_group_size, DType::kF32, &L.dt_proj,
                        &cw.gemm_bytes, &cw.int8_workspace_bytes);
      } else {
        plan.Matrix(*t.dt_proj, t.dt_proj_scale, int8_group_size, DType::kF32, &L.dt_proj,
                    &cw.gemm_bytes);
      }
    }
    gemm_matrix(*t.out_proj, t.out_proj_scale, &L.out_proj);
    plan.Floats(t.norm, &L.norm);
    plan.Floats(t.in_proj_bias, &L.in_proj_bias);
    plan.Floats(t.out_proj_bias, &L.out_proj_bias);
    plan.Floats(t.conv, &L.conv, [conv_dim, w](const TensorInfo& ti) {
      return Transpose(ToF32(ti), conv_dim, w, [](float v) { return v; });
    });
    plan.Floats(t.conv_bias, &L.conv_bias);
    plan.Floats(t.dt_proj_bias, &L.dt_bias);
    // Mamba-1's A_log is [d_inner, d_state] (transposed for the kernel), Mamba-2's one per head.
    const int64_t a_rows = m2 ? 1 : e, a_cols = m2 ? c.num_heads : n;
    plan.Floats(t.a_log, &L.a, [a_rows, a_cols](const TensorInfo& ti) {
      return Transpose(ToF32(ti), a_rows, a_cols, [](float v) { return -std::exp(v); });
    });
    plan.Floats(t.d, &L.d);
    plan.Floats(t.gated_norm, &L.gated_norm);
  }
  MAMBA_RETURN_IF_ERROR(plan.Run(&cw.arena));
  // cudaMemcpy from pageable memory may return before its DMA lands, and the engine's stream
  // does not wait for the legacy stream: wait here.
  MAMBA_RETURN_IF_ERROR(CudaStatus(cudaDeviceSynchronize(), "weight upload"));
  ckpt.ReleaseAllPages();  // every tensor now lives on the device
  if (alias_head) {
    MatrixShape(emb, &cw.lm_head);
    cw.lm_head.data = cw.embedding;
    cw.lm_head.dtype = weight_dtype;
    cw.lm_head.x_dtype = weight_dtype;
    cw.gemm_bytes += emb.NumElements() * static_cast<int64_t>(kernels::SizeOf(weight_dtype));
  }
  return weights;
}

}  // namespace mamba::engine::cuda
