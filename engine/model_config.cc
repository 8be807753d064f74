#include "engine/model_config.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/status_macros.h"

namespace mamba::engine {
namespace {

using nlohmann::json;

// Reads an optional integer field; error when present with another type.
absl::Status ReadInt(const json& j, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: '", key, "' must be an integer, got ", it->dump()));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: '", key, "' must be true or false, got ", it->dump()));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: '", key, "' must be a number, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

// eos_token_id may be an integer or a list of integers.
absl::Status ReadIdList(const json& j, const char* key, std::vector<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  std::vector<int64_t> ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int64_t>());
  } else if (it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(
            absl::StrCat("config.json: '", key, "' must hold integers"));
      }
      ids.push_back(v.get<int64_t>());
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: '", key, "' must be an integer or a list"));
  }
  *out = std::move(ids);
  return absl::OkStatus();
}

// time_step_rank: an integer or "auto" = ceil(hidden / 16).
absl::Status ReadRank(const json& j, const char* key, int64_t hidden, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || (it->is_string() && it->get<std::string>() == "auto")) {
    *out = (hidden + 15) / 16;
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: '", key, "' must be an integer or \"auto\", got ", it->dump()));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

// intermediate_size = expand * hidden size. Validate() bounds the result, but the raw values
// may be anything a file holds: the product must not overflow first (found by safetensors_fuzz).
absl::Status ExpandedSize(int64_t expand, int64_t hidden, int64_t* out) {
  if (__builtin_mul_overflow(expand, hidden, out)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: 'expand' (", expand, ") times the hidden size (", hidden, ") overflows"));
  }
  return absl::OkStatus();
}

// One bound of time_step_limit: a number, or infinity however a writer spelled it (Python's
// json writes a bare Infinity, which ReadJsonFile turns into the string "Infinity"; transformers
// 5 writes {"__float__": "Infinity"}). +inf is stored as 0 = no limit.
absl::Status ReadLimit(const json& v, double* out) {
  const json& s = v.is_object() && v.contains("__float__") ? v["__float__"] : v;
  if (s.is_number()) {
    *out = s.get<double>();
  } else if (s.is_string() &&
             (s == "Infinity" || s == "inf" || s == "Inf" || s == "+Infinity" || s == "+inf")) {
    *out = std::numeric_limits<double>::infinity();
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: 'time_step_limit' must hold two numbers (or Infinity), got ", v.dump()));
  }
  if (std::isinf(*out) && *out > 0) *out = 0;
  return absl::OkStatus();
}

absl::Status ReadTimeStepLimit(const json& j, const char* key, ModelConfig* c) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array() || it->size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: '", key, "' must be a pair [min, max], got ", it->dump()));
  }
  MAMBA_RETURN_IF_ERROR(ReadLimit((*it)[0], &c->time_step_min_limit));
  return ReadLimit((*it)[1], &c->time_step_max_limit);
}

