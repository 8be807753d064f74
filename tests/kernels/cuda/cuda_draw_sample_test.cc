// DrawSample (kernels/cuda/sampling.h) against engine::DrawByRule, its definition, on seeded
// random rows: greedy ids, log-probs and top lists; draws with temperature / top-k / top-p /
// min-p over rows with ties, -inf and NaN entries. Skips without a usable device (fails under
// MAMBA_REQUIRE_GPU=1), except the launcher's argument checks.
#include <cmath>
#include <limits>
#include <random>
#include <span>

#include "engine/sampling.h"
#include "engine/sampling_exp.h"
#include "kernels/cuda/sampling.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace mamba::kernels::cuda {
namespace {

using namespace testing;  // NOLINT: test helpers
using engine::DrawByRule;
using engine::DrawRule;
using engine::SampledToken;

constexpr float kInf = std::numeric_limits<float>::infinity();
// Where DrawByRule's float64 cumulative mass lies this close (relative to the mass it is a share
// of) to a top-p cut or to the walk's target, the device's float64 sums, added in another order,
// may fall on the other side: the only mismatch allowed. (They differ by ~1e-12 relative.)
constexpr double kBoundaryEps = 1e-9;
// Log-probs: DrawByRule's LogSumExp adds the row's p in 8 float lanes (the device in float64),
// which on these rows is off by up to 6.6e-6 at vocab 50280 (measured on the host against a
// float64 sum), plus one float ulp (1.9e-6) at |log-prob| ~ 24: 7.6e-6 seen, too close to 1e-5.
constexpr float kLogprobTol = 3e-5f;

// Whether one of DrawByRule's decisions for `rule` lies within kBoundaryEps of its boundary
// (DrawByRule's steps repeated, with the margins measured).
bool NearBoundary(std::span<const float> row, const DrawRule& rule) {
  if (rule.temperature < 1e-5f) return false;
  float mx = -kInf;
  for (float v : row) mx = mx < v ? v : mx;
  if (!(mx > -kInf) || std::isinf(mx)) return false;
  struct Ranked {
    float logit;
    int32_t id;
    float p;
  };
  std::vector<Ranked> ranked;
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] > -kInf) ranked.push_back({row[i], static_cast<int32_t>(i), 0.0f});
  }
  std::sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  });
  if (rule.top_k > 0 && static_cast<size_t>(rule.top_k) < ranked.size()) {
    ranked.resize(static_cast<size_t>(rule.top_k));
  }
  const float inv_t = 1.0f / rule.temperature;
  double mass = 0.0;
  for (Ranked& r : ranked) {
    r.p = engine::ExpNonPositive((r.logit - mx) * inv_t);
    mass += r.p;
  }
  bool near = false;
  if (rule.top_p < 1.0f) {
    const double target = rule.top_p * mass;
    double cumulative = 0.0;
    for (size_t i = 0; i < ranked.size(); ++i) {
      cumulative += ranked[i].p;
      near |= std::fabs(cumulative - target) <= kBoundaryEps * mass;
      if (cumulative >= target) {
        ranked.resize(i + 1);
        break;
      }
    }
  }
  if (rule.min_p > 0.0f) {  // exact on the device: p is the host's, and monotone in the logit
    while (ranked.size() > 1 && ranked.back().p < rule.min_p) ranked.pop_back();
  }
  std::sort(ranked.begin(), ranked.end(),
            [](const Ranked& a, const Ranked& b) { return a.id < b.id; });
  double kept = 0.0;
  for (const Ranked& r : ranked) kept += r.p;
  const double target = rule.uniform * kept;
  double cumulative = 0.0;
  for (const Ranked& r : ranked) {
    cumulative += r.p;
    near |= std::fabs(cumulative - target) <= kBoundaryEps * kept;
    if (cumulative > target) break;
  }
  return near;
}

bool Same(float a, float b, float tol) {
  return (std::isnan(a) && std::isnan(b)) || a == b || std::fabs(a - b) <= tol;
}

// Rows of `vocab` logits of several kinds: plain random, coarse (many ties), with -inf and NaN
// entries, one dominant logit, only -inf (and a NaN).
std::vector<float> MakeRows(int64_t vocab, int rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  std::vector<float> out(static_cast<size_t>(vocab * rows));
  for (int r = 0; r < rows; ++r) {
    float* row = out.data() + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) {
      float v = u(rng);
      switch (r % 5) {
        case 1:
          v = std::round(v) * 0.5f;  // 17 distinct values: ties everywhere
          break;
        case 2:
          if (rng() % 5 == 0) v = -kInf;
          if (rng() % 997 == 0) v = std::nanf("");
          break;
        case 3:
          v *= 0.25f;
          break;
        case 4:
          v = -kInf;
          break;
        default:
          break;
      }
      row[i] = v;
    }
    if (r % 5 == 3) row[(r * 7919) % vocab] = 12.0f;  // one dominant token
    if (r % 5 == 4 && vocab > 1) row[vocab / 2] = std::nanf("");
    if (r % 5 == 1) row[vocab - 1] = -0.0f;  // ranks with +0 (ties by id)
  }
  return out;
}

