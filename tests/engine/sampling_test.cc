// Tests for engine/sampling: each processor and warper against numbers known in advance or a
// float64 reference, seeded reproducibility, stop conditions and parameter validation.
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Finish = Sampler::Finish;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

Sampler MakeSampler(SamplingParams params, std::vector<TokenId> eos = {},
                    std::vector<TokenId> prompt = {}, uint64_t fallback_seed = 1234) {
  return Sampler(std::move(params), std::move(eos), prompt, fallback_seed);
}

// Sample works in place, so every call gets a fresh copy of the row.
SampledToken SampleCopy(Sampler& sampler, const std::vector<float>& logits) {
  std::vector<float> row = logits;
  return sampler.Sample(row);
}

std::vector<int> CountDraws(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[SampleCopy(sampler, logits).id];
  return counts;
}

std::set<TokenId> DrawnIds(const std::vector<int>& counts) {
  std::set<TokenId> ids;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > 0) ids.insert(static_cast<TokenId>(i));
  }
  return ids;
}

std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::vector<double> SoftmaxDouble(const std::vector<float>& logits, double temperature = 1.0) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p;
  double sum = 0.0;
  for (float x : logits) sum += std::exp((x - max) / temperature);
  for (float x : logits) p.push_back(std::exp((x - max) / temperature) / sum);
  return p;
}

// Pearson chi-square of observed counts against expected probabilities; a count where the
// expected probability is 0 makes it infinite.
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& probs) {
  const double n = std::accumulate(counts.begin(), counts.end(), 0.0);
  double chi2 = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0.0) {
      if (counts[i] > 0) return std::numeric_limits<double>::infinity();
      continue;
    }
    const double expected = n * probs[i];
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

std::vector<float> RandomLogits(int vocab, uint64_t seed, float stddev = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> logits(vocab);
  for (float& x : logits) x = normal(rng);
  return logits;
}

// Ids of the n largest logits (ties -> lower id), best first.
std::vector<TokenId> TopIds(const std::vector<float>& logits, size_t n) {
  std::vector<TokenId> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](TokenId a, TokenId b) { return logits[a] > logits[b]; });
  ids.resize(n);
  return ids;
}

// A row whose k-th best token (rank k) has logit by_rank[k], spread over shuffled ids so that
// nothing can lean on id order. Returns the ids by rank.
std::vector<TokenId> ShuffledRow(const std::vector<float>& by_rank, uint64_t seed,
                                 std::vector<float>& logits) {
  std::vector<TokenId> id_of_rank(by_rank.size());
  std::iota(id_of_rank.begin(), id_of_rank.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(id_of_rank.begin(), id_of_rank.end(), rng);
  logits.assign(by_rank.size(), 0.0f);
  for (size_t r = 0; r < by_rank.size(); ++r) logits[id_of_rank[r]] = by_rank[r];
  return id_of_rank;
}

// Smallest n such that the n best tokens hold at least top_p of the mass (float64).
size_t ReferenceNucleusSize(const std::vector<float>& by_rank_desc, double top_p) {
  std::vector<double> p = SoftmaxDouble(by_rank_desc);
  double cumulative = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    cumulative += p[i];
    if (cumulative >= top_p) return i + 1;
  }
  return p.size();
}

// ---------------------------------------------------------------------------------------------
// Greedy

TEST(SamplerGreedy, PicksArgmax) {
  Sampler sampler = MakeSampler({.temperature = 0.0f});
  EXPECT_EQ(SampleCopy(sampler, {0.1f, 3.0f, -1.0f, 2.9f}).id, 1);
  EXPECT_EQ(SampleCopy(sampler, {-5.0f, -4.0f, -3.0f, -3.5f}).id, 2);
}

TEST(SamplerGreedy, TiesGoToLowestId) {
  Sampler sampler = MakeSampler({.temperature = 0.0f});
  EXPECT_EQ(SampleCopy(sampler, {1.0f, 5.0f, 2.0f, 5.0f, 5.0f}).id, 1);
  EXPECT_EQ(SampleCopy(sampler, {7.0f, 7.0f}).id, 0);
}

TEST(SamplerGreedy, TinyTemperatureIsGreedy) {
  // 1/T would overflow; the argmax (lowest id among ties) is what such a T means anyway.
  Sampler sampler = MakeSampler({.temperature = 1e-8f});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleCopy(sampler, {1.0f, 5.0f, 2.0f, 5.0f}).id, 1);
}

TEST(SamplerGreedy, FullyMaskedRowStillReturnsAValidId) {
  // A one-token vocabulary that is the eos, masked by min_new_tokens: nothing left to draw.
  Sampler sampler = MakeSampler({.min_new_tokens = 1}, /*eos=*/{0});
  EXPECT_EQ(SampleCopy(sampler, {2.0f}).id, 0);
}

