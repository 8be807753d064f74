// The Backend interface: runs the model over state slots. Prefill consumes chunks of several
// requests in one call (each continuing from its slot's state); Decode consumes one token per
// slot. Both return last-token logits (Prefill: every token's for chunks that ask) and leave each
// slot's state after its last token.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/model_config.h"
#include "engine/sampling.h"
#include "engine/types.h"
#include "kernels/dtype.h"

namespace mamba::engine {

// The dtype weights are used in for compute; activations and the recurrent state stay fp32.
// kInt8: the large GEMM weights (in_proj, x_proj, dt_proj, out_proj, LM head) as symmetric int8
// with fp32 scales (quantized at load, or as a quantized checkpoint stores them); the embedding
// table, norms, conv, A, D and biases keep their stored dtype / fp32.
enum class ComputeDType { kAuto, kFloat32, kBFloat16, kFloat16, kInt8 };
absl::StatusOr<ComputeDType> ParseComputeDType(
    std::string_view name);  // auto|float32|bfloat16|float16|int8
const char* Name(ComputeDType t);

inline constexpr int kDefaultCpuSlots = 16;

struct BackendOptions {
  std::string device = "auto";               // auto | cpu | cuda[:N]
  ComputeDType dtype = ComputeDType::kAuto;  // auto = the checkpoint's stored dtype
  int num_threads = 0;                       // CPU threads; 0 = all cores
  // State slots (concurrent sequences). 0 = automatic: CUDA fills the device memory left after
  // the weights; the CPU engine takes kDefaultCpuSlots, fewer when their states would take more
  // than a quarter of memory_bytes (a Mamba-Codestral-7B state is 276 MB).
  int num_slots = 16;
  // The host memory this process may use (0: unknown, not checked). The CPU engine refuses a slot
  // count whose states alone would exceed it: better a clear error at start-up than the OOM
  // killer on the first busy minute.
  int64_t memory_bytes = 0;
  int64_t max_step_tokens = 2048;  // scratch size; larger calls are split internally
  bool profile = false;            // accumulate time per op (see Backend::OpSeconds)
  // int8 weights quantized at load: inputs per fp32 scale, a multiple of 4 (0: one scale per
  // output row). A quantized checkpoint keeps the grouping it was written with.
  int64_t int8_group_size = 0;
};

// What a running backend is, for logs, /v1/models, ModelInfo and metrics: read it instead of
// parsing Describe().
struct BackendInfo {
  std::string device;       // "cpu", "cuda:0", ... (as the front ends report it)
  std::string device_name;  // e.g. "NVIDIA H100 80GB HBM3"; the CPU model name on the CPU
  kernels::DType dtype = kernels::DType::kF32;  // the weights' compute dtype
  int slots = 0;                                // state slots (concurrent sequences)
  int threads = 0;                              // CPU threads (0 on a GPU)
  std::string description;                      // Describe(): one line for logs
  std::string model_fingerprint;  // Checkpoint::fingerprint(): which model a state belongs to
};

class LoraAdapter;

// A LoRA adapter's weights as one backend holds them (its memory, its kernels' layout), made by
// Backend::LoadAdapter. Chunks name theirs by pointer; it must outlive every call that uses it.
class AdapterWeights {
 public:
  virtual ~AdapterWeights() = default;
  virtual int64_t bytes() const = 0;  // memory it holds (host or device)
};

// How the batching loop runs a step's decode rows. kAuto: as the backend prefers
// (Backend::fast_decode). kDecode: through Backend::DecodeAndDraw (rows whose sampler can
// offload are drawn by the backend, the rest sampled on the host), except rows under a LoRA
// adapter, which stay one-token prefill chunks; kPrefill: as one-token chunks of the step's
// Prefill call, with the prompt chunks.
enum class DecodePath { kAuto, kPrefill, kDecode };
absl::StatusOr<DecodePath> ParseDecodePath(std::string_view name);  // auto|prefill|decode

struct ChunkInput {
  SlotId slot;
  std::span<const TokenId> tokens;  // at least one
  bool start = false;               // a new sequence: zero the slot's state first
  bool want_logits = true;          // return the last token's logits (false mid-prompt)
  // Return one row per token of this chunk (position i's row predicts token i + 1), e.g. for
  // prompt log-probs; overrides want_logits. Only these rows pass the LM head, so chunks that
  // do not ask cost nothing extra.
  bool all_logits = false;
  // The LoRA adapter applied to this chunk's tokens (engine/lora/lora_adapter.h), made by this
  // backend's LoadAdapter; null: the base model. Chunks of one call may name different ones.
  const AdapterWeights* adapter = nullptr;
  int64_t logit_rows() const {
    return all_logits ? static_cast<int64_t>(tokens.size()) : want_logits ? 1 : 0;
  }
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const ModelConfig& config() const = 0;
  virtual std::string Describe() const = 0;  // e.g. "cpu: bfloat16, 2 threads, AVX-512"
  virtual BackendInfo info() const = 0;
  virtual kernels::DType compute_dtype() const = 0;
  virtual int num_slots() const = 0;

