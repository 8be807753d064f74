// CudaBackend's LoRA adapters (issue 15): loading, the per-chunk adapter check, and the shrink /
// expand launches at each site of a prefill pass (the sites themselves are in cuda_forward.cc
// and cuda_mamba2.cc).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_lora.h"
#include "engine/status_macros.h"
#include "kernels/cuda/lora.h"

namespace mamba::engine::cuda {

namespace kc = kernels::cuda;

absl::StatusOr<std::shared_ptr<const AdapterWeights>> CudaBackend::LoadAdapter(
    const LoraAdapter& adapter) {
  // Only immutable members are read here (config, device, this): a step may be running.
  MAMBA_ASSIGN_OR_RETURN(std::shared_ptr<const CudaAdapterWeights> w,
                         CudaAdapterWeights::Upload(adapter, config(), device_, this));
  return std::shared_ptr<const AdapterWeights>(std::move(w));
}

absl::Status CudaBackend::CheckAdapters(std::span<const ChunkInput> chunks) const {
  for (size_t i = 0; i < chunks.size(); ++i) {
    const AdapterWeights* a = chunks[i].adapter;
    if (a == nullptr) continue;
    const auto* w = dynamic_cast<const CudaAdapterWeights*>(a);
    if (w == nullptr || w->owner() != this) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", i, ": its LoRA adapter was not loaded by this CUDA engine (",
                       w == nullptr ? "another backend's" : "another CudaBackend's", ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::UploadLoraPlan() {
  const auto& segs = lora_plan_->segments();
  const size_t bytes = segs.size() * sizeof(kc::LoraSegment);
  if (bytes == 0) return absl::OkStatus();
  // Between passes: the previous pass synchronised, so nothing reads the old buffers.
  if (lora_segments_dev_.bytes() < bytes) {
    const size_t grown = std::max(bytes, 2 * lora_segments_dev_.bytes());
    lora_segments_dev_ = DeviceBuffer();
    lora_segments_stage_ = PinnedBuffer();
    MAMBA_ASSIGN_OR_RETURN(lora_segments_dev_, DeviceBuffer::Allocate(grown, "LoRA segment table"));
    MAMBA_ASSIGN_OR_RETURN(lora_segments_stage_,
                           PinnedBuffer::Allocate(grown, "LoRA segment table"));
  }
  std::memcpy(lora_segments_stage_.get(), segs.data(), bytes);
  return Launched(cudaMemcpyAsync(lora_segments_dev_.get(), lora_segments_stage_.get(), bytes,
                                  cudaMemcpyHostToDevice, stream_),
                  "cudaMemcpyAsync(LoRA segments)", -1, kNumOps);
}

namespace {

// The expand launch of a site: y[rows] += t B^T for its segments (t: the shrink's output).
kc::LoraExpandArgs ExpandArgs(const LoraSiteSegments& s, const kc::LoraSegment* segs, float* t,
                              float* y, int64_t ldy, int64_t out) {
  kc::LoraExpandArgs ex;
  ex.t = t;
  ex.ldt = kc::kMaxLoraRank;
  ex.segments = segs;
  ex.num_segments = s.count;
  ex.max_rows = s.max_rows;
  ex.y = y;
  ex.ldy = ldy;
  ex.out = out;
  return ex;
}

}  // namespace

absl::Status CudaBackend::ApplyLora(const PassShape& p, int64_t site, const void* x,
                                    kernels::DType x_dtype, int64_t ldx, int64_t in, float* y,
                                    int64_t ldy, int64_t out, const char* name, int64_t layer) {
  if (p.lora == nullptr) return absl::OkStatus();
  const LoraSiteSegments& s = p.lora->site(site);
  if (s.count == 0) return absl::OkStatus();
  const auto* segs = lora_segments_dev_.as<const kc::LoraSegment>() + s.offset;
  kc::LoraShrinkArgs sh;
  sh.x = x;
  sh.x_dtype = x_dtype;
  sh.ldx = ldx;
  sh.in = in;
  sh.segments = segs;
  sh.num_segments = s.count;
  sh.max_rows = s.max_rows;
  sh.t = lora_t_.as<float>();
  sh.ldt = kc::kMaxLoraRank;
  MAMBA_RETURN_IF_ERROR(Launched(kc::LoraShrink(sh, stream_), name, layer, kLora));
  return Launched(kc::LoraExpand(ExpandArgs(s, segs, lora_t_.as<float>(), y, ldy, out), stream_),
                  name, layer, kLora);
}

absl::Status CudaBackend::ApplyEmbeddingLora(const PassShape& p) {
  if (p.lora == nullptr) return absl::OkStatus();
  const ModelConfig& c = config();
  const LoraSiteSegments& s = p.lora->site(LoraEmbeddingsSite(c.num_hidden_layers));
  if (s.count == 0) return absl::OkStatus();
  const auto* segs = lora_segments_dev_.as<const kc::LoraSegment>() + s.offset;
  kc::LoraEmbeddingShrinkArgs sh;
  sh.tokens = tokens_dev_.as<int32_t>();
  sh.vocab = c.vocab_size;
  sh.segments = segs;
  sh.num_segments = s.count;
  sh.max_rows = s.max_rows;
  sh.t = lora_t_.as<float>();
  sh.ldt = kc::kMaxLoraRank;
  MAMBA_RETURN_IF_ERROR(
      Launched(kc::LoraEmbeddingShrink(sh, stream_), "embeddings LoRA", -1, kLora));
  return Launched(kc::LoraExpand(ExpandArgs(s, segs, lora_t_.as<float>(), residual_.as<float>(),
                                            c.hidden_size, c.hidden_size),
                                 stream_),
                  "embeddings LoRA", -1, kLora);
}

}  // namespace mamba::engine::cuda
