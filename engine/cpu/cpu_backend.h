// The CPU engine: HF MambaForCausalLM's math over packed chunks of several requests, with our
// AVX-512 packed GEMM (oneDNN where AVX-512 or the dtype's kernel is missing) and the vectorized
// conv/scan kernels; a decode step is the same path with 1-token chunks.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/cpu_lora.h"
#include "engine/cpu/cpu_weights.h"
#include "kernels/packed_chunks.h"

namespace mamba::engine::cpu {

class CpuBackend : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options);

  const ModelConfig& config() const override { return checkpoint_->config(); }
  std::string Describe() const override;
  BackendInfo info() const override;
  kernels::DType compute_dtype() const override { return weights_->compute; }
  int num_slots() const override { return options_.num_slots; }
  absl::Status Prefill(std::span<const ChunkInput> chunks, Logits* logits) override;
  absl::Status Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                      Logits* logits) override;
  absl::Status ResetSlot(SlotId slot) override;
  absl::Status CopySlot(SlotId from, SlotId to) override;
  int64_t state_floats() const override;
  absl::Status SaveSlot(SlotId slot, std::vector<float>* state) override;
  absl::Status RestoreSlot(SlotId slot, std::span<const float> state) override;
  std::vector<std::pair<std::string, double>> OpSeconds() const override;
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> LoadAdapter(
      const LoraAdapter& adapter) override;

  int64_t weight_bytes_per_token() const { return weights_->gemm_bytes; }

 private:
  enum Op {
    kEmbed,
    kNorm,
    kInProj,
    kConv,
    kXProj,
    kDtProj,
    kScan,
    kGatedNorm,
    kOutProj,
    kHead,
    kLora,
    kNumOps
  };

  CpuBackend(std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options,
             std::unique_ptr<CpuWeights> weights);
  // One pass over at most max_step_tokens tokens: `chunks` index rows of `tokens`; logits of
  // the token rows listed in `logit_rows` are written to `logits` from row `first_row` on.
  absl::Status Forward(std::span<const kernels::SeqChunk> chunks,
                       std::span<const AdapterWeights* const> adapters,
                       std::span<const TokenId> tokens, std::span<const int32_t> logit_rows,
                       Logits* logits, int64_t first_row);
  absl::Status RunLayer(int64_t layer, std::span<const kernels::SeqChunk> chunks, int64_t tokens);
  // Mamba-2's mixer after the shared norm and in_proj: conv over x|B|C -> multi-head scan ->
  // gated RMS norm -> out_proj.
  absl::Status RunMamba2Mixer(int64_t layer, std::span<const kernels::SeqChunk> chunks,
                              int64_t tokens);
  // The layer's LoRA update of module `t` (x: the GEMM's input, y: its output), if any row has one.
  void Lora(int64_t layer, LoraTarget t, const float* x, int64_t ldx, float* y, int64_t ldy);
  void ZeroSlot(int32_t slot);
  absl::Status CheckSlot(SlotId slot) const;

  std::shared_ptr<const Checkpoint> checkpoint_;
  BackendOptions options_;
  std::unique_ptr<CpuWeights> weights_;
  // State pools, per layer: conv [slots, d_conv-1, d_inner] and ssm [slots, d_state, d_inner]
  // (Mamba-2: conv [slots, d_conv-1, conv_dim], ssm [slots, heads, d_state, head_dim]).
  std::vector<float> conv_state_;
  std::vector<float> ssm_state_;
  int64_t conv_slot_floats_ = 0;  // per layer per slot
  int64_t ssm_slot_floats_ = 0;
  // Per-step scratch, sized for max_step_tokens rows.
  std::vector<float> residual_, normed_, xz_, xc_, dbc_, dt_, y_;
  LoraRowGroups lora_;  // this pass's rows by adapter
  std::array<double, kNumOps> op_seconds_{};
};

}  // namespace mamba::engine::cpu
