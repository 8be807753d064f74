// DrawByRule (the rule a backend draws decode rows by: engine/sampling.h) against a float64
// reference of its definition, its greedy case against Sampler::Sample, and Sampler::Offload:
// when a token may be drawn away from the Sampler and that it consumes the Sampler's draws as
// Sample would.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "engine/sampling.h"
#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<float> RandomRow(std::mt19937_64& rng, size_t vocab, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> row(vocab);
  for (float& x : row) x = normal(rng);
  return row;
}

// The rule's definition in float64: the kept ids (ranked by logit, ties -> lower id, cut at
// top_k, top_p, min_p) with their probabilities. `margin` receives how close (relative to the
// mass) the top-p cut came to flipping, so callers can skip rows where rounding decides it.
struct Kept {
  std::vector<TokenId> ids;  // in id order
  std::vector<double> p;
  double margin = 1.0;
};

Kept Reference(const std::vector<float>& row, const DrawRule& rule) {
  std::vector<TokenId> order;
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] > kNegInf) order.push_back(static_cast<TokenId>(i));
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](TokenId a, TokenId b) { return row[a] > row[b]; });
  size_t keep = order.size();
  if (rule.top_k > 0) keep = std::min(keep, static_cast<size_t>(rule.top_k));
  const double max = row[order[0]];
  std::vector<double> p(keep);
  double mass = 0;
  for (size_t r = 0; r < keep; ++r) {
    p[r] = std::exp((row[order[r]] - max) / rule.temperature);
    mass += p[r];
  }
  Kept out;
  if (rule.top_p < 1.0f) {
    const double target = rule.top_p * mass;
    double cumulative = 0;
    for (size_t r = 0; r < keep; ++r) {
      cumulative += p[r];
      out.margin = std::min(out.margin, std::abs(cumulative - target) / mass);
      if (cumulative >= target) {
        keep = r + 1;
        break;
      }
    }
  }
  if (rule.min_p > 0.0f) {
    while (keep > 1 && p[keep - 1] < rule.min_p) --keep;
    for (size_t r = 0; r < p.size(); ++r) {
      out.margin = std::min(out.margin, std::abs(p[r] - rule.min_p));
    }
  }
  std::vector<size_t> kept(keep);
  std::iota(kept.begin(), kept.end(), size_t{0});
  std::sort(kept.begin(), kept.end(), [&](size_t a, size_t b) { return order[a] < order[b]; });
  for (size_t r : kept) {
    out.ids.push_back(order[r]);
    out.p.push_back(p[r]);
  }
  return out;
}

// The id the reference walk gives for `u`, or -1 when u * mass lies within `eps` (relative) of
// a cumulative boundary, where float rounding may pick the neighbour.
TokenId ReferenceDraw(const Kept& k, double u, double eps) {
  const double mass = std::accumulate(k.p.begin(), k.p.end(), 0.0);
  const double target = u * mass;
  double cumulative = 0;
  for (size_t i = 0; i < k.ids.size(); ++i) {
    cumulative += k.p[i];
    if (std::abs(cumulative - target) < eps * mass) return -1;
    if (cumulative > target) return k.ids[i];
  }
  return k.ids.back();
}

TEST(DrawByRuleTest, GreedyIsExactlySamplersArgmaxAndLogprobs) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> row = RandomRow(rng, 1 + rng() % 3000, 4.0f);
    if (trial % 5 == 1) row[rng() % row.size()] = std::numeric_limits<float>::quiet_NaN();
    if (trial % 5 == 2) row[rng() % row.size()] = kNegInf;
    if (trial % 5 == 3) {  // a tie for the max: the lower id wins
      const float m = *std::max_element(row.begin(), row.end());
      row[rng() % row.size()] = m;
      row[rng() % row.size()] = m;
    }
    SamplingParams params;
    params.temperature = 0.0f;
    params.logprobs = trial % 2 == 0;
    params.top_logprobs = static_cast<int32_t>(trial % 4) * 5;
    Sampler sampler(params, {}, {}, 1);
    std::vector<float> scratch = row;
    const SampledToken want = sampler.Sample(scratch);
    DrawRule rule;
    rule.logprobs = params.logprobs;
    rule.top_logprobs = params.top_logprobs;
    const SampledToken got = DrawByRule(row, rule);
    ASSERT_EQ(got.id, want.id) << "trial " << trial;
    EXPECT_EQ(got.logprob, want.logprob);
    EXPECT_EQ(got.rank, 0);
    ASSERT_EQ(got.top.size(), want.top.size());
    for (size_t i = 0; i < got.top.size(); ++i) {
      EXPECT_EQ(got.top[i].id, want.top[i].id);
      EXPECT_EQ(got.top[i].logprob, want.top[i].logprob);
    }
  }
}

