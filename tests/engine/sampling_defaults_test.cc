// OpenAI's logit_bias in the Sampler (where it applies, what it leaves alone, its validation) and
// a model's sampling defaults read from generation_config.json.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "engine/generation_config.h"
#include "engine/sampling.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine {
namespace {

using ::testing::HasSubstr;

SampledToken SampleCopy(Sampler& s, const std::vector<float>& logits) {
  std::vector<float> row = logits;
  return s.Sample(row);
}

TEST(LogitBiasTest, AddsToTheLogitBeforeEverythingElse) {
  SamplingParams p;
  p.logit_bias = {{1, 2.5f}, {3, -100.0f}};
  p.repetition_penalty = 2.0f;  // applies after the bias: (0.5 + 2.5) / 2 for a repeated id 1
  Sampler s(p, {}, std::vector<TokenId>{1}, 7);
  std::vector<float> row = {0.0f, 0.5f, 1.0f, 9.0f};
  s.ProcessLogits(row);
  EXPECT_FLOAT_EQ(row[0], 0.0f);
  EXPECT_FLOAT_EQ(row[1], 1.5f);
  EXPECT_FLOAT_EQ(row[2], 1.0f);
  EXPECT_FLOAT_EQ(row[3], -91.0f);
}

TEST(LogitBiasTest, SteersGreedyButNotTheReportedLogprobs) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = true;
  p.top_logprobs = 1;
  p.logit_bias = {{0, 100.0f}};
  Sampler s(p, {}, {}, 7);
  const std::vector<float> row = {0.0f, 5.0f, 1.0f};
  SampledToken t = SampleCopy(s, row);
  EXPECT_EQ(t.id, 0);
  // The raw log-prob of id 0 and the raw best alternative (id 1).
  EXPECT_NEAR(t.logprob, -5.0f - std::log(1.0f + std::exp(-5.0f) + std::exp(-4.0f)), 1e-5);
  ASSERT_EQ(t.top.size(), 1u);
  EXPECT_EQ(t.top[0].id, 1);
  // -100 bans the greedy choice when another token is close.
  p.logit_bias = {{1, -100.0f}};
  Sampler banned(p, {}, {}, 7);
  EXPECT_EQ(SampleCopy(banned, row).id, 2);
}

TEST(LogitBiasTest, Validation) {
  auto check = [](std::vector<LogitBias> bias) {
    SamplingParams p;
    p.logit_bias = std::move(bias);
    return p.Validate(10);
  };
  EXPECT_TRUE(check({{0, -100.0f}, {9, 100.0f}}).ok());
  EXPECT_THAT(check({{10, 1.0f}}).message(), HasSubstr("logit_bias"));
  EXPECT_FALSE(check({{-1, 1.0f}}).ok());
  EXPECT_FALSE(check({{1, 100.5f}}).ok());
  EXPECT_FALSE(check({{1, std::nanf("")}}).ok());
  EXPECT_FALSE(check({{1, 1.0f}, {1, 2.0f}}).ok());
  std::vector<LogitBias> many;
  for (int i = 0; i < 301; ++i) many.push_back({i % 10, 0.0f});
  SamplingParams p;
  p.logit_bias = many;
  EXPECT_THAT(p.Validate(1000).message(), HasSubstr("at most 300"));
}

class GenerationDefaultsTest : public ::testing::Test {
 protected:
  absl::StatusOr<GenerationDefaults> Read(const std::string& text) {
    const std::filesystem::path path = dir_.path() / "generation_config.json";
    std::ofstream(path) << text;
    return ReadGenerationDefaults(path);
  }
  ::mamba::testing::TempDir dir_;
};

TEST_F(GenerationDefaultsTest, ReadsTheSamplingKeysOnly) {
  absl::StatusOr<GenerationDefaults> d =
      Read(R"({"_from_model_config": true, "bos_token_id": 0, "eos_token_id": 0,
               "do_sample": true, "temperature": 0.8, "top_k": 40, "top_p": 0.95,
               "min_p": 0.05, "repetition_penalty": 1.1, "max_new_tokens": 64,
               "transformers_version": "4.39.3"})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->ToString(),
            "temperature=0.8 top_k=40 top_p=0.95 min_p=0.05 repetition_penalty=1.1 "
            "max_new_tokens=64");
  SamplingParams p = d->Apply(SamplingParams{});
  EXPECT_FLOAT_EQ(p.temperature, 0.8f);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_FLOAT_EQ(p.top_p, 0.95f);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
  EXPECT_FLOAT_EQ(p.repetition_penalty, 1.1f);
  EXPECT_EQ(p.max_new_tokens, 64);
}

TEST_F(GenerationDefaultsTest, AbsentOrNullKeysChangeNothing) {
  absl::StatusOr<GenerationDefaults> d = Read(R"({"eos_token_id": 0, "temperature": null})");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->empty());
  EXPECT_EQ(d->ToString(), "none");
  const SamplingParams p = d->Apply(SamplingParams{});
  EXPECT_FLOAT_EQ(p.temperature, 1.0f);
  EXPECT_EQ(p.max_new_tokens, 16);
}

TEST_F(GenerationDefaultsTest, BadValuesNameTheFileAndKey) {
  for (const char* text :
       {R"({"temperature": -1})", R"({"top_p": 0})", R"({"top_k": "40"})", R"({"top_k": 1.5})",
        R"({"max_new_tokens": 0})", R"({"min_p": 2})", R"([1, 2])", R"({"temperature": )"}) {
    absl::StatusOr<GenerationDefaults> d = Read(text);
    EXPECT_FALSE(d.ok()) << text;
    EXPECT_THAT(d.status().message(), HasSubstr("generation_config.json")) << text;
  }
  EXPECT_FALSE(ReadGenerationDefaults(dir_.path() / "missing.json").ok());
}

}  // namespace
}  // namespace mamba::engine