// ---------------------------------------------------------------------------------------------
// Temperature

TEST(SamplerTemperature, FrequenciesFollowSoftmaxOfScaledLogits) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, -1.0f};
  constexpr int kDraws = 20000;
  // 3 degrees of freedom: P(chi2 > 30) ~ 1e-6, so these bounds are generous.
  Sampler t1 = MakeSampler({.temperature = 1.0f, .seed = 11});
  EXPECT_LT(ChiSquare(CountDraws(t1, logits, kDraws), SoftmaxDouble(logits, 1.0)), 30.0);

  Sampler t2 = MakeSampler({.temperature = 2.0f, .seed = 12});
  std::vector<int> counts = CountDraws(t2, logits, kDraws);
  EXPECT_LT(ChiSquare(counts, SoftmaxDouble(logits, 2.0)), 30.0);
  EXPECT_GT(ChiSquare(counts, SoftmaxDouble(logits, 1.0)), 500.0);  // T really changed it

  Sampler t05 = MakeSampler({.temperature = 0.5f, .seed = 13});
  counts = CountDraws(t05, logits, kDraws);
  EXPECT_LT(ChiSquare(counts, SoftmaxDouble(logits, 0.5)), 30.0);
  EXPECT_GT(ChiSquare(counts, SoftmaxDouble(logits, 1.0)), 500.0);
}

TEST(SamplerTemperature, FrequenciesFollowSoftmaxOverManyBlocks) {
  // A row of several 64-token blocks, drawn from whole-block sums and then inside one block.
  const std::vector<float> logits = RandomLogits(300, /*seed=*/14, /*stddev=*/1.0f);
  Sampler sampler = MakeSampler({.temperature = 0.9f, .seed = 15});
  // 299 degrees of freedom: mean 299, standard deviation ~24.5.
  EXPECT_LT(ChiSquare(CountDraws(sampler, logits, 30000), SoftmaxDouble(logits, 0.9)), 450.0);
}

// ---------------------------------------------------------------------------------------------
// Top-k

TEST(SamplerTopK, OnlyPicksTheKLargestWithRenormalizedFrequencies) {
  const std::vector<float> logits = RandomLogits(100, /*seed=*/5, /*stddev=*/1.0f);
  // k = 5 selects with a heap, k = 30 (a large share of the vocabulary) with nth_element.
  for (int k : {5, 30}) {
    const std::vector<TokenId> top = TopIds(logits, k);
    Sampler sampler = MakeSampler({.temperature = 2.0f, .top_k = k, .seed = 3});
    const std::vector<int> counts = CountDraws(sampler, logits, 20000);
    EXPECT_EQ(DrawnIds(counts), std::set<TokenId>(top.begin(), top.end())) << "k=" << k;
    std::vector<float> masked(logits.size(), kNegInf);
    for (TokenId id : top) masked[id] = logits[id];
    // k - 1 degrees of freedom; P(chi2 > 2k + 40) is below 1e-5 for both.
    EXPECT_LT(ChiSquare(counts, SoftmaxDouble(masked, 2.0)), 2.0 * k + 40.0) << "k=" << k;
  }
}

TEST(SamplerTopK, LargeVocabularyStaysInTopK) {
  const std::vector<float> logits = RandomLogits(50280, /*seed=*/8);
  const std::vector<TokenId> top50 = TopIds(logits, 50);
  const std::set<TokenId> allowed(top50.begin(), top50.end());
  Sampler sampler = MakeSampler({.temperature = 5.0f, .top_k = 50, .seed = 4});
  for (int i = 0; i < 300; ++i) EXPECT_TRUE(allowed.count(SampleCopy(sampler, logits).id));
}

TEST(SamplerTopK, KAtLeastVocabIsANoOp) {
  const std::vector<float> logits = {0.0f, 0.0f, 0.0f};
  Sampler sampler = MakeSampler({.top_k = 10, .seed = 9});
  EXPECT_EQ(DrawnIds(CountDraws(sampler, logits, 300)), (std::set<TokenId>{0, 1, 2}));
}

// ---------------------------------------------------------------------------------------------
// Top-p

