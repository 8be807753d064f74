#include "engine/checkpoint_writer.h"

#include <cmath>
#include <fstream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/pytorch_bin_writer.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using kernels::DType;
using nlohmann::json;

// A named tensor being generated, in fp32 until it is encoded to the target dtype.
struct Pending {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

class Generator {
 public:
  Generator(uint64_t seed, DType dtype) : rng_(seed), dtype_(dtype) {}

  void Normal(Pending& t, float std) {
    std::normal_distribution<float> dist(0.0f, std);
    Fill(t, [&](int64_t) { return dist(rng_); });
  }
  void Uniform(Pending& t, float bound) {
    std::uniform_real_distribution<float> dist(-bound, bound);
    Fill(t, [&](int64_t) { return dist(rng_); });
  }
  void Constant(Pending& t, float v, float noise) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    Fill(t, [&](int64_t) { return noise > 0 ? v + noise * dist(rng_) : v; });
  }
  template <typename F>
  void Fill(Pending& t, F&& value) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    t.bytes.resize(static_cast<size_t>(n) * kernels::SizeOf(dtype_));
    for (int64_t i = 0; i < n; ++i) {
      const float v = value(i);
      if (dtype_ == DType::kF32) {
        std::memcpy(t.bytes.data() + i * 4, &v, 4);
      } else {
        const uint16_t h = dtype_ == DType::kBF16 ? kernels::F32ToBf16(v) : kernels::F32ToF16(v);
        std::memcpy(t.bytes.data() + i * 2, &h, 2);
      }
    }
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
  DType dtype_;
};

// A Mamba-2 mixer (mamba_ssm's Mamba2 initialisation: A = U(1, 16) per head, D and the gated
// norm's weight ones, dt in [1e-3, 1e-1]).
template <typename Add, typename DtBias>
void AddMamba2Mixer(const ModelConfig& c, const std::string& m, float noise, Generator& g, Add& add,
                    DtBias& dt_bias) {
  const int64_t d = c.hidden_size, e = c.intermediate_size, h = c.num_heads, cd = c.conv_dim();
  g.Uniform(add(m + "in_proj.weight", {c.in_proj_size(), d}),
            1.0f / std::sqrt(static_cast<float>(d)));
  if (c.use_bias) g.Constant(add(m + "in_proj.bias", {c.in_proj_size()}), 0.0f, noise);
  const float conv_bound = 1.0f / std::sqrt(static_cast<float>(c.conv_kernel));
  g.Uniform(add(m + "conv1d.weight", {cd, 1, c.conv_kernel}), conv_bound);
  if (c.use_conv_bias) g.Uniform(add(m + "conv1d.bias", {cd}), conv_bound);
  dt_bias(add(m + "dt_bias", {h}));
  std::uniform_real_distribution<float> a(1.0f, 16.0f);
  g.Fill(add(m + "A_log", {h}), [&](int64_t) { return std::log(a(g.rng())); });
  g.Constant(add(m + "D", {h}), 1.0f, noise);
  g.Constant(add(m + "norm.weight", {e}), 1.0f, noise);
  g.Uniform(add(m + "out_proj.weight", {d, c.mlp_size + e}),
            1.0f / std::sqrt(static_cast<float>((c.mlp_size + e) * c.num_hidden_layers)));
  if (c.use_bias) g.Constant(add(m + "out_proj.bias", {d}), 0.0f, noise);
}

