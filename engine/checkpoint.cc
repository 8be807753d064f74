#include "engine/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/hash.h"
#include "engine/pytorch_bin.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"
#include "kernels/cpu/int8_gemm.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string ShapeStr(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

// Python's json module writes float('inf') and nan as bare Infinity, -Infinity and NaN, which
// JSON has no spelling for (transformers' Mamba2Config.time_step_limit is [0.0, Infinity]): such
// tokens outside strings become the strings "Infinity", "-Infinity" and "NaN".
std::string QuoteNonFiniteLiterals(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      out += ch;
      if (ch == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') in_string = true;
    bool replaced = false;
    for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
      if (text.compare(i, std::strlen(token), token) == 0) {
        absl::StrAppend(&out, "\"", token, "\"");
        i += std::strlen(token) - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += ch;
  }
  return out;
}

// config.json's quantization_config: absent, or MambaServe's own int8 (kInt8QuantMethod); any
// other method (gptq, awq, bitsandbytes, fp8, ...) is refused by name rather than misread.
absl::Status ParseQuantization(const json& cfg, QuantizationInfo* q,
                               std::vector<std::string>* modules) {
  if (!cfg.is_object() || !cfg.contains("quantization_config") ||
      cfg["quantization_config"].is_null()) {
    return absl::OkStatus();
  }
  const json& qc = cfg["quantization_config"];
  if (!qc.is_object()) return absl::InvalidArgumentError("quantization_config is not an object");
  if (!qc.contains("quant_method") || !qc["quant_method"].is_string()) {
    return absl::InvalidArgumentError("quantization_config has no quant_method");
  }
  const std::string method = qc["quant_method"].get<std::string>();
  if (method != kInt8QuantMethod) {
    return absl::UnimplementedError(absl::StrCat(
        "quantization_config.quant_method '", method,
        "' is not supported: MambaServe loads unquantized checkpoints (float32, bfloat16, "
        "float16) and its own '",
        kInt8QuantMethod, "' ones (mamba-quantize); use the model's unquantized weights"));
  }
  if (qc.contains("bits") && qc["bits"] != 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quantization_config.bits is ", qc["bits"].dump(), "; ", kInt8QuantMethod, " is 8-bit"));
  }
  if (qc.contains("symmetric") && qc["symmetric"] != true) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config.symmetric must be true for ", kInt8QuantMethod));
  }
  if (qc.contains("group_size")) {
    const json& g = qc["group_size"];
    if (!g.is_number_integer() || g.get<int64_t>() < 0 || g.get<int64_t>() % 4 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("quantization_config.group_size is ", g.dump(),
                                                     " (0 or a positive multiple of 4)"));
    }
    q->group_size = g.get<int64_t>();
  }
  if (!qc.contains("modules") || !qc["modules"].is_array() || qc["modules"].empty()) {
    return absl::InvalidArgumentError("quantization_config.modules must be a non-empty list");
  }
  for (const json& m : qc["modules"]) {
    const std::string name = m.is_string() ? m.get<std::string>() : m.dump();
    if (std::find_if(std::begin(kInt8QuantModules), std::end(kInt8QuantModules),
                     [&](const char* k) { return name == k; }) == std::end(kInt8QuantModules) ||
        std::find(modules->begin(), modules->end(), name) != modules->end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantization_config.modules: '", name,
                       "' is unknown or repeated (in_proj, x_proj, dt_proj, out_proj, lm_head)"));
    }
    modules->push_back(name);
  }
  q->int8 = true;
  return absl::OkStatus();
}

}  // namespace

std::string Int8ScaleName(const std::string& weight_name) { return weight_name + "_scale"; }

absl::StatusOr<json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(QuoteNonFiniteLiterals(ss.str()), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": invalid JSON"));
  return j;
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Open(const fs::path& dir) {
  std::shared_ptr<Checkpoint> c(new Checkpoint());
  c->dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": not a model directory"));
  }
  MAMBA_ASSIGN_OR_RETURN(json cfg, ReadJsonFile(dir / "config.json"));
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(cfg);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat((dir / "").string(), config.status().message()));
  }
  c->config_ = *config;
  if (absl::Status s = ParseQuantization(cfg, &c->quantization_, &c->quant_modules_); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat((dir / "config.json").string(), ": ", s.message()));
  }
  if (fs::exists(dir / "generation_config.json")) {
    MAMBA_ASSIGN_OR_RETURN(json gen, ReadJsonFile(dir / "generation_config.json"));
    json merged = cfg;
    for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
      if (gen.is_object() && gen.contains(key)) merged[key] = gen[key];
    }
    absl::StatusOr<ModelConfig> with_gen = ModelConfig::FromJson(merged);
    if (!with_gen.ok()) {
      return absl::Status(with_gen.status().code(),
                          absl::StrCat((dir / "generation_config.json").string(), ": ",
                                       with_gen.status().message()));
    }
    c->config_ = *with_gen;
  }
  MAMBA_RETURN_IF_ERROR(c->LoadFiles());
  MAMBA_RETURN_IF_ERROR(c->Bind());
  c->ComputeFingerprint(cfg);
  return std::shared_ptr<const Checkpoint>(std::move(c));
}

