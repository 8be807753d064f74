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

// HF's model_type: "mamba" (MambaForCausalLM) or "falcon_mamba" (FalconMambaForCausalLM: a
// Mamba-1 whose x_proj outputs dt, B and C each pass a weightless RMS norm with mixer_rms_eps
// before dt_proj and the scan).
enum class ModelType { kMamba, kFalconMamba };
std::string_view ModelTypeName(ModelType t);  // as config.json spells it

struct ModelConfig {
  int64_t vocab_size = 50280;
  int64_t hidden_size = 768;  // d_model
  int64_t state_size = 16;    // d_state
  int64_t num_hidden_layers = 24;
  int64_t intermediate_size = 1536;  // d_inner (expand * hidden_size unless given)
  int64_t conv_kernel = 4;           // d_conv
  int64_t time_step_rank = 48;       // dt_rank
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

  // Parses HF MambaConfig JSON or the original mamba_ssm layout (d_model, n_layer, ssm_cfg,
  // pad_vocab_size_multiple). Errors name the offending field.
  static absl::StatusOr<ModelConfig> FromJson(const nlohmann::json& j);
  // Checks internal consistency (positive sizes, supported activation, ...).
  absl::Status Validate() const;
  // HF MambaConfig JSON, as written by transformers' save_pretrained.
  nlohmann::json ToJson() const;

  // fp32 bytes of one request's recurrent state (conv + SSM, all layers).
  int64_t StateBytesPerSequence() const;
  // Number of weights, counting a tied head once.
  int64_t NumParameters(bool untied_head) const;
};

// Presets with the real models' shapes: "130m", "370m", "790m", "1.4b", "2.8b", "falcon-mamba-7b"
// (untied head), plus "tiny" and "falcon-tiny" (test sizes). Unknown names are an error listing
// the known ones.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);
std::vector<std::string> PresetNames();

}  // namespace mamba::engine