std::vector<Pending> MakeTensors(const RandomCheckpointOptions& o) {
  const ModelConfig& c = o.config;
  const int64_t d = c.hidden_size, e = c.intermediate_size, n = c.state_size, r = c.time_step_rank;
  const float noise = o.perturb_constants ? 0.1f : 0.0f;
  Generator g(o.seed, o.dtype);
  std::vector<Pending> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) -> Pending& {
    out.push_back(Pending{std::move(name), std::move(shape), {}});
    return out.back();
  };
  g.Normal(add(o.mamba_ssm_layout ? "backbone.embedding.weight" : "backbone.embeddings.weight",
               {c.vocab_size, d}),
           0.02f);
  // dt = exp(U(log 1e-3, log 1e-1)), bias = softplus^-1(dt) = dt + log(-expm1(-dt)).
  auto dt_bias = [&g](Pending& t) {
    std::uniform_real_distribution<float> log_dt(std::log(1e-3f), std::log(1e-1f));
    g.Fill(t, [&](int64_t) {
      const float dt = std::max(std::exp(log_dt(g.rng())), 1e-4f);
      return dt + std::log(-std::expm1(-dt));
    });
  };
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("backbone.layers.", i, ".");
    const std::string m = p + "mixer.";
    g.Constant(add(p + "norm.weight", {d}), 1.0f, noise);
    if (c.is_mamba2()) {
      AddMamba2Mixer(c, m, noise, g, add, dt_bias);
      continue;
    }
    g.Uniform(add(m + "in_proj.weight", {2 * e, d}), 1.0f / std::sqrt(static_cast<float>(d)));
    if (c.use_bias) g.Constant(add(m + "in_proj.bias", {2 * e}), 0.0f, noise);
    const float conv_bound = 1.0f / std::sqrt(static_cast<float>(c.conv_kernel));
    g.Uniform(add(m + "conv1d.weight", {e, 1, c.conv_kernel}), conv_bound);
    if (c.use_conv_bias) g.Uniform(add(m + "conv1d.bias", {e}), conv_bound);
    g.Uniform(add(m + "x_proj.weight", {r + 2 * n, e}), 1.0f / std::sqrt(static_cast<float>(e)));
    g.Uniform(add(m + "dt_proj.weight", {e, r}), 1.0f / std::sqrt(static_cast<float>(r)));
    dt_bias(add(m + "dt_proj.bias", {e}));
    g.Fill(add(m + "A_log", {e, n}),
           [&](int64_t k) { return std::log(static_cast<float>(k % n + 1)); });
    g.Constant(add(m + "D", {e}), 1.0f, noise);
    g.Uniform(add(m + "out_proj.weight", {d, e}),
              1.0f / std::sqrt(static_cast<float>(e * c.num_hidden_layers)));
    if (c.use_bias) g.Constant(add(m + "out_proj.bias", {d}), 0.0f, noise);
  }
  g.Constant(add("backbone.norm_f.weight", {d}), 1.0f, noise);
  if (o.untied_head) g.Normal(add("lm_head.weight", {c.vocab_size, d}), 0.02f);
  return out;
}

json MambaSsmConfig(const ModelConfig& c) {
  // The layout has no intermediate_size: WriteRandomCheckpoint refuses a d_inner that is not a
  // whole multiple of d_model rather than truncating it here.
  if (c.is_mamba2()) {
    const int64_t d_inner = c.intermediate_size + c.mlp_size;
    json ssm{{"layer", "Mamba2"},          {"d_state", c.state_size},
             {"d_conv", c.conv_kernel},    {"expand", d_inner / c.hidden_size},
             {"headdim", c.head_dim},      {"ngroups", c.n_groups},
             {"chunk_size", c.chunk_size}, {"conv_bias", c.use_conv_bias},
             {"bias", c.use_bias}};
    if (c.mlp_size > 0) ssm["d_ssm"] = c.intermediate_size;
    if (c.time_step_min_limit > 0 || c.time_step_max_limit > 0) {
      ssm["dt_limit"] = {c.time_step_min_limit, c.time_step_max_limit > 0
                                                    ? json(c.time_step_max_limit)
                                                    : json("Infinity")};
    }
    return json{{"d_model", c.hidden_size},
                {"d_intermediate", 0},
                {"n_layer", c.num_hidden_layers},
                {"vocab_size", c.vocab_size},
                {"ssm_cfg", ssm},
                {"rms_norm", true},
                {"residual_in_fp32", c.residual_in_fp32},
                {"fused_add_norm", true},
                {"pad_vocab_size_multiple", 16},
                {"tie_embeddings", c.tie_word_embeddings}};
  }
  return json{{"d_model", c.hidden_size},
              {"n_layer", c.num_hidden_layers},
              {"vocab_size", c.vocab_size},
              {"ssm_cfg",
               {{"d_state", c.state_size},
                {"d_conv", c.conv_kernel},
                {"expand", c.intermediate_size / c.hidden_size},
                {"dt_rank", c.time_step_rank},
                {"conv_bias", c.use_conv_bias},
                {"bias", c.use_bias}}},
              {"rms_norm", true},
              {"residual_in_fp32", c.residual_in_fp32},
              {"fused_add_norm", true},
              {"pad_vocab_size_multiple", 8},
              {"tie_embeddings", c.tie_word_embeddings}};
}