TEST(SamplerTopP, KeepsTheMinimalNucleus) {
  // Probabilities by id: 0.15, 0.5, 0.05, 0.3 (so rank order is 1, 3, 0, 2).
  const std::vector<float> logits = LogitsFromProbs({0.15, 0.5, 0.05, 0.3});
  struct Case {
    float top_p;
    std::set<TokenId> nucleus;
  };
  for (const Case& c :
       {Case{0.4f, {1}}, Case{0.7f, {1, 3}}, Case{0.85f, {0, 1, 3}}, Case{0.99f, {0, 1, 2, 3}}}) {
    Sampler sampler = MakeSampler({.top_p = c.top_p, .seed = 21});
    const std::vector<int> counts = CountDraws(sampler, logits, 4000);
    EXPECT_EQ(DrawnIds(counts), c.nucleus) << "top_p=" << c.top_p;
    std::vector<float> masked(logits.size(), kNegInf);
    for (TokenId id : c.nucleus) masked[id] = logits[id];
    EXPECT_LT(ChiSquare(counts, SoftmaxDouble(masked)), 30.0) << "top_p=" << c.top_p;
  }
}

TEST(SamplerTopP, NucleusSpanningManyValueBuckets) {
  // 100 close tokens then 3996 far ones: the nucleus is exactly the first 100 ranks, spread
  // over a dozen histogram buckets, and more than the sampler ever sorts at once.
  std::vector<float> by_rank(4096);
  for (int r = 0; r < 4096; ++r) by_rank[r] = r < 100 ? -0.01f * r : -6.0f - 0.001f * r;
  const std::vector<double> p = SoftmaxDouble(by_rank);
  const double mass99 = std::accumulate(p.begin(), p.begin() + 99, 0.0);
  const float top_p = static_cast<float>(mass99 + p[99] / 2);  // between 99 and 100 ranks
  ASSERT_EQ(ReferenceNucleusSize(by_rank, top_p), 100u);

  std::vector<float> logits;
  const std::vector<TokenId> id_of_rank = ShuffledRow(by_rank, /*seed=*/31, logits);
  Sampler sampler = MakeSampler({.top_p = top_p, .seed = 22});
  const std::set<TokenId> drawn = DrawnIds(CountDraws(sampler, logits, 8000));
  EXPECT_EQ(drawn, std::set<TokenId>(id_of_rank.begin(), id_of_rank.begin() + 100));
}

TEST(SamplerTopP, FlatDistributionLargeNucleus) {
  // Nearly flat row: the histogram cannot narrow much and the nucleus spans ~1900 tokens.
  std::vector<float> by_rank(4096);
  for (int r = 0; r < 4096; ++r) by_rank[r] = -0.0005f * r;
  const size_t nucleus = ReferenceNucleusSize(by_rank, 0.5);
  ASSERT_GT(nucleus, 1000u);
  std::vector<float> logits;
  const std::vector<TokenId> id_of_rank = ShuffledRow(by_rank, /*seed=*/32, logits);
  std::vector<size_t> rank_of_id(logits.size());
  for (size_t r = 0; r < id_of_rank.size(); ++r) rank_of_id[id_of_rank[r]] = r;

  Sampler sampler = MakeSampler({.top_p = 0.5f, .seed = 23});
  size_t max_rank = 0;
  for (int i = 0; i < 4000; ++i) {
    max_rank = std::max(max_rank, rank_of_id[SampleCopy(sampler, logits).id]);
  }
  // Never beyond the nucleus (+1 for float rounding at the boundary), and reaching its end.
  EXPECT_LE(max_rank, nucleus);
  EXPECT_GE(max_rank + 50, nucleus);
}

TEST(SamplerTopP, EqualLogitsNucleusIsTheLowestIds) {
  // 1000 equal tokens share one histogram bucket, so the boundary is found by halving; ties
  // rank by id, so the nucleus of 500 is exactly ids 0..499.
  const std::vector<float> logits(1000, 0.0f);
  Sampler sampler = MakeSampler({.top_p = 0.4995f, .seed = 26});
  const std::set<TokenId> drawn = DrawnIds(CountDraws(sampler, logits, 20000));
  std::set<TokenId> want;
  for (TokenId id = 0; id < 500; ++id) want.insert(id);
  EXPECT_EQ(drawn, want);
}

TEST(SamplerTopP, AppliesToTheTopKRenormalizedDistribution) {
  // Probs 0.4, 0.3, 0.2, 0.1. After top_k=2 they are 4/7 and 3/7, so top_p=0.5 keeps only id 0
  // (over the whole row 0.4 < 0.5 would keep ids 0 and 1); top_p=0.6 keeps both.
  const std::vector<float> logits = LogitsFromProbs({0.4, 0.3, 0.2, 0.1});
  Sampler only_first = MakeSampler({.top_k = 2, .top_p = 0.5f, .seed = 24});
  EXPECT_EQ(DrawnIds(CountDraws(only_first, logits, 2000)), std::set<TokenId>{0});
  Sampler both = MakeSampler({.top_k = 2, .top_p = 0.6f, .seed = 25});
  EXPECT_EQ(DrawnIds(CountDraws(both, logits, 2000)), (std::set<TokenId>{0, 1}));
}

