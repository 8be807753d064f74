#include "tests/engine/reference_model.h"

#include <algorithm>
#include <cmath>
#include <functional>

namespace mamba::engine::testing {
namespace {

std::vector<double> ToDouble(const TensorInfo* t) {
  if (t == nullptr) return {};
  std::vector<float> f(static_cast<size_t>(t->NumElements()));
  kernels::ConvertToF32(t->data, t->dtype, f.data(), t->NumElements());
  return {f.begin(), f.end()};
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

ReferenceModel::ReferenceModel(const Checkpoint& ck) : c_(ck.config()) {
  embedding_ = ToDouble(&ck.embedding());
  norm_f_ = ToDouble(&ck.norm_f());
  lm_head_ = ck.lm_head() ? ToDouble(ck.lm_head()) : embedding_;
  for (int64_t i = 0; i < c_.num_hidden_layers; ++i) {
    const LayerTensors& t = ck.layer(i);
    Layer L{ToDouble(t.norm),
            ToDouble(t.in_proj),
            ToDouble(t.in_proj_bias),
            ToDouble(t.conv),
            ToDouble(t.conv_bias),
            ToDouble(t.x_proj),
            ToDouble(t.dt_proj),
            ToDouble(t.dt_proj_bias),
            ToDouble(t.a_log),
            ToDouble(t.d),
            ToDouble(t.out_proj),
            ToDouble(t.out_proj_bias),
            {},
            {}};
    layers_.push_back(std::move(L));
  }
  Reset();
}

void ReferenceModel::Reset() {
  for (Layer& L : layers_) {
    L.conv_state.assign(static_cast<size_t>(c_.intermediate_size * c_.conv_kernel), 0.0);
    L.ssm_state.assign(static_cast<size_t>(c_.intermediate_size * c_.state_size), 0.0);
  }
}

std::vector<double> ReferenceModel::Forward(std::span<const TokenId> tokens) {
  std::vector<double> logits;
  for (TokenId t : tokens) logits = Step(t);
  return logits;
}

std::vector<double> ReferenceModel::Step(TokenId token) {
  const auto d = static_cast<size_t>(c_.hidden_size), e = static_cast<size_t>(c_.intermediate_size),
             n = static_cast<size_t>(c_.state_size), r = static_cast<size_t>(c_.time_step_rank),
             K = static_cast<size_t>(c_.conv_kernel);
  std::vector<double> h(embedding_.begin() + token * d, embedding_.begin() + (token + 1) * d);
  for (Layer& L : layers_) {
    const std::vector<double> xz =
        Linear(L.in_proj, L.in_bias, RmsNorm(h, L.norm, c_.layer_norm_epsilon), 2 * e);
    std::vector<double> x(e), y(e);
    for (size_t i = 0; i < e; ++i) {
      double* s = &L.conv_state[i * K];
      for (size_t k = 0; k + 1 < K; ++k) s[k] = s[k + 1];  // roll left, newest last
      s[K - 1] = xz[i];
      double acc = L.conv_bias.empty() ? 0.0 : L.conv_bias[i];
      for (size_t k = 0; k < K; ++k) acc += L.conv[i * K + k] * s[k];
      x[i] = Silu(acc);
    }
    std::vector<double> dbc = Linear(L.x_proj, {}, x, r + 2 * n);
    if (c_.mixer_rms_norm()) {  // FalconMamba: dt, B and C each RMS-normalised, no weight
      for (auto [at, len] : {std::pair{size_t{0}, r}, {r, n}, {r + n, n}}) {
        double sum = 0;
        for (size_t i = at; i < at + len; ++i) sum += dbc[i] * dbc[i];
        const double inv = 1.0 / std::sqrt(sum / static_cast<double>(len) + c_.mixer_rms_eps);
        for (size_t i = at; i < at + len; ++i) dbc[i] *= inv;
      }
    }
    const std::vector<double> dt_in(dbc.begin(), dbc.begin() + static_cast<long>(r));
    const std::vector<double> dt_lin = Linear(L.dt_proj, L.dt_bias, dt_in, e);
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
    const std::vector<double> out = Linear(L.out_proj, L.out_bias, y, d);
    for (size_t i = 0; i < d; ++i) h[i] += out[i];
  }
  return Linear(lm_head_, {}, RmsNorm(h, norm_f_, c_.layer_norm_epsilon),
                static_cast<size_t>(c_.vocab_size));
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