// JSON as Python's json module writes it: an infinite time_step_limit bound, held as the string
// "Infinity" (JSON has no spelling for it), becomes the bare Infinity that transformers and
// mamba_ssm read as float('inf') (ReadJsonFile reads it back).
std::string PythonJson(const json& j) {
  std::string text = j.dump(2);
  for (size_t at = 0; (at = text.find("\"Infinity\"", at)) != std::string::npos;) {
    text.replace(at, 10, "Infinity");
  }
  return text;
}

absl::Status WriteJson(const fs::path& path, const json& j) { return WriteJsonFile(path, j); }

absl::Status WriteShards(const RandomCheckpointOptions& o, const std::vector<Pending>& tensors,
                         const fs::path& dir) {
  auto view = [&](const Pending& p) {
    return TensorToWrite{p.name, o.dtype, p.shape, std::span<const std::byte>(p.bytes)};
  };
  const bool bin = o.format == CheckpointFormat::kPytorchBin;
  auto write = [&](const fs::path& path, const std::vector<TensorToWrite>& part) {
    return bin ? WritePytorchBin(path, part) : WriteSafetensors(path, part);
  };
  if (o.shards <= 1) {
    std::vector<TensorToWrite> all;
    for (const Pending& p : tensors) all.push_back(view(p));
    return write(dir / (bin ? "pytorch_model.bin" : "model.safetensors"), all);
  }
  int64_t total = 0;
  for (const Pending& p : tensors) total += static_cast<int64_t>(p.bytes.size());
  json weight_map = json::object();
  size_t next = 0;
  int64_t written = 0;
  for (int s = 0; s < o.shards; ++s) {
    const std::string name =
        bin ? absl::StrFormat("pytorch_model-%05d-of-%05d.bin", s + 1, o.shards)
            : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, o.shards);
    std::vector<TensorToWrite> part;
    int64_t bytes = 0;
    const int64_t budget = total * (s + 1) / o.shards;
    while (next < tensors.size() &&
           (s == o.shards - 1 || written + bytes < budget || part.empty())) {
      part.push_back(view(tensors[next]));
      weight_map[tensors[next].name] = name;
      bytes += static_cast<int64_t>(tensors[next].bytes.size());
      ++next;
    }
    written += bytes;
    MAMBA_RETURN_IF_ERROR(write(dir / name, part));
  }
  return WriteJson(dir / (bin ? "pytorch_model.bin.index.json" : "model.safetensors.index.json"),
                   json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
}

}  // namespace

absl::Status WriteJsonFile(const fs::path& path, const json& j) {
  std::ofstream out(path);
  out << PythonJson(j) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

absl::Status WriteRandomCheckpoint(const RandomCheckpointOptions& o, const fs::path& dir) {
  MAMBA_RETURN_IF_ERROR(o.config.Validate());
  const int64_t d_inner = o.config.intermediate_size + o.config.mlp_size;
  if (o.mamba_ssm_layout && d_inner % o.config.hidden_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the mamba_ssm layout stores an integer expand: d_inner ", d_inner,
                     " is not a multiple of hidden_size ", o.config.hidden_size));
  }
  if (!o.mamba_ssm_layout && o.config.mlp_size > 0) {
    return absl::InvalidArgumentError(
        "HF's Mamba2Config has no MLP split (mamba_ssm's d_ssm): write the mamba_ssm layout");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  ModelConfig config = o.config;
  config.tie_word_embeddings = !o.untied_head;
  json cfg = o.mamba_ssm_layout ? MambaSsmConfig(config) : config.ToJson();
  if (!o.mamba_ssm_layout) cfg["torch_dtype"] = std::string(kernels::Name(o.dtype));
  MAMBA_RETURN_IF_ERROR(WriteJson(dir / "config.json", cfg));
  MAMBA_RETURN_IF_ERROR(WriteShards(o, MakeTensors(o), dir));
  if (!o.tokenizer_json.empty()) {
    fs::copy_file(o.tokenizer_json, dir / "tokenizer.json", fs::copy_options::overwrite_existing,
                  ec);
    if (ec) return absl::InternalError(absl::StrCat(o.tokenizer_json.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace mamba::engine