// ---------------------------------------------------------------------------------------------
// Min-p

// The set of ids drawn over many samples with `params` (seeded) on probs 0.5, 0.3, 0.15, 0.05.
std::set<TokenId> MinPDrawn(SamplingParams params) {
  params.seed = 41;
  Sampler sampler = MakeSampler(std::move(params));
  return DrawnIds(CountDraws(sampler, LogitsFromProbs({0.5, 0.3, 0.15, 0.05}), 3000));
}

TEST(SamplerMinP, DropsTokensBelowFractionOfMax) {
  EXPECT_EQ(MinPDrawn({.min_p = 0.2f}), (std::set<TokenId>{0, 1, 2}));  // keep p >= 0.1
  EXPECT_EQ(MinPDrawn({.min_p = 0.5f}), (std::set<TokenId>{0, 1}));     // keep p >= 0.25
  EXPECT_EQ(MinPDrawn({.min_p = 1.0f}), (std::set<TokenId>{0}));        // only the max
}

TEST(SamplerMinP, CombinesWithTopKTopPAndTemperature) {
  // After top-k (unsorted candidates).
  EXPECT_EQ(MinPDrawn({.top_k = 3, .min_p = 0.5f}), (std::set<TokenId>{0, 1}));
  // Min-p set shorter than the nucleus {0, 1, 2}, then nucleus {0, 1} shorter than min-p's.
  EXPECT_EQ(MinPDrawn({.top_p = 0.9f, .min_p = 0.5f}), (std::set<TokenId>{0, 1}));
  EXPECT_EQ(MinPDrawn({.top_p = 0.7f, .min_p = 0.2f}), (std::set<TokenId>{0, 1}));
  // On tempered probs, relative to the max: 1, .77, .55, .32.
  EXPECT_EQ(MinPDrawn({.temperature = 2.0f, .min_p = 0.5f}), (std::set<TokenId>{0, 1, 2}));
}

// ---------------------------------------------------------------------------------------------
// Penalties

// Greedily samples `tokens` in order by offering one-hot rows.
void ForceTokens(Sampler& sampler, int vocab, const std::vector<TokenId>& tokens) {
  for (TokenId t : tokens) {
    std::vector<float> row(vocab, 0.0f);
    row[t] = 100.0f;
    ASSERT_EQ(sampler.Sample(row).id, t);
  }
}

TEST(SamplerPenalties, RepetitionPenaltyExactOnPromptAndGenerated) {
  const float rep = 1.3f;
  Sampler sampler = MakeSampler({.temperature = 0.0f, .repetition_penalty = rep}, {},
                                /*prompt=*/{1, 2, 2});
  ForceTokens(sampler, 8, {5, 5, 6});
  const std::vector<float> raw = {0.5f, 2.0f, -1.5f, 0.7f, -0.2f, 1.1f, -3.0f, 0.0f};
  std::vector<float> row = raw;
  sampler.ProcessLogits(row);
  // Prompt ids 1 (positive) and 2 (negative, twice: once), generated 5 (twice: once) and 6.
  EXPECT_FLOAT_EQ(row[1], 2.0f / rep);
  EXPECT_FLOAT_EQ(row[2], -1.5f * rep);
  EXPECT_FLOAT_EQ(row[5], 1.1f / rep);
  EXPECT_FLOAT_EQ(row[6], -3.0f * rep);
  for (int id : {0, 3, 4, 7}) EXPECT_EQ(row[id], raw[id]) << id;
}

TEST(SamplerPenalties, RepetitionPenaltyChangesTheGreedyPick) {
  const std::vector<float> logits = {0.0f, 2.0f, 1.6f};
  Sampler plain = MakeSampler({.temperature = 0.0f}, {}, /*prompt=*/{1});
  EXPECT_EQ(SampleCopy(plain, logits).id, 1);
  Sampler penalized =
      MakeSampler({.temperature = 0.0f, .repetition_penalty = 1.3f}, {}, /*prompt=*/{1});
  EXPECT_EQ(SampleCopy(penalized, logits).id, 2);  // 2.0 / 1.3 < 1.6
}

TEST(SamplerPenalties, PresenceAndFrequencyExactOnGeneratedOnly) {
  const float presence = 0.5f;
  const float frequency = 0.25f;
  Sampler sampler = MakeSampler(
      {.temperature = 0.0f, .presence_penalty = presence, .frequency_penalty = frequency}, {},
      /*prompt=*/{1});
  ForceTokens(sampler, 8, {3, 5, 3});
  const std::vector<float> raw = {0.5f, 2.0f, -1.5f, 0.7f, -0.2f, 1.1f, -3.0f, 0.0f};
  std::vector<float> row = raw;
  sampler.ProcessLogits(row);
  EXPECT_FLOAT_EQ(row[3], 0.7f - (frequency * 2 + presence));
  EXPECT_FLOAT_EQ(row[5], 1.1f - (frequency * 1 + presence));
  for (int id : {0, 1, 2, 4, 6, 7}) EXPECT_EQ(row[id], raw[id]) << id;  // prompt id 1 untouched
}