void Checkpoint::ComputeFingerprint(const json& config) {
  Hash128 h;
  h.Update(config.dump());  // keys sorted: the same config gives the same bytes
  for (int64_t t : config_.eos_token_ids) h.Update(t);
  std::vector<const TensorInfo*> tensors;
  for (const auto& [name, where] : by_name_) tensors.push_back(where.first);
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->name < b->name; });
  constexpr size_t kSample = 4096;
  for (const TensorInfo* t : tensors) {
    h.Update(t->name);
    h.Update(static_cast<int64_t>(t->dtype));
    for (int64_t d : t->shape) h.Update(d);
    const std::span<const std::byte> data(t->data, t->nbytes);
    const size_t n = std::min(kSample, data.size());
    h.Update(data.first(n));
    h.Update(data.subspan((data.size() - n) / 2, n));
    h.Update(data.last(n));
  }
  fingerprint_ = h.Hex();
}

namespace {

// Reads a sharded checkpoint's index: tensor -> shard file name, and the shard paths.
absl::Status ReadIndex(const fs::path& index_path,
                       std::unordered_map<std::string, std::string>* index,
                       std::vector<fs::path>* paths) {
  MAMBA_ASSIGN_OR_RETURN(json j, ReadJsonFile(index_path));
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": no weight_map object"));
  }
  std::set<std::string> shards;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string() || it.value().get<std::string>().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": bad shard name for tensor '", it.key(), "'"));
    }
    (*index)[it.key()] = it.value().get<std::string>();
    shards.insert(it.value().get<std::string>());
  }
  for (const std::string& s : shards) paths->push_back(index_path.parent_path() / s);
  return absl::OkStatus();
}

}  // namespace

