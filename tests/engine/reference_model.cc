#include "tests/engine/reference_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <regex>

#include "engine/pytorch_bin.h"
#include "engine/safetensors.h"
#include "kernels/cpu/int8_gemm.h"
#include "nlohmann/json.hpp"

namespace mamba::engine::testing {
namespace {

std::vector<double> ToDouble(const TensorInfo* t) {
  if (t == nullptr) return {};
  std::vector<float> f(static_cast<size_t>(t->NumElements()));
  kernels::ConvertToF32(t->data, t->dtype, f.data(), t->NumElements());
  return {f.begin(), f.end()};
}

// A [n, k] matrix as the engine's int8 weights hold it: quantized, then dequantized.
std::vector<double> Int8Dequantized(const TensorInfo* t, int64_t group_size) {
  if (t == nullptr) return {};
  const int64_t n = t->shape[0], k = t->NumElements() / n;
  auto q = kernels::cpu::QuantizeWeight(t->data, t->dtype, n, k, group_size);
  if (!q.ok()) std::abort();  // the engine refuses the same shapes
  const std::vector<float> w = kernels::cpu::DequantizeWeight(*q);
  return {w.begin(), w.end()};
}

// A quantized checkpoint's I8 matrix [n, k] times its F32 scales [n, groups] (groups of
// `group_size` inputs, 0 = the whole row).
std::vector<double> FromInt8(const TensorInfo& t, const TensorInfo& scale, int64_t group_size) {
  const int64_t n = t.shape[0], k = t.NumElements() / n, groups = scale.NumElements() / n;
  const int64_t g = group_size == 0 ? k : group_size;
  const std::vector<double> q = ToDouble(&t), s = ToDouble(&scale);
  std::vector<double> w(q.size());
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t l = 0; l < k; ++l) {
      w[j * k + l] = q[j * k + l] * s[j * groups + std::min(l / g, groups - 1)];
    }
  }
  return w;
}

// y[n] = sum_k W[n, k] x[k] (+ b[n])
std::vector<double> Linear(const std::vector<double>& w, const std::vector<double>& b,
                           const std::vector<double>& x, size_t n) {
  const size_t k = x.size();
  std::vector<double> y(n);
  for (size_t i = 0; i < n; ++i) {
    double acc = b.empty() ? 0.0 : b[i];
    for (size_t j = 0; j < k; ++j) acc += w[i * k + j] * x[j];
    y[i] = acc;
  }
  return y;
}

std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& w,
                            double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = w[i] * (x[i] * inv);
  return y;
}

double Silu(double v) { return v / (1.0 + std::exp(-v)); }
double Softplus(double v) { return v > 20.0 ? v : std::log1p(std::exp(v)); }

}  // namespace

ReferenceModel::ReferenceModel(const Checkpoint& ck, const ReferenceOptions& options)
    : c_(ck.config()), options_(options) {
  // A matrix as the engine computes with it: a quantized checkpoint's int8 values as stored,
  // else quantized at load for int8 compute, else as stored.
  auto matrix = [&](const TensorInfo* t, const TensorInfo* scale = nullptr) {
    if (t != nullptr && t->dtype == kernels::DType::kI8) {
      if (scale == nullptr) std::abort();  // Checkpoint::Open refuses an I8 matrix without one
      return FromInt8(*t, *scale, ck.quantization().group_size);
    }
    return options.int8 ? Int8Dequantized(t, options.int8_group_size) : ToDouble(t);
  };
  embedding_ = ToDouble(&ck.embedding());
  norm_f_ = ToDouble(&ck.norm_f());
  lm_head_ = ck.lm_head() ? matrix(ck.lm_head(), ck.lm_head_scale()) : matrix(&ck.embedding());
  for (int64_t i = 0; i < c_.num_hidden_layers; ++i) {
    const LayerTensors& t = ck.layer(i);
    Layer L{ToDouble(t.norm),
            matrix(t.in_proj, t.in_proj_scale),
            ToDouble(t.in_proj_bias),
            ToDouble(t.conv),
            ToDouble(t.conv_bias),
            matrix(t.x_proj, t.x_proj_scale),
            options.int8_dt_proj || t.dt_proj_scale ? matrix(t.dt_proj, t.dt_proj_scale)
                                                    : ToDouble(t.dt_proj),
            ToDouble(t.dt_proj_bias),
            ToDouble(t.a_log),
            ToDouble(t.d),
            matrix(t.out_proj, t.out_proj_scale),
            ToDouble(t.out_proj_bias),
            ToDouble(t.gated_norm),
            {},
            {},
            {}};
    layers_.push_back(std::move(L));
  }
  if (!options.lora_dir.empty()) ReadLora(options.lora_dir);
  Reset();
}

