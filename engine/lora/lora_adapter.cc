#include "engine/lora/lora_adapter.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/hash.h"
#include "engine/pytorch_bin.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"
#include "kernels/dtype.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

absl::Status Bad(const std::string& message) { return absl::InvalidArgumentError(message); }

// A module of the base model as HF's named_modules() lists it (what PEFT matches
// target_modules against), and whether a LoRA may target it.
struct BaseModule {
  std::string key;
  int64_t layer = -1;
  std::optional<LoraTarget> target;  // set when a LoRA may target it
  const char* why_not = nullptr;     // otherwise: why not
};

std::vector<BaseModule> BaseModules(const ModelConfig& c) {
  static constexpr char kContainer[] = "is a container of modules, not a Linear or Embedding layer";
  static constexpr char kNorm[] =
      "is a norm layer (a LoRA may target in_proj, x_proj, dt_proj, out_proj, embeddings and "
      "lm_head)";
  std::vector<BaseModule> m;
  m.push_back({"backbone", -1, {}, kContainer});
  m.push_back({"backbone.embeddings", -1, LoraTarget::kEmbeddings});
  m.push_back({"backbone.layers", -1, {}, kContainer});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("backbone.layers.", i);
    m.push_back({p, i, {}, kContainer});
    m.push_back({p + ".norm", i, {}, kNorm});
    m.push_back({p + ".mixer", i, {}, kContainer});
    m.push_back(
        {p + ".mixer.conv1d", i, {}, "is a depthwise conv1d: conv1d LoRA is not supported"});
    m.push_back({p + ".mixer.act", i, {}, "is an activation function, without weights"});
    m.push_back({p + ".mixer.in_proj", i, LoraTarget::kInProj});
    if (c.is_mamba2()) {
      m.push_back({p + ".mixer.norm", i, {}, kNorm});
    } else {
      m.push_back({p + ".mixer.x_proj", i, LoraTarget::kXProj});
      m.push_back({p + ".mixer.dt_proj", i, LoraTarget::kDtProj});
    }
    m.push_back({p + ".mixer.out_proj", i, LoraTarget::kOutProj});
  }
  m.push_back({"backbone.norm_f", -1, {}, kNorm});
  m.push_back({"lm_head", -1, LoraTarget::kLmHead});
  return m;
}

// in / out features of a target (LoraModule's meaning: the embeddings' "in" is the vocabulary).
void Features(const ModelConfig& c, LoraTarget t, int64_t* in, int64_t* out) {
  switch (t) {
    case LoraTarget::kInProj:
      *in = c.hidden_size, *out = c.in_proj_size();
      return;
    case LoraTarget::kXProj:
      *in = c.intermediate_size, *out = c.time_step_rank + 2 * c.state_size;
      return;
    case LoraTarget::kDtProj:
      *in = c.time_step_rank, *out = c.intermediate_size;
      return;
    case LoraTarget::kOutProj:  // Mamba-2 with an MLP split reads [silu(z0) * x0 | y]
      *in = (c.is_mamba2() ? c.mlp_size : 0) + c.intermediate_size, *out = c.hidden_size;
      return;
    case LoraTarget::kEmbeddings:
      *in = c.vocab_size, *out = c.hidden_size;
      return;
    case LoraTarget::kLmHead:
      *in = c.hidden_size, *out = c.vocab_size;
      return;
  }
}

// target_modules (or exclude_modules): a list of names, each matching a module whose key is the
// name or ends with "." + name, or one string, a regex the whole key must match (PEFT's
// check_target_module_exists). layers_to_transform filters the suffix matches of a list only.
struct ModuleSelector {
  std::string field;
  bool is_regex = false;
  std::string text;  // the regex as written
  std::regex regex;
  std::vector<std::string> names;
  std::optional<std::vector<int64_t>> layers;

  bool NameMatches(const std::string& name, const std::string& key) const {
    return key == name || (key.size() > name.size() && absl::EndsWith(key, name) &&
                           key[key.size() - name.size() - 1] == '.');
  }
  bool Matches(const BaseModule& m) const {
    if (is_regex) return std::regex_match(m.key, regex);
    if (std::find(names.begin(), names.end(), m.key) != names.end()) return true;
    for (const std::string& n : names) {
      if (!NameMatches(n, m.key)) continue;
      return !layers || std::find(layers->begin(), layers->end(), m.layer) != layers->end();
    }
    return false;
  }
};

