// LoRA adapters on the CUDA engine (issue 15): an adapter's matrices in device memory
// (CudaAdapterWeights, made by CudaBackend::LoadAdapter) and a pass's plan of which rows each
// site updates under which adapter (LoraPlan: the segment tables of kernels/cuda/lora.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/cuda/cuda_util.h"
#include "engine/lora/lora_adapter.h"
#include "engine/model_config.h"
#include "kernels/cuda/lora.h"
#include "kernels/packed_chunks.h"

namespace mamba::engine::cuda {

// Where a LoRA update is added. Layer l's module t (a per-layer LoraTarget) is site
// l * kNumLayerTargets + t; the embeddings and the LM head come after the layers.
inline int64_t LoraLayerSite(int64_t layer, LoraTarget t) {
  return layer * kNumLayerTargets + static_cast<int64_t>(t);
}
inline int64_t LoraEmbeddingsSite(int64_t layers) { return layers * kNumLayerTargets; }
inline int64_t LoraHeadSite(int64_t layers) { return layers * kNumLayerTargets + 1; }
inline int64_t LoraNumSites(int64_t layers) { return layers * kNumLayerTargets + 2; }

// One module on the device: A [rank, in] (embeddings: transposed, [vocab, rank], so that a
// token's column is contiguous), B [out, rank], fp32 as LoraAdapter holds them; scale is applied
// by the shrink. rank 0: the adapter has no such module.
struct CudaLoraModule {
  const float* a = nullptr;
  const float* b = nullptr;
  int32_t rank = 0;
  float scale = 0.0f;
};

class CudaAdapterWeights : public AdapterWeights {
 public:
  // Checks `adapter` against the model (layers, each module's shape, rank 1..kMaxLoraRank, no
  // x_proj/dt_proj on Mamba-2: InvalidArgument naming the module) and uploads it to `device` on
  // a stream of its own, synchronised before returning: it never waits for or joins the engine's
  // compute stream, so it may run on any thread while steps run. `owner` is the backend whose
  // passes may use it (Prefill refuses another backend's adapters).
  static absl::StatusOr<std::shared_ptr<const CudaAdapterWeights>> Upload(
      const LoraAdapter& adapter, const ModelConfig& config, int device, const void* owner);
  ~CudaAdapterWeights() override;  // frees its memory on its device, from any thread

  int64_t bytes() const override { return static_cast<int64_t>(memory_.bytes()); }
  const void* owner() const { return owner_; }
  // The module at `site` (LoraLayerSite, ...); rank 0 when absent.
  const CudaLoraModule& module(int64_t site) const { return modules_[static_cast<size_t>(site)]; }
  // All of them, [LoraNumSites(layers)] (LoraPlan::Build's input).
  const CudaLoraModule* modules() const { return modules_.data(); }

 private:
  CudaAdapterWeights() = default;
  int device_ = 0;
  const void* owner_ = nullptr;
  DeviceBuffer memory_;
  std::vector<CudaLoraModule> modules_;  // [LoraNumSites(layers)]
};

// One site's segments in LoraPlan::segments(): [offset, offset + count); max_rows sizes grids.
struct LoraSiteSegments {
  int64_t offset = 0;
  int64_t count = 0;
  int64_t max_rows = 0;
};

// A pass's segment tables. Layer and embedding sites index the pass's rows; the LM head's site
// indexes its logit rows (the head input is compacted to them). Neighbouring chunks on the same
// adapter share a segment; rows of the base model or of an adapter without the module get none.
class LoraPlan {
 public:
  // modules[i] is chunk i's adapter's module table (CudaAdapterWeights::modules(), one entry per
  // site of a model of `layers` layers); null: the base model. Chunks are in row order.
  void Build(std::span<const kernels::SeqChunk> chunks,
             std::span<const CudaLoraModule* const> modules, std::span<const int32_t> logit_rows,
             int64_t layers);
  bool empty() const { return segments_.empty(); }
  const std::vector<kernels::cuda::LoraSegment>& segments() const { return segments_; }
  const LoraSiteSegments& site(int64_t s) const { return sites_[static_cast<size_t>(s)]; }

 private:
  std::vector<kernels::cuda::LoraSegment> segments_;
  std::vector<LoraSiteSegments> sites_;
};

}  // namespace mamba::engine::cuda