namespace {

// PEFT's rule for rank_pattern / alpha_pattern: the first key K (in the file's order) for which
// the module's name matches "(.*\.)?(K)$" from its start.
template <typename Json>
std::optional<double> PatternValue(const Json& patterns, const std::string& module) {
  if (!patterns.is_object()) return std::nullopt;
  for (auto it = patterns.begin(); it != patterns.end(); ++it) {
    if (std::regex_match(module, std::regex("(.*\\.)?(" + it.key() + ")"))) {
      return it.value().template get<double>();
    }
  }
  return std::nullopt;
}

}  // namespace

void ReferenceModel::ReadLora(const std::filesystem::path& dir) {
  std::ifstream in(dir / "adapter_config.json");
  const auto config = nlohmann::ordered_json::parse(in);
  std::unique_ptr<TensorFile> file;
  if (std::filesystem::exists(dir / "adapter_model.safetensors")) {
    file = *SafetensorsFile::Open(dir / "adapter_model.safetensors");
  } else {
    file = *PytorchBinFile::Open(dir / "adapter_model.bin");
  }
  const std::string prefix = "base_model.model.";
  // module name (without the prefix) -> [A, B]
  std::map<std::string, std::pair<const TensorInfo*, const TensorInfo*>> found;
  for (const TensorInfo& t : file->tensors()) {
    for (const auto& [suffix, is_a] : {std::pair{".lora_A.weight", true},
                                       {".lora_B.weight", false},
                                       {".lora_embedding_A", true},
                                       {".lora_embedding_B", false}}) {
      const std::string sfx = suffix;
      if (t.name.size() > sfx.size() && t.name.ends_with(sfx)) {
        const std::string module =
            t.name.substr(prefix.size(), t.name.size() - prefix.size() - sfx.size());
        (is_a ? found[module].first : found[module].second) = &t;
      }
    }
  }
  const auto r0 = config["r"].get<double>();
  const auto alpha0 = config["lora_alpha"].get<double>();
  const bool rslora = config.value("use_rslora", false);
  for (const auto& [module, ab] : found) {
    if (ab.first == nullptr || ab.second == nullptr) std::abort();  // the loader refuses these
    Lora lora;
    lora.rank = static_cast<size_t>(ab.first->shape[0]);
    const double r = PatternValue(config["rank_pattern"], module).value_or(r0);
    const double alpha = PatternValue(config["alpha_pattern"], module).value_or(alpha0);
    if (static_cast<double>(lora.rank) != r) std::abort();  // the loader refuses these too
    lora.scale = rslora ? alpha / std::sqrt(r) : alpha / r;
    lora.a = ToDouble(ab.first);
    lora.b = ToDouble(ab.second);
    if (module == "backbone.embeddings") {
      lora_embeddings_ = std::move(lora);
    } else if (module == "lm_head") {
      lora_head_ = std::move(lora);
    } else {  // backbone.layers.{i}.mixer.{name}
      const size_t at = std::string("backbone.layers.").size();
      const size_t dot = module.find('.', at);
      const auto layer = std::stoul(module.substr(at, dot - at));
      const std::string name = module.substr(module.rfind('.') + 1);
      layers_.at(layer).lora[name] = std::move(lora);
    }
  }
}

void ReferenceModel::Lora::AddTo(const std::vector<double>& x, std::vector<double>& y) const {
  const size_t in = x.size(), out = y.size();
  std::vector<double> t(rank, 0.0);
  for (size_t j = 0; j < rank; ++j) {
    for (size_t k = 0; k < in; ++k) t[j] += a[j * in + k] * x[k];
  }
  for (size_t o = 0; o < out; ++o) {
    double acc = 0;
    for (size_t j = 0; j < rank; ++j) acc += b[o * rank + j] * t[j];
    y[o] += scale * acc;
  }
}

void ReferenceModel::AddLora(const Layer& L, const char* name, const std::vector<double>& x,
                             std::vector<double>& y) {
  if (auto it = L.lora.find(name); it != L.lora.end()) it->second.AddTo(x, y);
}

void ReferenceModel::Reset() {
  for (Layer& L : layers_) {
    L.conv_state.assign(static_cast<size_t>(c_.conv_dim() * c_.conv_kernel), 0.0);
    L.ssm_state.assign(static_cast<size_t>(c_.intermediate_size * c_.state_size), 0.0);
  }
}