TEST(SamplerPenalties, NegativePresenceAndFrequencyEncourage) {
  Sampler sampler =
      MakeSampler({.temperature = 0.0f, .presence_penalty = -1.0f, .frequency_penalty = -0.5f});
  ForceTokens(sampler, 4, {2, 2});
  std::vector<float> row = {0.0f, 0.0f, 0.0f, 0.0f};
  sampler.ProcessLogits(row);
  EXPECT_THAT(row, ElementsAre(0.0f, 0.0f, 2.0f, 0.0f));
}

TEST(SamplerPenalties, RepetitionBeforePresenceAndFrequency) {
  Sampler sampler = MakeSampler({.temperature = 0.0f,
                                 .repetition_penalty = 2.0f,
                                 .presence_penalty = 0.5f,
                                 .frequency_penalty = 0.25f});
  ForceTokens(sampler, 4, {1});
  std::vector<float> row = {1.0f, 3.0f, 1.0f, 1.0f};
  sampler.ProcessLogits(row);
  EXPECT_FLOAT_EQ(row[1], 3.0f / 2.0f - 0.75f);  // the other order would give 1.125
}

// ---------------------------------------------------------------------------------------------
// Min length, eos and stop ids, max length

TEST(SamplerFinish, MinNewTokensMasksEosAndStopIds) {
  Sampler sampler = MakeSampler(
      {.temperature = 0.0f, .stop_token_ids = {3}, .max_new_tokens = 10, .min_new_tokens = 3},
      /*eos=*/{2});
  const std::vector<float> logits = {0.0f, 0.0f, 9.0f, 8.0f, 7.0f};
  std::vector<float> row = logits;
  sampler.ProcessLogits(row);
  EXPECT_EQ(row[2], kNegInf);
  EXPECT_EQ(row[3], kNegInf);
  for (int i = 0; i < 3; ++i) {
    const TokenId id = SampleCopy(sampler, logits).id;
    EXPECT_EQ(id, 4) << "token " << i;
    EXPECT_EQ(sampler.CheckFinish(id), Finish::kNone);
  }
  const TokenId id = SampleCopy(sampler, logits).id;
  EXPECT_EQ(id, 2);  // min reached: eos allowed again
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kStop);
}

TEST(SamplerFinish, StopIdsCountOnlyAfterMinNewTokens) {
  // Asked directly: a stop id as the n-th token counts only once min_new_tokens came before
  // it, the same rule the mask enforces while sampling.
  Sampler sampler =
      MakeSampler({.temperature = 0.0f, .stop_token_ids = {3}, .min_new_tokens = 2}, /*eos=*/{2});
  const std::vector<float> logits = {1.0f, 0.0f, 0.0f, 0.0f};
  for (int n = 1; n <= 3; ++n) {
    SampleCopy(sampler, logits);
    const Finish want = n > 2 ? Finish::kStop : Finish::kNone;
    EXPECT_EQ(sampler.CheckFinish(2), want) << n;
    EXPECT_EQ(sampler.CheckFinish(3), want) << n;
  }
}

TEST(SamplerFinish, MinNewTokensMasksStopIdsWhenSampling) {
  // Non-greedy as well: the masked ids are never drawn however likely they are.
  Sampler sampler =
      MakeSampler({.seed = 5, .stop_token_ids = {1}, .max_new_tokens = 500, .min_new_tokens = 400},
                  /*eos=*/{0});
  const std::vector<float> logits = {3.0f, 3.0f, 0.0f, 0.0f};
  for (int i = 0; i < 400; ++i) {
    const TokenId id = SampleCopy(sampler, logits).id;
    ASSERT_TRUE(id == 2 || id == 3) << "token " << i << " id " << id;
  }
}

TEST(SamplerFinish, IgnoreEosNeitherStopsNorMasks) {
  Sampler sampler = MakeSampler(
      {.temperature = 0.0f, .max_new_tokens = 3, .min_new_tokens = 1, .ignore_eos = true},
      /*eos=*/{2});
  const std::vector<float> logits = {0.0f, 1.0f, 9.0f};
  TokenId id = SampleCopy(sampler, logits).id;
  EXPECT_EQ(id, 2);  // not masked during min_new_tokens: it is an ordinary token now
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kNone);
  id = SampleCopy(sampler, logits).id;
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kNone);
  id = SampleCopy(sampler, logits).id;
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kLength);
}