// mamba_ssm's Mamba2 ssm_cfg (its defaults: d_state 128, headdim 64, ngroups 1, d_ssm = d_inner).
absl::Status ReadMambaSsmMamba2(const json& ssm, ModelConfig* c) {
  c->model_type = ModelType::kMamba2;
  c->state_size = 128;
  int64_t expand = 2, d_ssm = -1;
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "d_state", &c->state_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "d_conv", &c->conv_kernel));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "expand", &expand));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "headdim", &c->head_dim));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "ngroups", &c->n_groups));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "chunk_size", &c->chunk_size));
  MAMBA_RETURN_IF_ERROR(ReadBool(ssm, "conv_bias", &c->use_conv_bias));
  MAMBA_RETURN_IF_ERROR(ReadBool(ssm, "bias", &c->use_bias));
  MAMBA_RETURN_IF_ERROR(ReadTimeStepLimit(ssm, "dt_limit", c));
  int64_t d_inner = 0;
  MAMBA_RETURN_IF_ERROR(ExpandedSize(expand, c->hidden_size, &d_inner));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "d_ssm", &d_ssm));
  if (d_ssm < 0) d_ssm = d_inner;
  if (d_ssm > d_inner) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ssm_cfg.d_ssm (", d_ssm,
                                                   ") exceeds expand * d_model (", d_inner, ")"));
  }
  c->intermediate_size = d_ssm;
  c->mlp_size = d_inner - d_ssm;
  c->num_heads = c->head_dim > 0 ? d_ssm / c->head_dim : 0;
  // Variants the checkpoints we know do not use; computing them as the default would be wrong.
  for (auto [key, unsupported] : {std::pair{"rmsnorm", false},
                                  {"norm_before_gate", true},
                                  {"D_has_hdim", true},
                                  {"learnable_init_states", true}}) {
    bool v = !unsupported;
    MAMBA_RETURN_IF_ERROR(ReadBool(ssm, key, &v));
    if (v == unsupported) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: ssm_cfg.", key, " = ",
                                                     v ? "true" : "false", " is not supported"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> FromMambaSsm(const json& j) {
  ModelConfig c;
  c.source_format = "mamba_ssm";
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "d_model", &c.hidden_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "n_layer", &c.num_hidden_layers));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c.vocab_size));
  int64_t multiple = 8;
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "pad_vocab_size_multiple", &multiple));
  if (multiple > 1 && c.vocab_size % multiple != 0) {
    c.vocab_size += multiple - c.vocab_size % multiple;
  }
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "residual_in_fp32", &c.residual_in_fp32));
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "tie_embeddings", &c.tie_word_embeddings));
  bool rms_norm = true;
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "rms_norm", &rms_norm));
  if (!rms_norm)
    return absl::InvalidArgumentError("config.json: rms_norm=false (LayerNorm) is not supported");
  // Hybrid models (attention layers, or MLP blocks after each mixer) compute something else.
  if (auto it = j.find("attn_layer_idx"); it != j.end() && !it->is_null() && !it->empty()) {
    return absl::InvalidArgumentError(
        "config.json: attention layers (attn_layer_idx) are not supported");
  }
  int64_t d_intermediate = 0;
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "d_intermediate", &d_intermediate));
  if (d_intermediate != 0) {
    return absl::InvalidArgumentError(
        "config.json: MLP blocks after the mixer (d_intermediate > 0) are not supported");
  }
  json ssm = j.value("ssm_cfg", json::object());
  if (!ssm.is_object())
    return absl::InvalidArgumentError("config.json: 'ssm_cfg' must be an object");
  if (ssm.contains("layer") && ssm["layer"] != "Mamba1" && ssm["layer"] != "Mamba2") {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: ssm_cfg.layer ", ssm["layer"].dump(),
                     " is not supported (supported: \"Mamba1\", \"Mamba2\")"));
  }
  if (ssm.value("layer", "") == "Mamba2") {
    MAMBA_RETURN_IF_ERROR(ReadMambaSsmMamba2(ssm, &c));
    MAMBA_RETURN_IF_ERROR(ReadDouble(j, "norm_epsilon", &c.layer_norm_epsilon));
    return c;
  }
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "d_state", &c.state_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "d_conv", &c.conv_kernel));
  int64_t expand = 2;
  MAMBA_RETURN_IF_ERROR(ReadInt(ssm, "expand", &expand));
  MAMBA_RETURN_IF_ERROR(ExpandedSize(expand, c.hidden_size, &c.intermediate_size));
  MAMBA_RETURN_IF_ERROR(ReadRank(ssm, "dt_rank", c.hidden_size, &c.time_step_rank));
  MAMBA_RETURN_IF_ERROR(ReadBool(ssm, "conv_bias", &c.use_conv_bias));
  MAMBA_RETURN_IF_ERROR(ReadBool(ssm, "bias", &c.use_bias));
  c.layer_norm_epsilon = 1e-5;
  MAMBA_RETURN_IF_ERROR(ReadDouble(j, "norm_epsilon", &c.layer_norm_epsilon));
  return c;
}

