// The Mamba model configuration: every field of HF MambaConfig and FalconMambaConfig (and of the
// original mamba_ssm config.json) that changes inference, parsed and validated.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace mamba::engine {

// HF's model_type: "mamba" (MambaForCausalLM), "falcon_mamba" (FalconMambaForCausalLM: a
// Mamba-1 whose x_proj outputs dt, B and C each pass a weightless RMS norm with mixer_rms_eps
// before dt_proj and the scan) or "mamba2" (Mamba2ForCausalLM: multi-head SSM with scalar decay
// per head, B and C shared by groups of heads, gated RMS norm before out_proj).
enum class ModelType { kMamba, kFalconMamba, kMamba2 };
std::string_view ModelTypeName(ModelType t);  // as config.json spells it

struct ModelConfig {
  int64_t vocab_size = 50280;
  int64_t hidden_size = 768;  // d_model
  int64_t state_size = 16;    // d_state
  int64_t num_hidden_layers = 24;
  int64_t intermediate_size = 1536;  // d_inner (expand * hidden_size unless given); Mamba-2:
                                     // the SSM's width, num_heads * head_dim
  int64_t conv_kernel = 4;           // d_conv
  int64_t time_step_rank = 48;       // dt_rank (Mamba-1 only)
  double layer_norm_epsilon = 1e-5;
  bool use_bias = false;  // in_proj / out_proj bias
  bool use_conv_bias = true;
  bool residual_in_fp32 = true;
  bool tie_word_embeddings = true;  // an lm_head.weight tensor in the checkpoint unties
  std::string hidden_act = "silu";
  int64_t bos_token_id = 0;
  std::vector<int64_t> eos_token_ids = {0};
  int64_t pad_token_id = 0;

  // The layout the file was written in; informational ("hf" or "mamba_ssm").
  std::string source_format = "hf";

  ModelType model_type = ModelType::kMamba;
  double mixer_rms_eps = 1e-6;  // falcon_mamba
  bool mixer_rms_norm() const { return model_type == ModelType::kFalconMamba; }

  // Mamba-2 only. x, z are [num_heads * head_dim]; B and C [n_groups * state_size]; dt, A_log and
  // D one per head. mlp_size > 0 is mamba_ssm's d_ssm < d_inner: in_proj also yields z0 and x0
  // [mlp_size] and out_proj reads [silu(z0) * x0 | the SSM's output].
  int64_t num_heads = 24;
  int64_t head_dim = 64;
  int64_t n_groups = 1;
  int64_t mlp_size = 0;
  double time_step_min_limit = 0.0;  // time_step_limit: dt = clamp(softplus(...), min, max)
  double time_step_max_limit = 0.0;  // 0 = no upper limit (HF's inf)
  int64_t chunk_size = 256;          // informational (training's SSD chunk); any chunking is exact
  bool is_mamba2() const { return model_type == ModelType::kMamba2; }
  // Channels of the causal conv: x (Mamba-1), x|B|C (Mamba-2).
  int64_t conv_dim() const;
  // Rows of in_proj: x|z (Mamba-1); z0|x0|z|x|B|C|dt (Mamba-2).
  int64_t in_proj_size() const;
  // fp32 floats of one layer's SSM state: [d_inner, d_state] or [heads, d_state, head_dim].
  int64_t ssm_state_floats() const { return intermediate_size * state_size; }

  // Parses HF MambaConfig JSON or the original mamba_ssm layout (d_model, n_layer, ssm_cfg,
  // pad_vocab_size_multiple). Errors name the offending field.
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& j);
  // Checks internal consistency (positive sizes, supported activation, ...).
  absl::Status Validate() const;
  absl::Status ValidateMamba2() const;
  // HF MambaConfig JSON, as written by transformers' save_pretrained.
  nlohmann::json ToJson() const;

  // fp32 bytes of one request's recurrent state (conv + SSM, all layers).
  int64_t StateBytesPerSequence() const;
  // Number of weights, counting a tied head once.
  int64_t NumParameters(bool untied_head) const;
};

// Presets with the real models' shapes: "130m", "370m", "790m", "1.4b", "2.8b", "falcon-mamba-7b"
// (untied head), "mamba2-130m" ... "mamba2-2.7b", "codestral-7b" (Mamba-Codestral-7B), plus
// "tiny", "falcon-tiny" and "mamba2-tiny" (test sizes). Unknown names are an error listing
// the known ones.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);
std::vector<std::string> PresetNames();

}  // namespace mamba::engine
