// LoRA adapters on the CPU engine (issue 15): an adapter laid out for kernels/cpu/lora.h, and a
// pass's rows grouped by adapter, so each layer runs the base GEMM once over all rows and then
// each adapter's low-rank update over its own rows.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/lora/lora_adapter.h"
#include "kernels/cpu/lora.h"
#include "kernels/packed_chunks.h"

namespace mamba::engine::cpu {

struct CpuLoraModule {
  int64_t rank = 0, in = 0, out = 0;
  std::vector<float> a;   // [rank, in]; the embeddings' [vocab, rank] (lora_embedding_A^T)
  std::vector<float> bt;  // [rank, out]: lora_B^T x scale
};

class CpuAdapterWeights : public AdapterWeights {
 public:
  static absl::StatusOr<std::shared_ptr<const CpuAdapterWeights>> Make(const LoraAdapter& adapter,
                                                                       const ModelConfig& config);
  const CpuLoraModule* layer(int64_t l, LoraTarget t) const {
    const auto& m = layers_[static_cast<size_t>(l)][static_cast<size_t>(t)];
    return m ? &*m : nullptr;
  }
  const CpuLoraModule* embeddings() const { return embeddings_ ? &*embeddings_ : nullptr; }
  const CpuLoraModule* lm_head() const { return lm_head_ ? &*lm_head_ : nullptr; }
  int64_t bytes() const override { return bytes_; }

 private:
  std::vector<std::array<std::optional<CpuLoraModule>, kNumLayerTargets>> layers_;
  std::optional<CpuLoraModule> embeddings_, lm_head_;
  int64_t bytes_ = 0;
};

// The rows of one pass that run under each adapter (rows under none are left out).
class LoraRowGroups {
 public:
  // Token rows, from the pass's chunks and their adapters (Pass::adapters). InvalidArgument for
  // an adapter another backend made.
  absl::Status Build(std::span<const kernels::SeqChunk> chunks,
                     std::span<const AdapterWeights* const> adapters);
  // The LM head's rows: row i is token row logit_rows[i]. Call after Build.
  void BuildHead(std::span<const int32_t> logit_rows, int64_t tokens);
  bool empty() const { return groups_.empty(); }

  // y[rows] += the layer's `t` update of x[rows], for every adapter having one.
  void Apply(int64_t layer, LoraTarget t, const float* x, int64_t ldx, float* y, int64_t ldy);
  // The embeddings' update of every token row.
  void ApplyEmbeddings(std::span<const TokenId> tokens, float* y, int64_t ldy) const;
  // The LM head's update of the gathered rows (BuildHead).
  void ApplyHead(const float* x, int64_t ldx, float* y, int64_t ldy);

 private:
  using Groups = std::vector<std::pair<const CpuAdapterWeights*, std::vector<int32_t>>>;
  Groups groups_, head_groups_;
  std::vector<const CpuAdapterWeights*> row_adapter_;  // per token row (Build)
  std::vector<kernels::cpu::LoraRowsArgs> updates_;    // Apply's and ApplyHead's, reused
};

}  // namespace mamba::engine::cpu