TEST(DrawByRuleTest, EqualsTheFloat64DefinitionForEveryMixOfWarpers) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int compared = 0, skipped = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const size_t vocab = trial % 3 == 0 ? 50280 : 1 + rng() % 500;
    std::vector<float> row = RandomRow(rng, vocab, trial % 2 ? 3.0f : 0.5f);
    if (trial % 7 == 0) {  // ties and banned tokens
      for (size_t i = 0; i < vocab; i += 3) row[i] = row[0];
      row[vocab / 2] = kNegInf;
    }
    DrawRule rule;
    const float temperatures[] = {0.3f, 0.7f, 1.0f, 1.6f};
    rule.temperature = temperatures[trial % 4];
    const int32_t top_ks[] = {0, 1, 5, 40, 100000};
    rule.top_k = top_ks[rng() % 5];
    const float top_ps[] = {1.0f, 0.9f, 0.5f, 1e-4f};
    rule.top_p = top_ps[rng() % 4];
    const float min_ps[] = {0.0f, 0.0f, 0.05f, 0.5f};
    rule.min_p = min_ps[rng() % 4];
    const Kept kept = Reference(row, rule);
    if (kept.margin < 1e-5) {
      ++skipped;  // rounding decides where the cut falls
      continue;
    }
    for (int d = 0; d < (vocab > 1000 ? 6 : 40); ++d) {
      rule.uniform = d == 0 ? 0.0 : d == 1 ? std::nextafter(1.0, 0.0) : uniform(rng);
      const TokenId want = ReferenceDraw(kept, rule.uniform, 1e-6);
      if (want < 0) {
        ++skipped;
        continue;
      }
      ++compared;
      ASSERT_EQ(DrawByRule(row, rule).id, want)
          << "trial " << trial << " vocab " << vocab << " T " << rule.temperature << " top_k "
          << rule.top_k << " top_p " << rule.top_p << " min_p " << rule.min_p << " u "
          << rule.uniform;
    }
  }
  EXPECT_GT(compared, 2500);
  EXPECT_LT(skipped, compared / 20);
}

// Over a grid of uniforms the draw lands on each kept token in proportion to its probability:
// the rule draws the Sampler's distribution (the Sampler's kept set, checked by its support).
TEST(DrawByRuleTest, DrawsTheSamplersDistribution) {
  const std::vector<float> row = {2.0f, 1.0f, 0.5f, 3.0f, -1.0f, 0.0f, 2.5f, -3.0f};
  for (int warp = 0; warp < 4; ++warp) {
    SamplingParams params;
    params.temperature = 0.8f;
    params.top_k = warp == 1 ? 3 : 0;
    params.top_p = warp == 2 ? 0.7f : 1.0f;
    params.min_p = warp == 3 ? 0.2f : 0.0f;
    params.seed = 5;
    Sampler sampler(params, {}, {}, 0);
    std::set<TokenId> sampler_support;
    for (int i = 0; i < 4000; ++i) {
      std::vector<float> scratch = row;
      sampler_support.insert(sampler.Sample(scratch).id);
    }
    DrawRule rule;
    rule.temperature = params.temperature;
    rule.top_k = params.top_k;
    rule.top_p = params.top_p;
    rule.min_p = params.min_p;
    const Kept kept = Reference(row, rule);
    const double mass = std::accumulate(kept.p.begin(), kept.p.end(), 0.0);
    constexpr int kGrid = 20000;
    std::vector<int> counts(row.size(), 0);
    for (int i = 0; i < kGrid; ++i) {
      rule.uniform = (i + 0.5) / kGrid;
      ++counts[static_cast<size_t>(DrawByRule(row, rule).id)];
    }
    std::set<TokenId> support;
    for (size_t i = 0; i < counts.size(); ++i) {
      if (counts[i] > 0) support.insert(static_cast<TokenId>(i));
    }
    EXPECT_EQ(support, sampler_support) << "warp " << warp;
    for (size_t i = 0; i < kept.ids.size(); ++i) {
      EXPECT_NEAR(counts[static_cast<size_t>(kept.ids[i])] / double{kGrid}, kept.p[i] / mass,
                  2.0 / kGrid)
          << "warp " << warp << " id " << kept.ids[i];
    }
  }
}