struct Draw {
  DrawRow row;
  DrawRule rule;
};

// Greedy rules with log-probs, and a grid of sampling rules with several uniforms each.
std::vector<Draw> MakeDraws(int64_t vocab, int rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<Draw> out;
  auto add = [&](int r, DrawRule rule) {
    Draw d;
    d.rule = rule;
    d.row.uniform = rule.uniform;
    d.row.temperature = rule.temperature;
    d.row.top_k = rule.top_k;
    d.row.top_p = rule.top_p;
    d.row.min_p = rule.min_p;
    d.row.row = r;
    d.row.top_n = rule.top_logprobs;
    d.row.want_logprob = rule.logprobs ? 1 : 0;
    out.push_back(d);
  };
  const float temperatures[] = {0.0f, 0.3f, 1.0f, 1.7f};
  const int32_t top_ks[] = {0, 1, 5, 40, static_cast<int32_t>(vocab) + 10};
  const float top_ps[] = {1.0f, 0.9f, 0.35f, 1e-6f};
  const float min_ps[] = {0.0f, 0.02f, 0.4f};
  for (int r = 0; r < rows; ++r) {
    for (int top : {0, 3, 20}) {
      DrawRule g;
      g.logprobs = top != 3;
      g.top_logprobs = top;
      add(r, g);
    }
    for (float t : temperatures) {
      for (int32_t k : top_ks) {
        for (float p : top_ps) {
          for (float m : min_ps) {
            if (t == 0.0f && (k != 0 || p != 1.0f || m != 0.0f)) continue;
            for (int i = 0; i < 3; ++i) {
              DrawRule d;
              d.temperature = t;
              d.top_k = k;
              d.top_p = p;
              d.min_p = m;
              d.uniform = i == 0 ? 0.0 : (i == 1 ? 0.9999999 : u(rng));
              d.logprobs = (i + k) % 2 == 0;
              d.top_logprobs = i == 2 ? 2 : 0;
              add(r, d);
            }
          }
        }
      }
    }
  }
  return out;
}

struct Result {
  std::vector<int32_t> token, top_ids;
  std::vector<float> logprob, top_logprobs;
};