TEST(SamplerFinish, IgnoreEosStillStopsOnStopIds) {
  Sampler sampler = MakeSampler({.temperature = 0.0f, .stop_token_ids = {1}, .ignore_eos = true},
                                /*eos=*/{2});
  const TokenId id = SampleCopy(sampler, {0.0f, 9.0f, 1.0f}).id;
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kStop);
}

TEST(SamplerFinish, EosAndStopIdsFinish) {
  Sampler sampler = MakeSampler({.temperature = 0.0f, .stop_token_ids = {4, 6}}, /*eos=*/{2});
  TokenId id = SampleCopy(sampler, {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f}).id;
  EXPECT_EQ(id, 5);
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kNone);
  id = SampleCopy(sampler, {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f}).id;
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kStop);
  EXPECT_EQ(sampler.CheckFinish(4), Finish::kStop);
  EXPECT_EQ(sampler.CheckFinish(2), Finish::kStop);
  EXPECT_EQ(sampler.CheckFinish(3), Finish::kNone);
}

TEST(SamplerFinish, MaxNewTokensGivesLength) {
  Sampler sampler = MakeSampler({.temperature = 0.0f, .max_new_tokens = 3}, /*eos=*/{0});
  const std::vector<float> logits = {0.0f, 1.0f};
  for (int i = 1; i <= 3; ++i) {
    const TokenId id = SampleCopy(sampler, logits).id;
    EXPECT_EQ(sampler.num_generated(), i);
    EXPECT_EQ(sampler.CheckFinish(id), i < 3 ? Finish::kNone : Finish::kLength);
  }
}

TEST(SamplerFinish, StopWinsOverLengthOnTheLastToken) {
  Sampler sampler = MakeSampler({.temperature = 0.0f, .max_new_tokens = 1}, /*eos=*/{0});
  const TokenId id = SampleCopy(sampler, {1.0f, 0.0f}).id;
  EXPECT_EQ(sampler.CheckFinish(id), Finish::kStop);
}

// ---------------------------------------------------------------------------------------------
// Seeds

std::vector<TokenId> Generate(Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<TokenId> ids;
  for (int i = 0; i < n; ++i) ids.push_back(SampleCopy(sampler, logits).id);
  return ids;
}

TEST(SamplerSeed, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = RandomLogits(1000, /*seed=*/77, /*stddev=*/1.0f);
  const SamplingParams params{.top_p = 0.95f, .seed = 42};
  Sampler a = MakeSampler(params);
  Sampler b = MakeSampler(params, {}, {}, /*fallback_seed=*/999);  // seed wins over fallback
  const std::vector<TokenId> seq_a = Generate(a, logits, 64);
  EXPECT_EQ(seq_a, Generate(b, logits, 64));

  SamplingParams other = params;
  other.seed = 43;
  Sampler c = MakeSampler(other);
  EXPECT_NE(seq_a, Generate(c, logits, 64));
}

TEST(SamplerSeed, OtherRequestsInTheBatchDoNotMatter) {
  const std::vector<float> logits = RandomLogits(1000, /*seed=*/78, /*stddev=*/1.0f);
  const SamplingParams params{.top_k = 100, .seed = 7};
  Sampler alone = MakeSampler(params);
  const std::vector<TokenId> expected = Generate(alone, logits, 32);

  Sampler mine = MakeSampler(params);
  Sampler neighbour = MakeSampler({.temperature = 0.7f, .top_p = 0.5f, .seed = 7});
  const std::vector<float> other_logits = RandomLogits(1000, /*seed=*/79);
  std::vector<TokenId> got;
  for (int i = 0; i < 32; ++i) {
    SampleCopy(neighbour, other_logits);
    got.push_back(SampleCopy(mine, logits).id);
  }
  EXPECT_EQ(got, expected);
}

TEST(SamplerSeed, FallbackSeedUsedWithoutRequestSeed) {
  const std::vector<float> logits = RandomLogits(1000, /*seed=*/80, /*stddev=*/1.0f);
  Sampler a = MakeSampler({}, {}, {}, /*fallback_seed=*/5);
  Sampler b = MakeSampler({}, {}, {}, /*fallback_seed=*/5);
  Sampler c = MakeSampler({}, {}, {}, /*fallback_seed=*/6);
  const std::vector<TokenId> seq_a = Generate(a, logits, 64);
  EXPECT_EQ(seq_a, Generate(b, logits, 64));
  EXPECT_NE(seq_a, Generate(c, logits, 64));
}

// ---------------------------------------------------------------------------------------------
// Log-probs