std::vector<double> ReferenceModel::Project(const std::vector<double>& w,
                                            const std::vector<double>& b,
                                            const std::vector<double>& x, size_t n) const {
  if (!options_.int8 || !options_.int8_activations) return Linear(w, b, x, n);
  // Per row: scale max|x| / 127, q = round-to-nearest-even(x * 127 / max|x|).
  double amax = 0;
  for (double v : x) amax = std::max(amax, std::fabs(v));
  std::vector<double> xq(x.size(), 0.0);
  if (amax > 0) {
    for (size_t i = 0; i < x.size(); ++i) {
      xq[i] = std::clamp(std::nearbyint(x[i] * 127.0 / amax), -127.0, 127.0) * (amax / 127.0);
    }
  }
  return Linear(w, b, xq, n);
}

std::vector<double> ReferenceModel::Forward(std::span<const TokenId> tokens) {
  std::vector<double> logits;
  for (TokenId t : tokens) logits = Step(t);
  return logits;
}

namespace {

// Shifts `in` into a conv state [channels, K] (newest last) and returns silu(conv + bias).
std::vector<double> ConvStep(std::vector<double>& state, const std::vector<double>& weight,
                             const std::vector<double>& bias, const std::vector<double>& in,
                             size_t K) {
  std::vector<double> out(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    double* s = &state[i * K];
    for (size_t k = 0; k + 1 < K; ++k) s[k] = s[k + 1];  // roll left, newest last
    s[K - 1] = in[i];
    double acc = bias.empty() ? 0.0 : bias[i];
    for (size_t k = 0; k < K; ++k) acc += weight[i * K + k] * s[k];
    out[i] = Silu(acc);
  }
  return out;
}

}  // namespace

std::vector<double> ReferenceModel::Step(TokenId token) {
  const auto d = static_cast<size_t>(c_.hidden_size);
  std::vector<double> h(embedding_.begin() + token * d, embedding_.begin() + (token + 1) * d);
  if (lora_embeddings_) {  // PEFT's Embedding: + scale * B A[:, token]
    const Lora& e = *lora_embeddings_;
    const auto vocab = e.a.size() / e.rank;
    for (size_t i = 0; i < d; ++i) {
      double acc = 0;
      for (size_t j = 0; j < e.rank; ++j) acc += e.b[i * e.rank + j] * e.a[j * vocab + token];
      h[i] += e.scale * acc;
    }
  }
  for (Layer& L : layers_) {
    const std::vector<double> u = RmsNorm(h, L.norm, c_.layer_norm_epsilon);
    const std::vector<double> out = c_.is_mamba2() ? Mamba2Mixer(L, u) : Mamba1Mixer(L, u);
    for (size_t i = 0; i < d; ++i) h[i] += out[i];
  }
  const std::vector<double> normed = RmsNorm(h, norm_f_, c_.layer_norm_epsilon);
  std::vector<double> logits = Project(lm_head_, {}, normed, static_cast<size_t>(c_.vocab_size));
  if (lora_head_) lora_head_->AddTo(normed, logits);
  return logits;
}

std::vector<double> ReferenceModel::Mamba1Mixer(Layer& L, const std::vector<double>& u) {
  const auto d = static_cast<size_t>(c_.hidden_size), e = static_cast<size_t>(c_.intermediate_size),
             n = static_cast<size_t>(c_.state_size), r = static_cast<size_t>(c_.time_step_rank),
             K = static_cast<size_t>(c_.conv_kernel);
  std::vector<double> xz = Project(L.in_proj, L.in_bias, u, 2 * e);
  AddLora(L, "in_proj", u, xz);
  const std::vector<double> x =
      ConvStep(L.conv_state, L.conv, L.conv_bias, {xz.begin(), xz.begin() + long(e)}, K);
  std::vector<double> y(e);
  std::vector<double> dbc = Project(L.x_proj, {}, x, r + 2 * n);
  AddLora(L, "x_proj", x, dbc);  // before FalconMamba's norms: the LoRA is x_proj's
  if (c_.mixer_rms_norm()) {     // FalconMamba: dt, B and C each RMS-normalised, no weight
    for (auto [at, len] : {std::pair{size_t{0}, r}, {r, n}, {r + n, n}}) {
      double sum = 0;
      for (size_t i = at; i < at + len; ++i) sum += dbc[i] * dbc[i];
      const double inv = 1.0 / std::sqrt(sum / static_cast<double>(len) + c_.mixer_rms_eps);
      for (size_t i = at; i < at + len; ++i) dbc[i] *= inv;
    }
  }
  const std::vector<double> dt_in(dbc.begin(), dbc.begin() + static_cast<long>(r));
  std::vector<double> dt_lin = options_.int8_dt_proj ? Project(L.dt_proj, L.dt_bias, dt_in, e)
                                                     : Linear(L.dt_proj, L.dt_bias, dt_in, e);
  AddLora(L, "dt_proj", dt_in, dt_lin);
  for (size_t i = 0; i < e; ++i) {
    const double dt = Softplus(dt_lin[i]);
    double acc = 0;
    for (size_t s = 0; s < n; ++s) {
      const double a = -std::exp(L.a_log[i * n + s]);
      double& hs = L.ssm_state[i * n + s];
      hs = std::exp(dt * a) * hs + dt * dbc[r + s] * x[i];
      acc += hs * dbc[r + n + s];
    }
    y[i] = (acc + L.d[i] * x[i]) * Silu(xz[e + i]);
  }
  std::vector<double> out = Project(L.out_proj, L.out_bias, y, d);
  AddLora(L, "out_proj", y, out);
  return out;
}

