#include "engine/cuda/cuda_weights.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

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

class Planner {
 public:
  // A matrix in dtype `to` (GEMM weight), straight from the checkpoint.
  template <typename P>
  void Matrix(const TensorInfo& t, DType to, const P** slot, int64_t* gemm_bytes) {
    const size_t bytes = static_cast<size_t>(t.NumElements()) * kernels::SizeOf(to);
    if (gemm_bytes) *gemm_bytes += static_cast<int64_t>(bytes);
    Add(bytes, slot, [&t, to](std::byte* dst) {
      return UploadConverted(dst, t.data, t.dtype, to, t.NumElements(), t.name);
    });
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
    total_ += (bytes + kAlign - 1) / kAlign * kAlign;
    entries_.push_back(std::move(e));
  }

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
                                                               DType compute) {
  const ModelConfig& c = ckpt.config();
  const int64_t e = c.intermediate_size, n = c.state_size, w = c.conv_kernel;
  auto weights = std::make_unique<CudaWeights>();
  CudaWeights& cw = *weights;
  cw.compute = compute;
  cw.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  Planner plan;
  // The embedding stays in its stored dtype (rows are converted on lookup, as on the CPU); the
  // head is the embedding itself when tied and already in the compute dtype.
  const TensorInfo& emb = ckpt.embedding();
  cw.embedding_dtype = emb.dtype;
  plan.Matrix(emb, emb.dtype, &cw.embedding, nullptr);
  const TensorInfo* head = ckpt.lm_head();
  const bool alias_head = head == nullptr && emb.dtype == compute;
  if (!alias_head) plan.Matrix(head ? *head : emb, compute, &cw.lm_head, &cw.gemm_bytes);
  plan.Floats(&ckpt.norm_f(), &cw.norm_f);
  if (c.mixer_rms_norm()) {
    plan.Constant(std::max(c.time_step_rank, c.state_size), 1.0f, &cw.mixer_norm_ones);
  }
  const bool m2 = c.is_mamba2();
  const int64_t conv_dim = c.conv_dim();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensors& t = ckpt.layer(i);
    CudaLayerWeights& L = cw.layers[static_cast<size_t>(i)];
    plan.Matrix(*t.in_proj, compute, &L.in_proj, &cw.gemm_bytes);
    if (!m2) {  // Mamba-2's dt, B and C come from in_proj
      plan.Matrix(*t.x_proj, compute, &L.x_proj, &cw.gemm_bytes);
      plan.Matrix(*t.dt_proj, DType::kF32, &L.dt_proj, &cw.gemm_bytes);
    }
    plan.Matrix(*t.out_proj, compute, &L.out_proj, &cw.gemm_bytes);
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
    cw.lm_head = cw.embedding;
    cw.gemm_bytes += emb.NumElements() * static_cast<int64_t>(kernels::SizeOf(compute));
  }
  return weights;
}

}  // namespace mamba::engine::cuda