std::vector<double> LogSoftmaxDouble(const std::vector<float>& logits) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits) sum += std::exp(x - max);
  std::vector<double> out;
  for (float x : logits) out.push_back(x - max - std::log(sum));
  return out;
}

TEST(SamplerLogprobs, ChosenAndTopComeFromRawLogits) {
  const std::vector<float> logits = RandomLogits(1000, /*seed=*/90);
  const std::vector<double> want = LogSoftmaxDouble(logits);
  const std::vector<TokenId> best = TopIds(logits, 5);
  // Penalty and temperature make the processed row differ from the raw one; the reported
  // numbers must not see them.
  Sampler sampler = MakeSampler({.temperature = 0.7f,
                                 .repetition_penalty = 1.5f,
                                 .seed = 3,
                                 .top_logprobs = 5,
                                 .logprobs = true},
                                {}, /*prompt=*/{best[0], best[1]});
  for (int i = 0; i < 20; ++i) {
    const SampledToken t = SampleCopy(sampler, logits);
    EXPECT_NEAR(t.logprob, want[t.id], 1e-5);
    ASSERT_EQ(t.top.size(), 5u);
    for (size_t k = 0; k < 5; ++k) {
      EXPECT_EQ(t.top[k].id, best[k]) << k;
      EXPECT_NEAR(t.top[k].logprob, want[best[k]], 1e-5) << k;
      if (k > 0) {
        EXPECT_GE(t.top[k - 1].logprob, t.top[k].logprob);
      }
    }
  }
}

TEST(SamplerLogprobs, GreedyChosenLogprob) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 0.5f};
  Sampler sampler = MakeSampler({.temperature = 0.0f, .logprobs = true});
  const SampledToken t = SampleCopy(sampler, logits);
  EXPECT_EQ(t.id, 1);
  EXPECT_NEAR(t.logprob, LogSoftmaxDouble(logits)[1], 1e-6);
  EXPECT_TRUE(t.top.empty());
}

TEST(SamplerLogprobs, TopListTiesGoToLowestIdAndStopAtVocab) {
  Sampler sampler = MakeSampler({.temperature = 0.0f, .top_logprobs = 20});
  const SampledToken t = SampleCopy(sampler, {1.0f, 2.0f, 1.0f, 2.0f});
  ASSERT_EQ(t.top.size(), 4u);
  EXPECT_THAT(std::vector<TokenId>({t.top[0].id, t.top[1].id, t.top[2].id, t.top[3].id}),
              ElementsAre(1, 3, 0, 2));
  EXPECT_EQ(t.logprob, 0.0f);  // not requested
}

TEST(SamplerLogprobs, NothingFilledUnlessRequested) {
  Sampler sampler = MakeSampler({.seed = 1});
  const SampledToken t = SampleCopy(sampler, {1.0f, 2.0f, 3.0f});
  EXPECT_EQ(t.logprob, 0.0f);
  EXPECT_TRUE(t.top.empty());
}

// A prompt token's rank is 1 + the count of strictly larger logits (ties share a rank), for
// every id, inside or outside the top alternatives; Sample does not compute it.
TEST(LogProbOf, RankIsOnePlusTheLargerLogits) {
  std::vector<float> logits = RandomLogits(500, /*seed=*/17);
  for (size_t i = 0; i < logits.size(); i += 7) logits[i] = 0.5f;  // ties
  const std::vector<double> want = LogSoftmaxDouble(logits);
  for (TokenId id = 0; id < static_cast<TokenId>(logits.size()); ++id) {
    const SampledToken t = LogProbOf(logits, id, 2);
    int32_t larger = 0;
    for (float x : logits) larger += x > logits[static_cast<size_t>(id)] ? 1 : 0;
    EXPECT_EQ(t.rank, larger + 1) << id;
    EXPECT_NEAR(t.logprob, want[static_cast<size_t>(id)], 1e-5) << id;
    ASSERT_EQ(t.top.size(), 2u);
    if (t.rank == 1) {
      EXPECT_EQ(t.top[0].logprob, t.logprob) << id;
    }
  }
  EXPECT_EQ(LogProbOf(std::vector<float>{1.0f, 2.0f, 2.0f, 0.0f}, 2, 0).rank, 1);
  EXPECT_EQ(LogProbOf(std::vector<float>{1.0f, 2.0f, 2.0f, 0.0f}, 0, 0).rank, 3);
  EXPECT_EQ(LogProbOf(std::vector<float>{1.0f, 2.0f, 2.0f, 0.0f}, 3, 0).rank, 4);
  Sampler sampler = MakeSampler({.temperature = 0.0f, .logprobs = true});
  EXPECT_EQ(SampleCopy(sampler, {1.0f, 2.0f}).rank, 0);
}

// ---------------------------------------------------------------------------------------------
// Validation

