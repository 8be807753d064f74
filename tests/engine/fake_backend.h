// A tiny deterministic model behind the Backend interface, for tests and benchmarks of
// everything above the backend (scheduler, batching loop, engine, fuzz harnesses): a slot's
// state is a hash of every token it consumed since its start, and the logits are a fixed
// function of that hash. So chunked prefill equals token-by-token decode, CopySlot forks
// exactly, and any mix-up of slots or tokens changes the output. It records each call's chunks.
// LoRA adapters (LoadAdapter) salt each token's step with a hash of the adapter's fingerprint,
// so a token fed under another adapter (or the base model) gives another state.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend.h"

namespace mamba::engine::testing {

struct FakeBackendOptions {
  int64_t vocab_size = 64;
  std::vector<int64_t> eos_token_ids = {0};
  int num_slots = 4;
  // Logits peak (by `peak`) on one token per state; the rest spread over [0, 1).
  float peak = 8.0f;
  bool record_calls = true;  // off for long benchmark runs
};

class FakeBackend : public Backend {
 public:
  explicit FakeBackend(const FakeBackendOptions& options = {});
  // A config with the model shape of `config` (vocabulary, eos ids) and its own slot count.
  FakeBackend(const ModelConfig& config, int num_slots);

  const ModelConfig& config() const override { return config_; }
  std::string Describe() const override { return "fake: deterministic hash model"; }
  BackendInfo info() const override;
  kernels::DType compute_dtype() const override { return kernels::DType::kF32; }
  int num_slots() const override { return static_cast<int>(state_.size()); }
  absl::Status Prefill(std::span<const ChunkInput> chunks, Logits* logits) override;
  absl::Status Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                      Logits* logits) override;
  absl::Status ResetSlot(SlotId slot) override;
  absl::Status CopySlot(SlotId from, SlotId to) override;
  int64_t state_floats() const override { return 2; }  // the 64-bit hash, bit for bit
  absl::Status SaveSlot(SlotId slot, std::vector<float>* state) override;
  absl::Status RestoreSlot(SlotId slot, std::span<const float> state) override;
  // Unimplemented after set_lora(false), as a backend without LoRA support.
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> LoadAdapter(
      const LoraAdapter& adapter) override;

  // The logits row a state gives (what Prefill returns for it).
  void LogitsOf(uint64_t state, std::span<float> row) const;
  uint64_t state(SlotId slot) const { return state_[static_cast<size_t>(slot.value)]; }
  static uint64_t Next(uint64_t state, TokenId token);
  // A token's step under an adapter of salt `salt` (0: the base model, = Next).
  static uint64_t Next(uint64_t state, TokenId token, uint64_t salt);
  // The salt of adapters with this fingerprint, and of one this backend laid out (0: null).
  static uint64_t SaltOf(const std::string& fingerprint);
  static uint64_t SaltOf(const AdapterWeights* weights);

  // Every Prefill call so far: (slot, tokens, start, want_logits) per chunk.
  struct Call {
    struct Chunk {
      int32_t slot;
      std::vector<TokenId> tokens;
      bool start, want_logits;
      const AdapterWeights* adapter = nullptr;
    };
    std::vector<Chunk> chunks;
  };
  const std::vector<Call>& calls() const { return calls_; }
  void FailNextCall(absl::Status status) { fail_next_ = std::move(status); }
  void set_lora(bool on) { lora_ = on; }
  void FailNextLoadAdapter(absl::Status status) { fail_next_load_ = std::move(status); }
  // Called inside LoadAdapter (on the loading thread) before it returns: tests hold a load
  // half way with it.
  void set_load_adapter_hook(std::function<void()> hook) { load_hook_ = std::move(hook); }

 private:
  ModelConfig config_;
  float peak_;
  bool record_calls_ = true;
  std::vector<uint64_t> state_;
  std::vector<Call> calls_;
  absl::Status fail_next_;
  bool lora_ = true;
  absl::Status fail_next_load_;
  std::function<void()> load_hook_;
};

}  // namespace mamba::engine::testing