absl::Status Checkpoint::LoadFiles() {
  std::vector<fs::path> paths;
  std::unordered_map<std::string, std::string> index;  // tensor -> shard file name
  // safetensors first (what HF prefers too), then torch.save files; each whole or sharded.
  const char* kLayouts[][2] = {{"model.safetensors", "model.safetensors.index.json"},
                               {"pytorch_model.bin", "pytorch_model.bin.index.json"}};
  std::string index_name;
  bool bin = false;
  for (const auto& [whole, sharded] : kLayouts) {
    if (fs::exists(dir_ / whole)) {
      paths.push_back(dir_ / whole);
    } else if (fs::exists(dir_ / sharded)) {
      index_name = sharded;
      MAMBA_RETURN_IF_ERROR(ReadIndex(dir_ / sharded, &index, &paths));
    } else {
      continue;
    }
    bin = whole == std::string_view("pytorch_model.bin");
    break;
  }
  if (paths.empty() && index_name.empty()) {
    return absl::NotFoundError(
        absl::StrCat(dir_.string(),
                     ": no model.safetensors, model.safetensors.index.json, pytorch_model.bin "
                     "or pytorch_model.bin.index.json"));
  }
  for (const fs::path& p : paths) {
    if (bin) {
      MAMBA_ASSIGN_OR_RETURN(files_.emplace_back(), PytorchBinFile::Open(p));
    } else {
      MAMBA_ASSIGN_OR_RETURN(files_.emplace_back(), SafetensorsFile::Open(p));
    }
    const TensorFile* f = files_.back().get();
    for (const TensorInfo& t : f->tensors()) {
      const std::string fname = p.filename().string();
      if (!index.empty() && index.count(t.name) && index[t.name] != fname) {
        return absl::InvalidArgumentError(
            absl::StrCat(fname, ": tensor '", t.name, "' is indexed in ", index[t.name]));
      }
      if (!by_name_.emplace(t.name, std::make_pair(&t, f)).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(fname, ": tensor '", t.name, "' appears in more than one file"));
      }
    }
  }
  for (const auto& [name, shard] : index) {
    if (!by_name_.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(shard, ": tensor '", name, "' is listed in ", index_name, " but missing"));
    }
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::Bind() {
  const ModelConfig& c = config_;
  const int64_t d = c.hidden_size, e = c.intermediate_size, n = c.state_size, r = c.time_step_rank;
  std::set<std::string> used;
  // Finds `name` (trying aliases in order) and checks its shape; optional ones may be absent.
  auto get = [&](std::vector<std::string> names, std::vector<int64_t> shape, bool required,
                 const TensorInfo** out) -> absl::Status {
    for (const std::string& name : names) {
      auto it = by_name_.find(name);
      if (it == by_name_.end()) continue;
      const TensorInfo& t = *it->second.first;
      if (t.shape != shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            it->second.second->path().filename().string(), ": tensor '", name, "' has shape ",
            ShapeStr(t.shape), ", config.json implies ", ShapeStr(shape)));
      }
      used.insert(name);
      *out = &t;
      return absl::OkStatus();
    }
    if (!required) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat(dir_.filename().string(), ": missing tensor '",
                                            names.front(), "' ", ShapeStr(shape)));
  };
  MAMBA_RETURN_IF_ERROR(get({"backbone.embeddings.weight", "backbone.embedding.weight"},
                            {c.vocab_size, d}, true, &embedding_));
  MAMBA_RETURN_IF_ERROR(get({"backbone.norm_f.weight"}, {d}, true, &norm_f_));
  // Present, lm_head.weight unties the head (whatever the config says, as the issue of record
  // and HF's loading of such files agree); absent, the head is the embedding, which an untied
  // config forbids: silently reusing the embedding would compute a different model.
  // A quantized checkpoint stores an int8 head even for a tied model (the embedding stays float).
  MAMBA_RETURN_IF_ERROR(get({"lm_head.weight"}, {c.vocab_size, d},
                            !c.tie_word_embeddings || Quantizes("lm_head"), &lm_head_));
  // torch.save of a tied model (mamba_ssm's pytorch_model.bin) stores lm_head.weight as the
  // embedding's own bytes: that head is tied, and an engine need not hold it twice.
  if (lm_head_ != nullptr && lm_head_->data == embedding_->data &&
      lm_head_->dtype == embedding_->dtype) {
    lm_head_ = nullptr;
  }
  // What is computed (model info); an int8 head of a tied model is the embedding, quantized.
  if (lm_head_ != nullptr && !Quantizes("lm_head")) config_.tie_word_embeddings = false;
  layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerTensors& L = layers_[static_cast<size_t>(i)];
    const std::string p = absl::StrCat("backbone.layers.", i, ".");
    const std::string m = p + "mixer.";
    const int64_t cd = c.conv_dim(), ip = c.in_proj_size();
    MAMBA_RETURN_IF_ERROR(get({p + "norm.weight"}, {d}, true, &L.norm));
    MAMBA_RETURN_IF_ERROR(get({m + "in_proj.weight"}, {ip, d}, true, &L.in_proj));
    MAMBA_RETURN_IF_ERROR(get({m + "in_proj.bias"}, {ip}, c.use_bias, &L.in_proj_bias));
    MAMBA_RETURN_IF_ERROR(get({m + "conv1d.weight"}, {cd, 1, c.conv_kernel}, true, &L.conv));
    MAMBA_RETURN_IF_ERROR(get({m + "conv1d.bias"}, {cd}, c.use_conv_bias, &L.conv_bias));
    if (c.is_mamba2()) {
      const int64_t h = c.num_heads;
      MAMBA_RETURN_IF_ERROR(get({m + "dt_bias"}, {h}, true, &L.dt_proj_bias));
      MAMBA_RETURN_IF_ERROR(get({m + "A_log"}, {h}, true, &L.a_log));
      MAMBA_RETURN_IF_ERROR(get({m + "D"}, {h}, true, &L.d));
      MAMBA_RETURN_IF_ERROR(get({m + "norm.weight"}, {e}, true, &L.gated_norm));
      MAMBA_RETURN_IF_ERROR(get({m + "out_proj.weight"}, {d, c.mlp_size + e}, true, &L.out_proj));
      MAMBA_RETURN_IF_ERROR(get({m + "out_proj.bias"}, {d}, c.use_bias, &L.out_proj_bias));
      continue;
    }
    MAMBA_RETURN_IF_ERROR(get({m + "x_proj.weight"}, {r + 2 * n, e}, true, &L.x_proj));
    MAMBA_RETURN_IF_ERROR(get({m + "dt_proj.weight"}, {e, r}, true, &L.dt_proj));
    MAMBA_RETURN_IF_ERROR(get({m + "dt_proj.bias"}, {e}, true, &L.dt_proj_bias));
    MAMBA_RETURN_IF_ERROR(get({m + "A_log"}, {e, n}, true, &L.a_log));
    MAMBA_RETURN_IF_ERROR(get({m + "D"}, {e}, true, &L.d));
    MAMBA_RETURN_IF_ERROR(get({m + "out_proj.weight"}, {d, e}, true, &L.out_proj));
    MAMBA_RETURN_IF_ERROR(get({m + "out_proj.bias"}, {d}, c.use_bias, &L.out_proj_bias));
  }
  MAMBA_RETURN_IF_ERROR(BindQuantized(&used));
  for (const auto& [name, where] : by_name_) {
    if (!used.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where.second->path().filename().string(), ": unexpected tensor '", name,
                       "' (not part of a ", std::string(ModelTypeName(c.model_type)),
                       " model with ", c.num_hidden_layers, " layers and this config)"));
    }
  }
  return absl::OkStatus();
}