// Runs DrawSample over `draws` on the device copy of `logits`.
void RunDraws(const DeviceArray<float>& logits, int64_t vocab, int rows,
              const std::vector<DrawRow>& draws, Result* out) {
  const size_t n = draws.size();
  DeviceArray<DrawRow> rules(draws);
  DeviceArray<int32_t> token(n), top_ids(n * kMaxTopN);
  DeviceArray<float> logprob(n), top_logprobs(n * kMaxTopN);
  DrawArgs a;
  a.logits = logits.get();
  a.logits_stride = vocab;
  a.logits_rows = rows;
  a.vocab = vocab;
  a.rules = rules.get();
  a.draws = static_cast<int64_t>(n);
  a.top_stride = kMaxTopN;
  a.token = token.get();
  a.logprob = logprob.get();
  a.top_ids = top_ids.get();
  a.top_logprobs = top_logprobs.get();
  MAMBA_CUDA_ASSERT(DrawSample(a, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  out->token = token.Get();
  out->logprob = logprob.Get();
  out->top_ids = top_ids.Get();
  out->top_logprobs = top_logprobs.Get();
}

class CudaDrawSampleTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { MAMBA_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaDrawSampleTest, MatchesDrawByRule) {
  const int64_t vocab = GetParam();
  const int rows = vocab > 10000 ? 5 : 10;  // one row of each kind (the host sorts each row)
  const std::vector<float> logits = MakeRows(vocab, rows, 1000 + static_cast<uint64_t>(vocab));
  const std::vector<Draw> draws = MakeDraws(vocab, rows, 7);
  std::vector<DrawRow> device_rules;
  for (const Draw& d : draws) device_rules.push_back(d.row);
  DeviceArray<float> dl(logits);
  Result got;
  ASSERT_NO_FATAL_FAILURE(RunDraws(dl, vocab, rows, device_rules, &got));
  int near = 0, mismatched = 0, sampled = 0;
  for (size_t d = 0; d < draws.size(); ++d) {
    const DrawRule& rule = draws[d].rule;
    const std::span<const float> row(logits.data() + draws[d].row.row * vocab,
                                     static_cast<size_t>(vocab));
    const SampledToken want = DrawByRule(row, rule);
    const std::string where =
        "draw " + std::to_string(d) + " (row " + std::to_string(draws[d].row.row) + ", T " +
        std::to_string(rule.temperature) + ", top_k " + std::to_string(rule.top_k) + ", top_p " +
        std::to_string(rule.top_p) + ", min_p " + std::to_string(rule.min_p) + ", u " +
        std::to_string(rule.uniform) + ")";
    if (rule.temperature > 0) ++sampled;
    if (got.token[d] != want.id) {
      ++mismatched;
      ASSERT_TRUE(NearBoundary(row, rule))
          << where << ": device " << got.token[d] << ", host " << want.id;
      ++near;
      continue;
    }
    if (rule.logprobs) {
      EXPECT_TRUE(Same(got.logprob[d], want.logprob, kLogprobTol))
          << where << ": " << got.logprob[d] << " vs " << want.logprob;
    }
    std::vector<std::pair<int32_t, float>> top;
    for (int k = 0; k < rule.top_logprobs; ++k) {
      const size_t at = d * kMaxTopN + static_cast<size_t>(k);
      if (got.top_ids[at] >= 0) top.emplace_back(got.top_ids[at], got.top_logprobs[at]);
    }
    ASSERT_EQ(top.size(), want.top.size()) << where;
    for (size_t k = 0; k < top.size(); ++k) {
      EXPECT_EQ(top[k].first, want.top[k].id) << where << " rank " << k;
      EXPECT_TRUE(Same(top[k].second, want.top[k].logprob, kLogprobTol)) << where << " rank " << k;
    }
  }
  // Near-boundary mismatches are rare (each needs a sum within ~1e-12 of a cut).
  EXPECT_LE(mismatched, 1 + sampled / 200) << near << " near-boundary mismatches";
  // The same draws in another order and batch give the same tokens: every 7th, last first (every
  // row kind: the last 97 alone would all come from the last row, which is all -inf).
  std::vector<size_t> picked;
  for (size_t d = device_rules.size(); d-- > 0;) {
    if (d % 7 == 0) picked.push_back(d);
  }
  std::vector<DrawRow> reordered;
  for (size_t d : picked) reordered.push_back(device_rules[d]);
  Result again;
  ASSERT_NO_FATAL_FAILURE(RunDraws(dl, vocab, rows, reordered, &again));
  for (size_t i = 0; i < picked.size(); ++i) {
    EXPECT_EQ(again.token[i], got.token[picked[i]]) << "draw " << picked[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Vocab, CudaDrawSampleTest, ::testing::Values(50280, 4099, 7, 1),
                         [](const ::testing::TestParamInfo<int64_t>& i) {
                           return "vocab" + std::to_string(i.param);
                         });

// A rule naming a row outside the logits gets token -1 and an empty top list.
TEST(CudaDrawSample, RowOutOfRange) {
  MAMBA_SKIP_WITHOUT_GPU();
  DeviceArray<float> logits(std::vector<float>{1.0f, 2.0f, 3.0f});
  std::vector<DrawRow> rules(2);
  rules[0].row = 1;
  rules[0].top_n = 2;
  rules[1].row = -1;
  rules[1].top_n = 2;
  Result got;
  ASSERT_NO_FATAL_FAILURE(RunDraws(logits, 3, 1, rules, &got));
  EXPECT_EQ(got.token[0], -1);
  EXPECT_EQ(got.token[1], -1);
  EXPECT_EQ(got.top_ids[0], -1);
  EXPECT_EQ(got.top_ids[kMaxTopN + 1], -1);
}

// The launcher's argument checks (no device needed: nothing is launched).
TEST(CudaDrawSample, RejectsBadArguments) {
  DrawArgs a;
  EXPECT_EQ(DrawSample(a, nullptr), cudaErrorInvalidValue);  // vocab 0
  a.vocab = 10;
  EXPECT_EQ(DrawSample(a, nullptr), cudaSuccess);  // no draws: nothing to do
  a.draws = 1;
  EXPECT_EQ(DrawSample(a, nullptr), cudaErrorInvalidValue);  // null pointers
  a.top_stride = kMaxTopN + 1;
  EXPECT_EQ(DrawSample(a, nullptr), cudaErrorInvalidValue);
  a.top_stride = 0;
  a.vocab = std::numeric_limits<int32_t>::max();
  EXPECT_EQ(DrawSample(a, nullptr), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace mamba::kernels::cuda