  // Runs every chunk; logits gets ChunkInput::logit_rows() rows per chunk (one for want_logits,
  // one per token for all_logits), chunk after chunk in order. Slots must be
  // distinct within a call; token ids must be in [0, vocab_size).
  virtual absl::Status Prefill(std::span<const ChunkInput> chunks, Logits* logits) = 0;
  // One token for each slot (distinct); logits gets one row per slot, in order.
  virtual absl::Status Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                              Logits* logits) = 0;
  // Whether the engine should send a step's decode rows through DecodeAndDraw rather than as
  // one-token Prefill chunks: where decode has a faster path of its own (CUDA: slot-indexed
  // state updates, CUDA graphs per batch size, sampling on the device). The CPU engine's decode
  // is a one-token prefill, and prompt chunks batch with decodes in one pass there.
  virtual bool fast_decode() const { return false; }
  // Decode (one token per slot, the base model: no adapter), then rows with a rule (rules[i]
  // set) are drawn here by DrawByRule's definition: `drawn` gets one entry per row, filled for
  // those rows; only the other rows' logits come back, in row order (logits->rows = the rows
  // without a rule). This default decodes to host memory and draws there.
  virtual absl::Status DecodeAndDraw(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                                     std::span<const std::optional<DrawRule>> rules,
                                     std::vector<SampledToken>* drawn, Logits* logits);
  virtual absl::Status ResetSlot(SlotId slot) = 0;
  // Copies a whole state (all layers), e.g. to fork a prompt for n > 1 completions.
  virtual absl::Status CopySlot(SlotId from, SlotId to) = 0;

  // Floats in one slot's whole state: what SaveSlot writes and RestoreSlot reads. Every backend
  // uses one layout, so a state moves between slots, processes and backends: per layer the conv
  // state [d_conv-1, d_inner] (oldest input first), then the SSM state [d_state, d_inner].
  virtual int64_t state_floats() const = 0;
  // Copies a slot's whole state to host memory (`state` is resized to state_floats()).
  virtual absl::Status SaveSlot(SlotId slot, std::vector<float>* state) = 0;
  // Overwrites a slot's whole state with one SaveSlot wrote (size state_floats()).
  virtual absl::Status RestoreSlot(SlotId slot, std::span<const float> state) = 0;

  // Lays a validated adapter out for this backend (converted, uploaded). Called from any thread,
  // also while steps run: it must not touch what a step uses. Unimplemented where a backend has
  // no LoRA support.
  virtual absl::StatusOr<std::shared_ptr<const AdapterWeights>> LoadAdapter(
      const LoraAdapter& adapter);

  // Seconds spent per op since creation, when created with profile = true.
  virtual std::vector<std::pair<std::string, double>> OpSeconds() const { return {}; }
};

// Checks a Prefill call's arguments against the slot count and vocabulary.
absl::Status ValidateChunks(std::span<const ChunkInput> chunks, int num_slots, int64_t vocab_size);

}  // namespace mamba::engine