bool Checkpoint::Quantizes(std::string_view module) const {
  return std::find(quant_modules_.begin(), quant_modules_.end(), module) != quant_modules_.end();
}

// Binds the scales of the int8 matrices quantization_config lists (each must be I8, with F32
// scales [rows, Int8GroupCount(k, group_size)], finite and >= 0) and refuses any other I8 tensor.
absl::Status Checkpoint::BindQuantized(std::set<std::string>* used) {
  auto file = [&](const std::string& name) {
    return by_name_.at(name).second->path().filename().string();
  };
  std::set<std::string> int8;
  auto bind = [&](const char* module, const TensorInfo* t, const TensorInfo** scale) {
    if (t == nullptr || !Quantizes(module)) return absl::OkStatus();  // e.g. Mamba-2's x_proj
    if (t->dtype != DType::kI8) {
      return absl::InvalidArgumentError(
          absl::StrCat(file(t->name), ": tensor '", t->name, "' is ", kernels::Name(t->dtype),
                       " but config.json's quantization_config lists '", module, "' as int8"));
    }
    const int64_t n = t->shape[0], k = t->NumElements() / n;
    const std::vector<int64_t> want = {n,
                                       kernels::cpu::Int8GroupCount(k, quantization_.group_size)};
    const std::string name = Int8ScaleName(t->name);
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      return absl::NotFoundError(absl::StrCat(dir_.filename().string(), ": missing tensor '", name,
                                              "' ", ShapeStr(want), " (the scales of int8 '",
                                              t->name, "')"));
    }
    const TensorInfo& s = *it->second.first;
    if (s.dtype != DType::kF32 || s.shape != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(file(name), ": tensor '", name, "' is ", kernels::Name(s.dtype), " ",
                       ShapeStr(s.shape), "; the scales of '", t->name, "' with group_size ",
                       quantization_.group_size, " are float32 ", ShapeStr(want)));
    }
    for (int64_t i = 0; i < s.NumElements(); ++i) {
      float v;
      std::memcpy(&v, s.data + i * 4, 4);
      if (!(v >= 0.0f) || !std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(file(name), ": tensor '", name, "' holds ",
                                                       v, " at [", i / want[1], ", ", i % want[1],
                                                       "] (scales must be finite and >= 0)"));
      }
    }
    used->insert(name);
    int8.insert(t->name);
    *scale = &s;
    return absl::OkStatus();
  };
  MAMBA_RETURN_IF_ERROR(bind("lm_head", lm_head_, &lm_head_scale_));
  for (LayerTensors& L : layers_) {
    MAMBA_RETURN_IF_ERROR(bind("in_proj", L.in_proj, &L.in_proj_scale));
    MAMBA_RETURN_IF_ERROR(bind("x_proj", L.x_proj, &L.x_proj_scale));
    MAMBA_RETURN_IF_ERROR(bind("dt_proj", L.dt_proj, &L.dt_proj_scale));
    MAMBA_RETURN_IF_ERROR(bind("out_proj", L.out_proj, &L.out_proj_scale));
  }
  for (const auto& [name, where] : by_name_) {
    if (where.first->dtype != DType::kI8 || int8.count(name)) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        file(name), ": tensor '", name, "' is int8 but ",
        quantization_.int8
            ? absl::StrCat("is not a matrix of the modules quantization_config lists (",
                           absl::StrJoin(quant_modules_, ", "), ")")
            : absl::StrCat("config.json has no '", kInt8QuantMethod, "' quantization_config")));
  }
  return absl::OkStatus();
}

void Checkpoint::ReleasePages(const TensorInfo& t) const {
  for (const auto& f : files_) {
    if (f->ReleasePages(t)) return;
  }
}

void Checkpoint::ReleaseAllPages() const {
  for (const auto& [name, where] : by_name_) where.second->ReleasePages(*where.first);
}

std::vector<const TensorInfo*> Checkpoint::tensors() const {
  std::vector<const TensorInfo*> out;
  for (const auto& f : files_) {
    for (const TensorInfo& t : f->tensors()) out.push_back(&t);
  }
  return out;
}

int64_t Checkpoint::stored_bytes() const {
  int64_t total = 0;
  for (const auto& [name, where] : by_name_) total += static_cast<int64_t>(where.first->nbytes);
  return total;
}

}  // namespace mamba::engine
