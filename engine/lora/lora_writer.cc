#include "engine/lora/lora_writer.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/hash.h"
#include "engine/lora/lora_adapter.h"
#include "engine/pytorch_bin_writer.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using kernels::DType;
using ojson = nlohmann::ordered_json;

// What the update is sized against: its std over the module's output std on a
// WriteRandomCheckpoint model.
constexpr double kUpdateRatio = 0.2;

// lora_B's std for `p` giving an update of kUpdateRatio times the base module's output, with
// A ~ U(+-1/sqrt(in)) (so x A^T has std rms(x) / sqrt(3) per rank). The base weights are
// U(+-1/sqrt(in)) for in_proj, x_proj and dt_proj (output std rms(x) / sqrt(3)),
// U(+-1/sqrt(in * layers)) for out_proj, and N(0, 0.02) for the embeddings and the LM head.
double AutoBStd(const LoraModulePlan& p, const ModelConfig& c) {
  const double lora = p.scale * std::sqrt(static_cast<double>(p.rank));  // per unit of B's std
  switch (p.target) {
    case LoraTarget::kOutProj:
      return kUpdateRatio / (lora * std::sqrt(static_cast<double>(c.num_hidden_layers)));
    case LoraTarget::kEmbeddings:
    case LoraTarget::kLmHead:
      return kUpdateRatio * 0.02 * std::sqrt(3.0 * static_cast<double>(p.in)) / lora;
    default:
      return kUpdateRatio / lora;
  }
}

std::vector<std::byte> Encode(const std::vector<float>& v, DType dtype) {
  std::vector<std::byte> out(v.size() * kernels::SizeOf(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(out.data() + i * 4, &v[i], 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? kernels::F32ToBf16(v[i]) : kernels::F32ToF16(v[i]);
      std::memcpy(out.data() + i * 2, &h, 2);
    }
  }
  return out;
}

// A module's own random stream: its weights do not depend on which other modules are written.
std::mt19937_64 ModuleRng(uint64_t seed, const std::string& key) {
  Hash128 h;
  h.Update(static_cast<int64_t>(seed));
  h.Update(key);
  return std::mt19937_64(std::stoull(h.Hex().substr(0, 16), nullptr, 16));
}

struct Pending {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

}  // namespace

ojson RandomLoraConfigJson(const RandomLoraOptions& o) {
  // PEFT users give lora_alpha as an integer (the default, 8, is one) and PEFT writes it as given.
  auto number = [](double v) {
    return v == std::floor(v) && std::abs(v) < 1e15 ? ojson(static_cast<int64_t>(v)) : ojson(v);
  };
  ojson rank_pattern = ojson::object(), alpha_pattern = ojson::object();
  for (const auto& [k, v] : o.rank_pattern) rank_pattern[k] = v;
  for (const auto& [k, v] : o.alpha_pattern) alpha_pattern[k] = number(v);
  const ojson alpha = number(o.alpha);
  ojson j = ojson::object();  // PEFT 0.13's keys, in its (sorted) order
  j["alpha_pattern"] = alpha_pattern;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = nullptr;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layer_replication"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] =
      o.layers_to_transform.empty() ? ojson(nullptr) : ojson(o.layers_to_transform);
  j["loftq_config"] = ojson::object();
  j["lora_alpha"] = alpha;
  j["lora_dropout"] = 0.0;
  j["megatron_config"] = nullptr;
  j["megatron_core"] = "megatron.core";
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = o.rank;
  j["rank_pattern"] = rank_pattern;
  j["revision"] = nullptr;
  j["target_modules"] = o.target_modules;
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = o.use_rslora;
  return j;
}

absl::Status WriteRandomLoraAdapter(const RandomLoraOptions& o, const fs::path& dir) {
  if (o.dtype == DType::kI8) return absl::InvalidArgumentError("LoRA weights cannot be int8");
  const ojson config = RandomLoraConfigJson(o);
  LoraLoadOptions unlimited;
  unlimited.max_rank = INT64_MAX;
  MAMBA_ASSIGN_OR_RETURN(std::vector<LoraModulePlan> plan,
                         PlanLoraModules(config, o.config, unlimited));

  std::vector<Pending> tensors;
  for (const LoraModulePlan& p : plan) {
    std::mt19937_64 rng = ModuleRng(o.seed, p.key);
    std::uniform_real_distribution<float> a_dist(-1.0f, 1.0f);
    const float a_bound = 1.0f / std::sqrt(static_cast<float>(p.in));
    std::vector<float> a(static_cast<size_t>(p.rank * p.in)),
        b(static_cast<size_t>(p.out * p.rank));
    for (float& v : a) v = a_bound * a_dist(rng);
    const double b_std = o.b_std < 0 ? AutoBStd(p, o.config) : o.b_std;
    std::normal_distribution<float> b_dist(0.0f, 1.0f);
    for (float& v : b) v = b_std > 0 ? static_cast<float>(b_std) * b_dist(rng) : 0.0f;
    const std::string base = absl::StrCat("base_model.model.", p.key);
    const bool emb = p.target == LoraTarget::kEmbeddings;
    tensors.push_back({base + (emb ? ".lora_embedding_A" : ".lora_A.weight"),
                       {p.rank, p.in},
                       Encode(a, o.dtype)});
    tensors.push_back({base + (emb ? ".lora_embedding_B" : ".lora_B.weight"),
                       {p.out, p.rank},
                       Encode(b, o.dtype)});
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  {
    std::ofstream out(dir / "adapter_config.json");
    out << config.dump(2);
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(dir.string(), ": write failed"));
  }
  std::vector<TensorToWrite> views;
  for (const Pending& t : tensors) {
    views.push_back({t.name, o.dtype, t.shape, std::span<const std::byte>(t.bytes)});
  }
  return o.format == LoraFileFormat::kPytorchBin
             ? WritePytorchBin(dir / "adapter_model.bin", views)
             : WriteSafetensors(dir / "adapter_model.safetensors", views);
}

}  // namespace mamba::engine