// `what` names the expression in errors, e.g. "target_modules: '(x'".
absl::StatusOr<std::regex> CompileRegex(const std::string& text, const std::string& what) {
  try {
    return std::regex(text, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return Bad(absl::StrCat(what, " is not a valid regular expression (", e.what(), ")"));
  }
}

absl::Status ReadSelector(const ojson& v, const std::string& field, ModuleSelector* s) {
  s->field = field;
  if (v.is_string()) {
    s->is_regex = true;
    s->text = v.get<std::string>();
    MAMBA_ASSIGN_OR_RETURN(s->regex,
                           CompileRegex(s->text, absl::StrCat(field, ": '", s->text, "'")));
    return absl::OkStatus();
  }
  if (!v.is_array()) return Bad(absl::StrCat(field, " must be a list of names or a regex string"));
  for (const ojson& n : v) {
    if (!n.is_string() || n.get<std::string>().empty()) {
      return Bad(absl::StrCat(field, " must hold module names, got ", n.dump()));
    }
    s->names.push_back(n.get<std::string>());
  }
  return absl::OkStatus();
}

// The value of `key`, or null when it is absent or JSON null.
const ojson* Field(const ojson& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

bool IsEmpty(const ojson* v) {
  return v == nullptr || ((v->is_array() || v->is_object() || v->is_string()) && v->empty());
}

// The fields whose values change the model in ways this server does not implement.
absl::Status CheckSupported(const ojson& j) {
  const ojson* type = Field(j, "peft_type");
  if (type == nullptr || !type->is_string() || type->get<std::string>() != "LORA") {
    return Bad(absl::StrCat("peft_type is ", type ? type->dump() : "missing",
                            ": only LORA adapters are supported"));
  }
  for (const char* flag : {"use_dora", "lora_bias", "use_qalora"}) {
    const ojson* v = Field(j, flag);
    if (v != nullptr && !v->is_boolean()) {
      return Bad(absl::StrCat(flag, " must be true or false, got ", v->dump()));
    }
    if (v != nullptr && v->get<bool>()) {
      return Bad(absl::StrCat(flag, " is true: ",
                              std::string_view(flag) == "use_dora"
                                  ? "DoRA adapters are not supported"
                                  : "this LoRA variant is not supported"));
    }
  }
  if (const ojson* bias = Field(j, "bias"); bias != nullptr && *bias != "none") {
    return Bad(absl::StrCat("bias is ", bias->dump(),
                            ": only \"none\" is supported (the adapter would change biases)"));
  }
  if (const ojson* m = Field(j, "modules_to_save"); !IsEmpty(m)) {
    return Bad(absl::StrCat("modules_to_save is ", m->dump(),
                            ": not supported (the adapter would replace whole modules)"));
  }
  for (const char* field : {"layer_replication", "target_parameters", "trainable_token_indices",
                            "alora_invocation_tokens"}) {
    if (const ojson* v = Field(j, field); !IsEmpty(v)) {
      return Bad(absl::StrCat(field, " is ", v->dump(), ": not supported"));
    }
  }
  // PEFT ignores fan_in_fan_out for nn.Linear targets (with a warning): so do we.
  if (const ojson* f = Field(j, "fan_in_fan_out"); f != nullptr && !f->is_boolean()) {
    return Bad(absl::StrCat("fan_in_fan_out must be true or false, got ", f->dump()));
  }
  if (const ojson* p = Field(j, "layers_pattern");
      !IsEmpty(p) && *p != "layers" && *p != ojson::array({"layers"})) {
    return Bad(absl::StrCat("layers_pattern is ", p->dump(),
                            ": this model's layers are backbone.layers (null or \"layers\")"));
  }
  return absl::OkStatus();
}

absl::Status ReadLayers(const ojson& j, const ModelConfig& c, ModuleSelector* s) {
  const ojson* v = Field(j, "layers_to_transform");
  if (v == nullptr || (v->is_array() && v->empty())) return absl::OkStatus();
  std::vector<int64_t> layers;
  std::vector<ojson> items;
  if (v->is_array()) {
    items = v->get<std::vector<ojson>>();
  } else {
    items.push_back(*v);  // one layer index
  }
  for (const ojson& i : items) {
    if (!i.is_number_integer() || i.get<int64_t>() < 0 || i.get<int64_t>() >= c.num_hidden_layers) {
      return Bad(absl::StrCat("layers_to_transform: ", i.dump(), " is not a layer index of this ",
                              c.num_hidden_layers, "-layer model"));
    }
    layers.push_back(i.get<int64_t>());
  }
  s->layers = std::move(layers);
  return absl::OkStatus();
}

// rank_pattern / alpha_pattern: PEFT takes the first key K, in the file's order, such that the
// module key matches "(.*\.)?(K)$".
struct Pattern {
  std::string key;
  std::regex regex;
  double value = 0;  // alpha_pattern
  int64_t rank = 0;  // rank_pattern (a double would not hold every int64)
};

absl::StatusOr<std::vector<Pattern>> ReadPatterns(const ojson& j, const char* field, bool integer) {
  std::vector<Pattern> out;
  const ojson* v = Field(j, field);
  if (v == nullptr) return out;
  if (!v->is_object()) return Bad(absl::StrCat(field, " must be an object {name: value}"));
  for (const auto& [key, value] : v->items()) {
    if (integer ? !value.is_number_integer() || value.get<int64_t>() <= 0 : !value.is_number()) {
      return Bad(absl::StrCat(field, "['", key, "'] must be ",
                              integer ? "a positive integer" : "a number", ", got ", value.dump()));
    }
    MAMBA_ASSIGN_OR_RETURN(std::regex re, CompileRegex(absl::StrCat("(.*\\.)?(", key, ")"),
                                                       absl::StrCat(field, " key '", key, "'")));
    out.push_back(
        {key, std::move(re), value.get<double>(), integer ? value.get<int64_t>() : int64_t{0}});
  }
  return out;
}

const Pattern* FirstMatch(const std::vector<Pattern>& patterns, const std::string& key) {
  for (const Pattern& p : patterns) {
    if (std::regex_match(key, p.regex)) return &p;
  }
  return nullptr;
}

// Every name of a target list must name some module (before the layer filter); every module it
// selects must be one a LoRA may target.
absl::Status CheckSelection(const ModuleSelector& s, const std::vector<BaseModule>& modules,
                            const ModelConfig& c) {
  if (s.is_regex) {
    if (std::none_of(modules.begin(), modules.end(),
                     [&](const BaseModule& m) { return s.Matches(m); })) {
      return Bad(
          absl::StrCat(s.field, ": the regex '", s.text, "' matches no module of this model"));
    }
  }
  for (const std::string& n : s.names) {
    if (std::none_of(modules.begin(), modules.end(),
                     [&](const BaseModule& m) { return s.NameMatches(n, m.key); })) {
      const bool ssm1 = n == "x_proj" || n == "dt_proj";
      return Bad(
          absl::StrCat(s.field, ": target module '", n, "' matches no module of this model",
                       c.is_mamba2() && ssm1 ? " (Mamba-2 mixers have no x_proj or dt_proj)" : ""));
    }
  }
  for (const BaseModule& m : modules) {
    if (!m.target && s.Matches(m)) {
      return Bad(absl::StrCat(s.field, " selects ", m.key, ", which ", m.why_not));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadRankAndAlpha(const ojson& j, int64_t* r, double* alpha, bool* rslora) {
  if (const ojson* v = Field(j, "r"); v != nullptr) {
    if (!v->is_number_integer() || v->get<int64_t>() <= 0) {
      return Bad(absl::StrCat("r must be a positive integer, got ", v->dump()));
    }
    *r = v->get<int64_t>();
  }
  if (const ojson* v = Field(j, "lora_alpha"); v != nullptr) {
    if (!v->is_number()) return Bad(absl::StrCat("lora_alpha must be a number, got ", v->dump()));
    *alpha = v->get<double>();
  }
  if (const ojson* v = Field(j, "use_rslora"); v != nullptr) {
    if (!v->is_boolean()) {
      return Bad(absl::StrCat("use_rslora must be true or false, got ", v->dump()));
    }
    *rslora = v->get<bool>();
  }
  return absl::OkStatus();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Reads one of a module's two tensors into fp32: present, shaped `shape`, finite.
absl::Status ReadTensor(const std::unordered_map<std::string, const TensorInfo*>& by_name,
                        const std::string& name, const std::vector<int64_t>& shape,
                        const LoraModulePlan& p, std::vector<float>* out) {
  auto it = by_name.find(name);
  if (it == by_name.end()) {
    return Bad(
        absl::StrCat("missing tensor '", name, "' (adapter_config.json targets ", p.key, ")"));
  }
  const TensorInfo& t = *it->second;
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
    return Bad(absl::StrCat("tensor '", name, "' has dtype ", kernels::Name(t.dtype),
                            ": expected float32, float16 or bfloat16"));
  }
  if (t.shape != shape) {
    return Bad(absl::StrCat("tensor '", name, "' has shape ", ShapeString(t.shape), ", expected ",
                            ShapeString(shape), " (rank ", p.rank, "; ", p.key, " has ", p.in,
                            " inputs and ", p.out, " outputs in this model)"));
  }
  out->resize(static_cast<size_t>(t.NumElements()));
  kernels::ConvertToF32(t.data, t.dtype, out->data(), t.NumElements());
  auto bad = std::find_if(out->begin(), out->end(), [](float v) { return !std::isfinite(v); });
  if (bad != out->end()) {
    return Bad(absl::StrCat("tensor '", name, "' holds a non-finite value (", *bad, ") at element ",
                            bad - out->begin()));
  }
  return absl::OkStatus();
}

// A module's two tensor names, in PEFT's state dict naming (the adapter name removed).
std::pair<std::string, std::string> TensorNames(const LoraModulePlan& p) {
  const std::string base = absl::StrCat("base_model.model.", p.key);
  return p.target == LoraTarget::kEmbeddings
             ? std::make_pair(base + ".lora_embedding_A", base + ".lora_embedding_B")
             : std::make_pair(base + ".lora_A.weight", base + ".lora_B.weight");
}

// Every tensor of the file must be one the plan expects (missing ones are found as they are
// read). PEFT's save_embedding_layers="auto" also saves the base weight of a targeted lm_head
// (and of the embeddings when both are targeted) as <key>.base_layer.weight: a copy of the base
// model's own matrix, which a LoRA leaves frozen. Tolerated (and not held) at the base shape;
// another shape means a resized vocabulary, which is refused.
absl::Status CheckTensorNames(const TensorFile& file, const std::vector<LoraModulePlan>& plan,
                              const ModelConfig& config) {
  std::unordered_set<std::string> expected, base_copies;
  for (const LoraModulePlan& p : plan) {
    auto [a, b] = TensorNames(p);
    expected.insert(a);
    expected.insert(b);
    if (p.target == LoraTarget::kEmbeddings || p.target == LoraTarget::kLmHead) {
      base_copies.insert(absl::StrCat("base_model.model.", p.key, ".base_layer.weight"));
    }
  }
  const std::vector<int64_t> base_shape = {config.vocab_size, config.hidden_size};
  for (const TensorInfo& t : file.tensors()) {
    if (base_copies.count(t.name) != 0 && t.shape != base_shape) {
      return Bad(absl::StrCat("tensor '", t.name, "' has shape ", ShapeString(t.shape),
                              ", not the base model's ", ShapeString(base_shape),
                              ": an adapter with a resized vocabulary is not supported"));
    }
    if (base_copies.count(t.name) == 0 && expected.count(t.name) == 0) {
      return Bad(absl::StrCat("unexpected tensor '", t.name,
                              "': not a LoRA tensor of a module adapter_config.json targets in "
                              "this model"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TensorFile>> OpenWeights(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "adapter_model.safetensors", ec)) {
    MAMBA_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(dir / "adapter_model.safetensors"));
    return std::unique_ptr<TensorFile>(std::move(f));
  }
  if (fs::exists(dir / "adapter_model.bin", ec)) {
    MAMBA_ASSIGN_OR_RETURN(auto f, PytorchBinFile::Open(dir / "adapter_model.bin"));
    return std::unique_ptr<TensorFile>(std::move(f));
  }
  return absl::NotFoundError(
      absl::StrCat(dir.string(), ": no adapter_model.safetensors or adapter_model.bin"));
}

absl::StatusOr<ojson> ReadOrderedJson(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  ojson j = ojson::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(absl::StrCat(path.string(), ": invalid JSON"));
  return j;
}

template <typename T>
std::span<const std::byte> AsBytes(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

void HashModule(const LoraModulePlan& p, const LoraModule& m, Hash128& h) {
  h.Update(p.key);
  h.Update(m.rank);
  h.Update(m.in);
  h.Update(m.out);
  int64_t alpha_bits;
  std::memcpy(&alpha_bits, &m.alpha, 8);
  h.Update(alpha_bits);
  int32_t scale_bits;
  std::memcpy(&scale_bits, &m.scale, 4);
  h.Update(static_cast<int64_t>(scale_bits));
  h.Update(AsBytes(m.a));
  h.Update(AsBytes(m.b));
}

}  // namespace

const char* Name(LoraTarget t) {
  switch (t) {
    case LoraTarget::kInProj:
      return "in_proj";
    case LoraTarget::kXProj:
      return "x_proj";
    case LoraTarget::kDtProj:
      return "dt_proj";
    case LoraTarget::kOutProj:
      return "out_proj";
    case LoraTarget::kEmbeddings:
      return "embeddings";
    case LoraTarget::kLmHead:
      return "lm_head";
  }
  return "?";
}

absl::StatusOr<std::vector<LoraModulePlan>> PlanLoraModules(const ojson& j,
                                                            const ModelConfig& config,
                                                            const LoraLoadOptions& options) {
  if (!j.is_object()) return Bad("the top level must be an object");
  MAMBA_RETURN_IF_ERROR(CheckSupported(j));
  int64_t r = 8;
  double alpha = 8;
  bool rslora = false;
  MAMBA_RETURN_IF_ERROR(ReadRankAndAlpha(j, &r, &alpha, &rslora));
  const ojson* targets_json = Field(j, "target_modules");
  if (targets_json == nullptr) {
    return Bad("target_modules is missing (PEFT has no default targets for Mamba)");
  }
  ModuleSelector targets, excluded;
  MAMBA_RETURN_IF_ERROR(ReadSelector(*targets_json, "target_modules", &targets));
  MAMBA_RETURN_IF_ERROR(ReadLayers(j, config, &targets));
  const ojson* exclude_json = Field(j, "exclude_modules");
  if (exclude_json != nullptr) {
    MAMBA_RETURN_IF_ERROR(ReadSelector(*exclude_json, "exclude_modules", &excluded));
  }
  MAMBA_ASSIGN_OR_RETURN(auto rank_pattern, ReadPatterns(j, "rank_pattern", true));
  MAMBA_ASSIGN_OR_RETURN(auto alpha_pattern, ReadPatterns(j, "alpha_pattern", false));

  const std::vector<BaseModule> modules = BaseModules(config);
  MAMBA_RETURN_IF_ERROR(CheckSelection(targets, modules, config));
  std::vector<LoraModulePlan> plan;
  for (const BaseModule& m : modules) {
    if (!targets.Matches(m) || (exclude_json != nullptr && excluded.Matches(m))) continue;
    LoraModulePlan p;
    p.key = m.key;
    p.target = *m.target;
    p.layer = m.layer;
    const Pattern* rp = FirstMatch(rank_pattern, m.key);
    const Pattern* ap = FirstMatch(alpha_pattern, m.key);
    p.rank = rp ? rp->rank : r;
    p.alpha = ap ? ap->value : alpha;
    if (p.rank > options.max_rank) {
      return Bad(absl::StrCat("rank ", p.rank, " of ", m.key,
                              rp ? absl::StrCat(" (rank_pattern '", rp->key, "')") : " (r)",
                              " exceeds --max-lora-rank ", options.max_rank));
    }
    const double rank = static_cast<double>(p.rank);
    const double scale = rslora ? p.alpha / std::sqrt(rank) : p.alpha / rank;
    if (!(std::abs(scale) <= 1e30)) {  // a float must hold it
      return Bad(absl::StrCat("lora_alpha ", p.alpha, " of ", m.key, " gives the scale ", scale));
    }
    p.scale = static_cast<float>(scale);
    Features(config, p.target, &p.in, &p.out);
    plan.push_back(std::move(p));
  }
  if (plan.empty()) {
    return Bad("target_modules with layers_to_transform / exclude_modules selects no module");
  }
  // Per layer in LoraTarget order, then the embeddings and lm_head.
  auto order = [&](const LoraModulePlan& p) {
    return std::make_pair(p.layer >= 0 ? p.layer : config.num_hidden_layers,
                          static_cast<int>(p.target));
  };
  std::stable_sort(plan.begin(), plan.end(), [&](const LoraModulePlan& a, const LoraModulePlan& b) {
    return order(a) < order(b);
  });
  return plan;
}

absl::StatusOr<std::shared_ptr<const LoraAdapter>> LoraAdapter::Load(const fs::path& dir,
                                                                     const ModelConfig& config,
                                                                     const LoraLoadOptions& options,
                                                                     std::string_view name) {
  const std::string prefix =
      name.empty() ? "" : absl::StrCat("adapter '", std::string(name), "': ");
  auto fail = [&](const absl::Status& s, const fs::path& file) {
    return absl::Status(s.code(), file.empty()
                                      ? absl::StrCat(prefix, s.message())
                                      : absl::StrCat(prefix, file.string(), ": ", s.message()));
  };
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(prefix, dir.string(), ": no such adapter directory"));
  }
  const fs::path config_path = dir / "adapter_config.json";
  absl::StatusOr<ojson> j = ReadOrderedJson(config_path);
  if (!j.ok()) return fail(j.status(), {});  // names the file already
  absl::StatusOr<std::vector<LoraModulePlan>> plan = PlanLoraModules(*j, config, options);
  if (!plan.ok()) return fail(plan.status(), config_path);
  absl::StatusOr<std::unique_ptr<TensorFile>> file = OpenWeights(dir);
  if (!file.ok()) return fail(file.status(), {});  // names the file already

  const fs::path& weights = (*file)->path();
  if (absl::Status s = CheckTensorNames(**file, *plan, config); !s.ok()) return fail(s, weights);
  std::unordered_map<std::string, const TensorInfo*> by_name;
  for (const TensorInfo& t : (*file)->tensors()) by_name[t.name] = &t;

  std::shared_ptr<LoraAdapter> adapter(new LoraAdapter());
  adapter->path_ = dir;
  adapter->layers_.resize(static_cast<size_t>(config.num_hidden_layers));
  Hash128 hash;
  hash.Update(std::string_view("peft-lora-v1"));
  std::vector<bool> seen(6, false);
  for (const LoraModulePlan& p : *plan) {
    LoraModule m;
    m.rank = p.rank;
    m.in = p.in;
    m.out = p.out;
    m.alpha = p.alpha;
    m.scale = p.scale;
    auto [a, b] = TensorNames(p);
    absl::Status s = ReadTensor(by_name, a, {p.rank, p.in}, p, &m.a);
    if (s.ok()) s = ReadTensor(by_name, b, {p.out, p.rank}, p, &m.b);
    if (!s.ok()) return fail(s, weights);
    HashModule(p, m, hash);
    adapter->bytes_ += static_cast<int64_t>((m.a.size() + m.b.size()) * sizeof(float));
    adapter->max_rank_ = std::max(adapter->max_rank_, m.rank);
    seen[static_cast<size_t>(p.target)] = true;
    if (p.target == LoraTarget::kEmbeddings) {
      adapter->embeddings_ = std::move(m);
    } else if (p.target == LoraTarget::kLmHead) {
      adapter->lm_head_ = std::move(m);
    } else {
      adapter->layers_[static_cast<size_t>(p.layer)][static_cast<size_t>(p.target)] = std::move(m);
    }
  }
  for (size_t t = 0; t < seen.size(); ++t) {
    if (seen[t]) adapter->targets_.push_back(static_cast<LoraTarget>(t));
  }
  adapter->fingerprint_ = hash.Hex();
  return std::shared_ptr<const LoraAdapter>(std::move(adapter));
}

const LoraModule* LoraAdapter::layer_module(int64_t layer, LoraTarget t) const {
  const auto i = static_cast<size_t>(t);
  if (layer < 0 || layer >= num_layers() || i >= static_cast<size_t>(kNumLayerTargets)) {
    return nullptr;
  }
  const std::optional<LoraModule>& m = layers_[static_cast<size_t>(layer)][i];
  return m ? &*m : nullptr;
}

}  // namespace mamba::engine