absl::StatusOr<ModelConfig> FromHf(const json& j) {
  ModelConfig c;
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c.vocab_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "hidden_size", &c.hidden_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "state_size", &c.state_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", &c.num_hidden_layers));
  MAMBA_RETURN_IF_ERROR(ReadDouble(j, "layer_norm_epsilon", &c.layer_norm_epsilon));
  int64_t expand = 2;
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "expand", &expand));
  MAMBA_RETURN_IF_ERROR(ExpandedSize(expand, c.hidden_size, &c.intermediate_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", &c.intermediate_size));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "conv_kernel", &c.conv_kernel));
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "use_bias", &c.use_bias));
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "use_conv_bias", &c.use_conv_bias));
  MAMBA_RETURN_IF_ERROR(ReadRank(j, "time_step_rank", c.hidden_size, &c.time_step_rank));
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "residual_in_fp32", &c.residual_in_fp32));
  MAMBA_RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  if (auto it = j.find("hidden_act"); it != j.end()) {
    if (!it->is_string())
      return absl::InvalidArgumentError("config.json: 'hidden_act' must be a string");
    c.hidden_act = it->get<std::string>();
  }
  MAMBA_RETURN_IF_ERROR(ReadDouble(j, "mixer_rms_eps", &c.mixer_rms_eps));
  if (j.value("model_type", "") == "mamba2") {
    // HF Mamba2Config: intermediate_size is always expand * hidden_size; state_size 128.
    c.state_size = 128;
    MAMBA_RETURN_IF_ERROR(ReadInt(j, "state_size", &c.state_size));
    MAMBA_RETURN_IF_ERROR(ReadInt(j, "num_heads", &c.num_heads));
    MAMBA_RETURN_IF_ERROR(ReadInt(j, "head_dim", &c.head_dim));
    MAMBA_RETURN_IF_ERROR(ReadInt(j, "n_groups", &c.n_groups));
    MAMBA_RETURN_IF_ERROR(ReadInt(j, "chunk_size", &c.chunk_size));
    MAMBA_RETURN_IF_ERROR(ReadTimeStepLimit(j, "time_step_limit", &c));
    bool rms_norm = true;
    MAMBA_RETURN_IF_ERROR(ReadBool(j, "rms_norm", &rms_norm));
    if (!rms_norm) {
      return absl::InvalidArgumentError(
          "config.json: rms_norm = false is not supported for mamba2 (the gated RMS norm)");
    }
  }
  return c;
}

constexpr ModelType kModelTypes[] = {ModelType::kMamba, ModelType::kFalconMamba,
                                     ModelType::kMamba2};

std::string SupportedModelTypes() {
  std::vector<std::string> names;
  for (ModelType t : kModelTypes) names.emplace_back(ModelTypeName(t));
  return absl::StrJoin(names, ", ");
}

}  // namespace

std::string_view ModelTypeName(ModelType t) {
  switch (t) {
    case ModelType::kFalconMamba:
      return "falcon_mamba";
    case ModelType::kMamba2:
      return "mamba2";
    case ModelType::kMamba:
      break;
  }
  return "mamba";
}

int64_t ModelConfig::conv_dim() const {
  return is_mamba2() ? intermediate_size + 2 * n_groups * state_size : intermediate_size;
}