// HF Mamba2Mixer.torch_forward with a cache and one token (its decode branch): in_proj ->
// [z0 | x0 | z | xBC | dt] (mamba_ssm's order; z0, x0 only with an MLP split), conv + SiLU over
// xBC, per head: dt = clamp(softplus(dt + dt_bias)), state = exp(dt A) state + dt x B^T (state
// [head_dim, d_state] as HF holds it), y = state C + D x; then RMSNormGated (norm_before_gate
// False: y * silu(z), normalised per group of d_inner / n_groups) and out_proj over
// [silu(z0) * x0 | y].
std::vector<double> ReferenceModel::Mamba2Mixer(Layer& L, const std::vector<double>& u) {
  const auto d = static_cast<size_t>(c_.hidden_size), e = static_cast<size_t>(c_.intermediate_size),
             n = static_cast<size_t>(c_.state_size), K = static_cast<size_t>(c_.conv_kernel),
             H = static_cast<size_t>(c_.num_heads), P = static_cast<size_t>(c_.head_dim),
             G = static_cast<size_t>(c_.n_groups), mlp = static_cast<size_t>(c_.mlp_size),
             cd = static_cast<size_t>(c_.conv_dim());
  std::vector<double> proj = Project(L.in_proj, L.in_bias, u, 2 * mlp + e + cd + H);
  AddLora(L, "in_proj", u, proj);
  const double* z0 = proj.data();
  const double* x0 = z0 + mlp;
  const double* z = x0 + mlp;
  const std::vector<double> xbc_in(z + e, z + e + cd);
  const double* dt_raw = z + e + cd;
  const std::vector<double> xbc = ConvStep(L.conv_state, L.conv, L.conv_bias, xbc_in, K);
  const double* x = xbc.data();
  const double* B = x + e;
  const double* C = B + G * n;
  std::vector<double> y(e);
  for (size_t h = 0; h < H; ++h) {
    const size_t g = h / (H / G);
    double dt = Softplus(dt_raw[h] + L.dt_bias[h]);
    dt = std::max(dt, c_.time_step_min_limit);
    if (c_.time_step_max_limit > 0) dt = std::min(dt, c_.time_step_max_limit);
    const double dA = std::exp(dt * -std::exp(L.a_log[h]));
    for (size_t p = 0; p < P; ++p) {
      const size_t ch = h * P + p;
      double acc = 0;
      for (size_t s = 0; s < n; ++s) {
        double& st = L.ssm_state[(h * P + p) * n + s];
        st = st * dA + dt * B[g * n + s] * x[ch];
        acc += st * C[g * n + s];
      }
      y[ch] = (acc + x[ch] * L.d[h]) * Silu(z[ch]);
    }
  }
  std::vector<double> full(mlp + e);
  for (size_t i = 0; i < mlp; ++i) full[i] = Silu(z0[i]) * x0[i];
  const size_t gs = e / G;
  for (size_t g = 0; g < G; ++g) {
    const std::vector<double> part(y.begin() + long(g * gs), y.begin() + long((g + 1) * gs));
    const std::vector<double> w(L.gated_norm.begin() + long(g * gs),
                                L.gated_norm.begin() + long((g + 1) * gs));
    const std::vector<double> normed = RmsNorm(part, w, c_.layer_norm_epsilon);
    std::copy(normed.begin(), normed.end(), full.begin() + long(mlp + g * gs));
  }
  std::vector<double> out = Project(L.out_proj, L.out_bias, full, d);
  AddLora(L, "out_proj", full, out);
  return out;
}

std::vector<TokenId> ReferenceGreedy(ReferenceModel& ref, std::span<const TokenId> prompt, size_t n,
                                     double min_margin) {
  ref.Reset();
  std::vector<double> logits = ref.Forward(prompt);
  std::vector<TokenId> out;
  while (out.size() < n) {
    std::vector<double> top = logits;
    std::partial_sort(top.begin(), top.begin() + 2, top.end(), std::greater<>());
    if (top[0] - top[1] < min_margin) break;
    const auto best =
        static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(best);
    logits = ref.Forward({&out.back(), 1});
  }
  return out;
}

}  // namespace mamba::engine::testing