TEST(SamplerOffloadTest, OnlyTokensThatNeedNoLogitProcessing) {
  auto offloads = [](SamplingParams p, std::vector<TokenId> eos = {}) {
    Sampler s(std::move(p), std::move(eos), std::vector<TokenId>{1, 2}, 0);
    return s.Offload().has_value();
  };
  SamplingParams plain;
  EXPECT_TRUE(offloads(plain));
  SamplingParams p = plain;
  p.repetition_penalty = 1.1f;
  EXPECT_FALSE(offloads(p));
  p = plain;
  p.presence_penalty = 0.5f;
  EXPECT_FALSE(offloads(p));
  p = plain;
  p.frequency_penalty = -0.5f;
  EXPECT_FALSE(offloads(p));
  p = plain;
  p.logit_bias = {{3, 1.0f}};
  EXPECT_FALSE(offloads(p));
  // min_new_tokens masks eos and stop ids until reached; with nothing to mask it changes nothing.
  p = plain;
  p.min_new_tokens = 2;
  EXPECT_TRUE(offloads(p));
  EXPECT_FALSE(offloads(p, {0}));
  p.ignore_eos = true;
  EXPECT_TRUE(offloads(p, {0}));
  p.stop_token_ids = {4};
  EXPECT_FALSE(offloads(p, {0}));

  // Once min_new_tokens tokens are out, the mask is off and the token offloads.
  p = plain;
  p.min_new_tokens = 2;
  p.max_new_tokens = 8;
  Sampler s(p, {0}, {}, 0);
  const std::vector<float> row = {0.0f, 1.0f, 2.0f};
  for (int i = 0; i < 2; ++i) {
    EXPECT_FALSE(s.Offload().has_value()) << i;
    std::vector<float> scratch = row;
    s.Sample(scratch);
  }
  const auto rule = s.Offload();
  ASSERT_TRUE(rule.has_value());
  EXPECT_EQ(rule->temperature, p.temperature);
  s.Accept(2);
  EXPECT_EQ(s.num_generated(), 3);
}

// An offloaded token consumes one uniform (none when greedy), as Sample does: the tokens after
// it are the ones a Sampler that sampled every token would draw.
TEST(SamplerOffloadTest, ConsumesTheDrawsSampleWould) {
  std::mt19937_64 rng(21);
  const std::vector<float> row = RandomRow(rng, 300, 2.0f);
  for (float temperature : {0.0f, 0.9f}) {
    SamplingParams p;
    p.temperature = temperature;
    p.top_p = 0.95f;
    p.seed = 77;
    p.max_new_tokens = 64;
    Sampler sampled(p, {}, {}, 0), offloaded(p, {}, {}, 0);
    for (int i = 0; i < 20; ++i) {
      std::vector<float> scratch = row;
      const SampledToken want = sampled.Sample(scratch);
      if (i % 3 == 1) {  // this token drawn elsewhere: the streams must stay in step
        const auto rule = offloaded.Offload();
        ASSERT_TRUE(rule.has_value());
        if (temperature == 0.0f) {
          EXPECT_EQ(DrawByRule(row, *rule).id, want.id);
        }
        offloaded.Accept(want.id);
        continue;
      }
      scratch = row;
      EXPECT_EQ(offloaded.Sample(scratch).id, want.id) << "token " << i << " T " << temperature;
    }
    EXPECT_EQ(offloaded.num_generated(), sampled.num_generated());
  }
}

}  // namespace
}  // namespace mamba::engine
