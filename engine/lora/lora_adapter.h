// LoRA adapters (issue 15): a PEFT adapter directory (adapter_config.json +
// adapter_model.safetensors or adapter_model.bin) read, validated against the base model and held
// in fp32, ready for a backend to lay out for its kernels (Backend::LoadAdapter).
//
// Semantics are PEFT's unmerged forward. For a linear target W (in_proj, x_proj, dt_proj,
// out_proj, lm_head):  y = x W^T (+ bias) + scale * (x A^T) B^T,  A [r, in], B [out, r].
// For the embeddings:  e = E[token] + scale * B A[:, token],  A [r, vocab], B [d_model, r]; the
// LM head is NOT changed by an embeddings LoRA, even when tied to the embeddings (merging the
// adapter would change both; a PEFT user evaluated the unmerged model).
// scale = alpha / r, or alpha / sqrt(r) with use_rslora; r and alpha per module from
// rank_pattern / alpha_pattern when a key matches (PEFT's rule: the first key K, in the file's
// order, for which the module's name matches the regex "(.*\.)?(K)$").
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "nlohmann/json.hpp"

namespace mamba::engine {

// The modules a LoRA may target. The per-layer ones come first (kNumLayerTargets of them).
enum class LoraTarget { kInProj, kXProj, kDtProj, kOutProj, kEmbeddings, kLmHead };
inline constexpr int kNumLayerTargets = 4;
const char* Name(LoraTarget t);  // "in_proj", ..., "embeddings", "lm_head" (PEFT's names)

// One low-rank update, weights in fp32 as stored (converted from fp16 / bf16).
struct LoraModule {
  int64_t rank = 0;
  int64_t in = 0;   // input features (embeddings: the vocabulary)
  int64_t out = 0;  // output features (embeddings: d_model)
  double alpha = 0;
  float scale = 0;       // alpha / rank, or alpha / sqrt(rank) with use_rslora
  std::vector<float> a;  // [rank, in]  (lora_A.weight; embeddings: lora_embedding_A)
  std::vector<float> b;  // [out, rank] (lora_B.weight; embeddings: lora_embedding_B)
};

struct LoraLoadOptions {
  int64_t max_rank = 64;  // --max-lora-rank: an adapter with a larger rank anywhere is refused
};

// One module of the base model that an adapter_config.json targets, decided from the config
// and the base model alone (before any tensor is read): the loader's plan, and what the random
// adapter writer (lora_writer.h) generates, so that the two agree by construction.
struct LoraModulePlan {
  std::string key;  // PEFT's module key, e.g. "backbone.layers.3.mixer.in_proj", "lm_head"
  LoraTarget target = LoraTarget::kInProj;
  int64_t layer = -1;  // -1 for the embeddings and lm_head
  int64_t rank = 0;
  int64_t in = 0;   // as LoraModule
  int64_t out = 0;  // as LoraModule
  double alpha = 0;
  float scale = 0;
};

// The modules `adapter_config` (a parsed adapter_config.json, in file order: rank_pattern's
// order matters) targets in `config`'s model, per layer in LoraTarget order, then the
// embeddings, then lm_head. InvalidArgument naming the field for anything refused (see Load).
absl::StatusOr<std::vector<LoraModulePlan>> PlanLoraModules(
    const nlohmann::ordered_json& adapter_config, const ModelConfig& config,
    const LoraLoadOptions& options);

class LoraAdapter {
 public:
  // Reads and validates `dir` against the base model `config`. Errors are InvalidArgument (or
  // NotFound for a missing directory / file) and say what is wrong, naming the file and tensor:
  // use_dora, bias other than "none", modules_to_save, a target the model lacks (or conv1d, or a
  // norm), a rank above max_rank, shapes that do not fit, missing or extra tensors, a corrupt
  // file, a peft_type other than LORA. `name` is only used in messages, as the prefix
  // "adapter 'NAME': ". The base-weight copy PEFT saves with a targeted lm_head or embeddings
  // (<key>.base_layer.weight, save_embedding_layers="auto") is ignored at the base shape.
  static absl::StatusOr<std::shared_ptr<const LoraAdapter>> Load(const std::filesystem::path& dir,
                                                                 const ModelConfig& config,
                                                                 const LoraLoadOptions& options,
                                                                 std::string_view name = {});

  // The update of `layer`'s module `t` (a per-layer target), or null when the adapter has none.
  const LoraModule* layer_module(int64_t layer, LoraTarget t) const;
  const LoraModule* embeddings() const { return embeddings_ ? &*embeddings_ : nullptr; }
  const LoraModule* lm_head() const { return lm_head_ ? &*lm_head_ : nullptr; }

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  int64_t max_rank() const { return max_rank_; }
  // The distinct module kinds it targets, in LoraTarget order (for logs and /v1/models).
  const std::vector<LoraTarget>& targets() const { return targets_; }
  // Hash of the config fields that matter and every tensor's bytes: which adapter a state was
  // computed under (the state cache and sessions key on it). 32 hex digits.
  const std::string& fingerprint() const { return fingerprint_; }
  // fp32 bytes held.
  int64_t bytes() const { return bytes_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  LoraAdapter() = default;
  std::vector<std::array<std::optional<LoraModule>, kNumLayerTargets>> layers_;
  std::optional<LoraModule> embeddings_, lm_head_;
  std::vector<LoraTarget> targets_;
  int64_t max_rank_ = 0;
  int64_t bytes_ = 0;
  std::string fingerprint_;
  std::filesystem::path path_;
};

}  // namespace mamba::engine