TEST(SamplingParamsValidate, DefaultsAndBoundariesAreValid) {
  EXPECT_TRUE(SamplingParams{}.Validate(100).ok());
  const SamplingParams edges{.temperature = 0.0f,
                             .top_k = 100000,
                             .top_p = 1.0f,
                             .min_p = 1.0f,
                             .repetition_penalty = 0.01f,
                             .presence_penalty = -2.0f,
                             .frequency_penalty = 2.0f,
                             .top_logprobs = 20,
                             .stop_token_ids = {0, 99},
                             .max_new_tokens = 5,
                             .min_new_tokens = 5};
  EXPECT_TRUE(edges.Validate(100).ok()) << edges.Validate(100);
}

struct InvalidCase {
  std::string name;
  std::function<void(SamplingParams&)> mutate;
  std::string field;
  std::string value;
};

class SamplingParamsInvalid : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(SamplingParamsInvalid, RejectedWithFieldAndValue) {
  SamplingParams params;
  GetParam().mutate(params);
  const absl::Status status = params.Validate(/*vocab_size=*/100);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(GetParam().field));
  EXPECT_THAT(std::string(status.message()), HasSubstr("got " + GetParam().value));
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

INSTANTIATE_TEST_SUITE_P(
    AllFields, SamplingParamsInvalid,
    ::testing::Values(
        InvalidCase{"NegativeTemperature", [](auto& p) { p.temperature = -1.0f; }, "temperature",
                    "-1"},
        InvalidCase{"NaNTemperature", [](auto& p) { p.temperature = kNaN; }, "temperature", "nan"},
        InvalidCase{"InfTemperature", [](auto& p) { p.temperature = kInf; }, "temperature", "inf"},
        InvalidCase{"TopPZero", [](auto& p) { p.top_p = 0.0f; }, "top_p must be in (0, 1]", "0"},
        InvalidCase{"TopPAboveOne", [](auto& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1]",
                    "1.5"},
        InvalidCase{"TopPNaN", [](auto& p) { p.top_p = kNaN; }, "top_p", "nan"},
        InvalidCase{"MinPNegative", [](auto& p) { p.min_p = -0.1f; }, "min_p", "-0.1"},
        InvalidCase{"MinPAboveOne", [](auto& p) { p.min_p = 1.1f; }, "min_p", "1.1"},
        InvalidCase{"TopKNegative", [](auto& p) { p.top_k = -1; }, "top_k", "-1"},
        InvalidCase{"RepetitionZero", [](auto& p) { p.repetition_penalty = 0.0f; },
                    "repetition_penalty", "0"},
        InvalidCase{"RepetitionInf", [](auto& p) { p.repetition_penalty = kInf; },
                    "repetition_penalty", "inf"},
        InvalidCase{"PresenceThree", [](auto& p) { p.presence_penalty = 3.0f; }, "presence_penalty",
                    "3"},
        InvalidCase{"FrequencyNaN", [](auto& p) { p.frequency_penalty = kNaN; },
                    "frequency_penalty", "nan"},
        InvalidCase{"FrequencyMinusThree", [](auto& p) { p.frequency_penalty = -3.0f; },
                    "frequency_penalty", "-3"},
        InvalidCase{"TopLogprobs21", [](auto& p) { p.top_logprobs = 21; }, "top_logprobs", "21"},
        InvalidCase{"TopLogprobsNegative", [](auto& p) { p.top_logprobs = -1; }, "top_logprobs",
                    "-1"},
        InvalidCase{"MaxNewTokensZero", [](auto& p) { p.max_new_tokens = 0; }, "max_new_tokens",
                    "0"},
        InvalidCase{"MinAboveMax",
                    [](auto& p) {
                      p.max_new_tokens = 16;
                      p.min_new_tokens = 20;
                    },
                    "min_new_tokens", "20"},
        InvalidCase{"MinNegative", [](auto& p) { p.min_new_tokens = -1; }, "min_new_tokens", "-1"},
        InvalidCase{"StopIdAtVocab",
                    [](auto& p) {
                      p.stop_token_ids = {5, 100};
                    },
                    "stop_token_ids[1]", "100"},
        InvalidCase{"StopIdNegative", [](auto& p) { p.stop_token_ids = {-1}; }, "stop_token_ids[0]",
                    "-1"}),
    [](const ::testing::TestParamInfo<InvalidCase>& info) { return info.param.name; });

TEST(SamplingParamsValidate, MessageReadsWell) {
  const absl::Status status = SamplingParams{.top_p = 1.5f}.Validate(100);
  EXPECT_EQ(status.message(), "top_p must be in (0, 1], got 1.5");
}

}  // namespace
}  // namespace mamba::engine