int64_t ModelConfig::in_proj_size() const {
  return is_mamba2() ? 2 * mlp_size + intermediate_size + conv_dim() + num_heads
                     : 2 * intermediate_size;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: top level must be an object");
  ModelType model_type = ModelType::kMamba;
  if (auto it = j.find("model_type"); it != j.end() && !it->is_null()) {
    if (!it->is_string())
      return absl::InvalidArgumentError("config.json: 'model_type' must be a string");
    const std::string name = it->get<std::string>();
    const auto known = std::find_if(std::begin(kModelTypes), std::end(kModelTypes),
                                    [&](ModelType t) { return ModelTypeName(t) == name; });
    if (known == std::end(kModelTypes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: model_type ", it->dump(),
                       " is not supported (supported: ", SupportedModelTypes(), ")"));
    }
    model_type = *known;
  }
  const bool mamba_ssm = j.contains("d_model") && !j.contains("hidden_size");
  absl::StatusOr<ModelConfig> c = mamba_ssm ? FromMambaSsm(j) : FromHf(j);
  if (!c.ok()) return c;
  if (!mamba_ssm || model_type != ModelType::kMamba) c->model_type = model_type;
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", &c->bos_token_id));
  MAMBA_RETURN_IF_ERROR(ReadIdList(j, "eos_token_id", &c->eos_token_ids));
  MAMBA_RETURN_IF_ERROR(ReadInt(j, "pad_token_id", &c->pad_token_id));
  MAMBA_RETURN_IF_ERROR(c->Validate());
  return c;
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](const char* name, int64_t v, int64_t max) -> absl::Status {
    if (v <= 0 || v > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: '", name, "' must be in [1, ", max, "], got ", v));
    }
    return absl::OkStatus();
  };
  MAMBA_RETURN_IF_ERROR(positive("vocab_size", vocab_size, int64_t{1} << 24));
  MAMBA_RETURN_IF_ERROR(positive("hidden_size", hidden_size, 1 << 16));
  MAMBA_RETURN_IF_ERROR(positive("state_size", state_size, 256));
  MAMBA_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers, 1024));
  MAMBA_RETURN_IF_ERROR(positive("intermediate_size", intermediate_size, 1 << 18));
  MAMBA_RETURN_IF_ERROR(positive("conv_kernel", conv_kernel, 8));
  MAMBA_RETURN_IF_ERROR(positive("time_step_rank", time_step_rank, 1 << 16));
  if (!(layer_norm_epsilon > 0) || !std::isfinite(layer_norm_epsilon)) {
    return absl::InvalidArgumentError("config.json: 'layer_norm_epsilon' must be positive");
  }
  if (!(mixer_rms_eps > 0) || !std::isfinite(mixer_rms_eps)) {
    return absl::InvalidArgumentError("config.json: 'mixer_rms_eps' must be positive");
  }
  if (hidden_act != "silu" && hidden_act != "swish") {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: hidden_act '", hidden_act, "' is not supported (only silu)"));
  }
  if (is_mamba2()) MAMBA_RETURN_IF_ERROR(ValidateMamba2());
  for (int64_t id : eos_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: eos_token_id ", id, " outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

// The fields of a Mamba-2 layer must agree with each other; errors name them.
absl::Status ModelConfig::ValidateMamba2() const {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (num_heads <= 0 || num_heads > (1 << 16)) {
    return bad("config.json: 'num_heads' must be in [1, 65536], got ", num_heads);
  }
  if (head_dim <= 0 || head_dim > 1024) {
    return bad("config.json: 'head_dim' must be in [1, 1024], got ", head_dim);
  }
  if (num_heads * head_dim != intermediate_size) {
    return bad("config.json: num_heads (", num_heads, ") x head_dim (", head_dim,
               ") must equal the SSM width intermediate_size = expand x hidden_size (",
               intermediate_size, ")");
  }
  if (n_groups <= 0 || num_heads % n_groups != 0) {
    return bad("config.json: n_groups (", n_groups, ") must divide num_heads (", num_heads, ")");
  }
  if (mlp_size < 0 || mlp_size > (1 << 18)) {
    return bad("config.json: the MLP width (d_inner - d_ssm) must be in [0, 262144], got ",
               mlp_size);
  }
  if (!(time_step_min_limit >= 0) || !(time_step_max_limit >= 0) ||
      (time_step_max_limit > 0 && time_step_max_limit < time_step_min_limit)) {
    return bad("config.json: time_step_limit [", time_step_min_limit, ", ", time_step_max_limit,
               "] must be ordered and non-negative");
  }
  return absl::OkStatus();
}

nlohmann::json ModelConfig::ToJson() const {
  json eos = eos_token_ids.size() == 1 ? json(eos_token_ids[0]) : json(eos_token_ids);
  const bool falcon = mixer_rms_norm();
  json j{{"model_type", ModelTypeName(model_type)},
         {"architectures", {falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM"}},
         {"vocab_size", vocab_size},
         {"hidden_size", hidden_size},
         {"state_size", state_size},
         {"num_hidden_layers", num_hidden_layers},
         {"layer_norm_epsilon", layer_norm_epsilon},
         {"expand", intermediate_size / hidden_size},
         {"intermediate_size", intermediate_size},
         {"conv_kernel", conv_kernel},
         {"use_bias", use_bias},
         {"use_conv_bias", use_conv_bias},
         {"hidden_act", hidden_act},
         {"time_step_rank", time_step_rank},
         {"residual_in_fp32", residual_in_fp32},
         {"tie_word_embeddings", tie_word_embeddings},
         {"bos_token_id", bos_token_id},
         {"eos_token_id", eos},
         {"pad_token_id", pad_token_id}};
  if (falcon) j["mixer_rms_eps"] = mixer_rms_eps;
  if (is_mamba2()) {  // as transformers' Mamba2Config writes itself
    j["architectures"] = {"Mamba2ForCausalLM"};
    j.erase("intermediate_size");  // HF derives it: expand * hidden_size
    j.erase("time_step_rank");
    j["num_heads"] = num_heads;
    j["head_dim"] = head_dim;
    j["n_groups"] = n_groups;
    j["chunk_size"] = chunk_size;
    j["rms_norm"] = true;
    j["time_step_limit"] = {time_step_min_limit,
                            time_step_max_limit > 0 ? json(time_step_max_limit) : json("Infinity")};
  }
  return j;
}

int64_t ModelConfig::StateBytesPerSequence() const {
  return num_hidden_layers * ((conv_kernel - 1) * conv_dim() + ssm_state_floats()) * 4;
}

int64_t ModelConfig::NumParameters(bool untied_head) const {
  const int64_t d = hidden_size, e = intermediate_size, n = state_size, r = time_step_rank;
  if (is_mamba2()) {
    const int64_t h = num_heads, cd = conv_dim();
    int64_t layer = d + in_proj_size() * d + cd * conv_kernel + (use_conv_bias ? cd : 0) + 3 * h +
                    e + d * (mlp_size + e);
    if (use_bias) layer += in_proj_size() + d;
    return vocab_size * d * (untied_head ? 2 : 1) + num_hidden_layers * layer + d;
  }
  int64_t layer = d + 2 * e * d + e * conv_kernel + (use_conv_bias ? e : 0) + (r + 2 * n) * e +
                  e * r + e + e * n + e + d * e;
  if (use_bias) layer += 2 * e + d;
  return vocab_size * d * (untied_head ? 2 : 1) + num_hidden_layers * layer + d;
}

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name) {
  struct Preset {
    const char* name;
    int64_t d_model, layers, vocab;
    ModelType type = ModelType::kMamba;
    int64_t groups = 1;  // Mamba-2
  };
  // tiiuae/falcon-mamba-7b: d_model 4096, 64 layers, intermediate 8192 (its config.json gives
  // intermediate_size beside an unused expand), dt rank 256, vocab 65024, untied: 7.27 B weights.
  static constexpr Preset kPresets[] = {
      {"tiny", 64, 2, 512},
      {"130m", 768, 24, 50280},
      {"370m", 1024, 48, 50280},
      {"790m", 1536, 48, 50280},
      {"1.4b", 2048, 48, 50280},
      {"2.8b", 2560, 64, 50280},
      {"falcon-tiny", 64, 2, 512, ModelType::kFalconMamba},
      {"falcon-mamba-7b", 4096, 64, 65024, ModelType::kFalconMamba},
      {"mamba2-tiny", 64, 2, 512, ModelType::kMamba2, 2},
      {"mamba2-130m", 768, 24, 50288, ModelType::kMamba2},
      {"mamba2-370m", 1024, 48, 50288, ModelType::kMamba2},
      {"mamba2-780m", 1536, 48, 50288, ModelType::kMamba2},
      {"mamba2-1.3b", 2048, 48, 50288, ModelType::kMamba2},
      {"mamba2-2.7b", 2560, 64, 50288, ModelType::kMamba2},
      {"codestral-7b", 4096, 64, 32768, ModelType::kMamba2, 8}};
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    c.hidden_size = p.d_model;
    c.num_hidden_layers = p.layers;
    c.vocab_size = p.vocab;
    c.intermediate_size = 2 * p.d_model;
    c.time_step_rank = (p.d_model + 15) / 16;
    c.model_type = p.type;
    if (p.type == ModelType::kFalconMamba) {
      c.tie_word_embeddings = false;
      c.eos_token_ids = {p.vocab > 11 ? 11 : 0};  // falcon-mamba-7b's <|endoftext|>
    }
    if (p.type == ModelType::kMamba2) {
      // state-spaces/mamba2-*: d_state 128, head_dim 64 (16 in the tiny test model so that it has
      // several heads), expand 2; Mamba-Codestral-7B: 8 groups, untied head, eos 2 (</s>).
      c.state_size = p.d_model < 128 ? 16 : 128;
      c.head_dim = p.d_model < 128 ? 16 : 64;
      c.num_heads = c.intermediate_size / c.head_dim;
      c.n_groups = p.groups;
      if (p.groups > 1) {
        c.tie_word_embeddings = false;
        c.bos_token_id = 1;
        c.eos_token_ids = {2};
      }
    }
    return c;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown preset '", name, "' (known: ", absl::StrJoin(PresetNames(), ", "), ")"));
}

std::vector<std::string> PresetNames() {
  return {"tiny",        "130m",        "370m",        "790m",
          "1.4b",        "2.8b",        "falcon-tiny", "falcon-mamba-7b",
          "mamba2-tiny", "mamba2-130m", "mamba2-370m", "mamba2-780m",
          "mamba2-1.3b", "mamba2-2.7b", "codestral-7b"};
}

}  // namespace mamba::engine
