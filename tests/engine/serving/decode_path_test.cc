// The batching loop's decode path (DecodePath::kDecode: decode rows through
// Backend::DecodeAndDraw, as on a GPU) over the deterministic fake backend: every output equals
// the one-token-prefill path's (greedy rows are drawn by the backend, penalized rows sampled on
// the host), rows under a LoRA adapter stay prefill chunks so their adapter applies, and a
// failing DecodeAndDraw ends the step's requests with its error.
#include <map>
#include <optional>
#include <random>

#include "engine/lora/adapter_registry.h"
#include "engine/lora/lora_writer.h"
#include "engine/serving/batch_loop.h"
#include "gtest/gtest.h"
#include "tests/engine/fake_backend.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using testing::FakeBackend;

// The fake, counting what DecodeAndDraw ran and drew, and failing it on request.
class DrawingFake : public FakeBackend {
 public:
  DrawingFake() : FakeBackend(testing::SmallConfig(), 6) {}
  absl::Status DecodeAndDraw(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                             std::span<const std::optional<DrawRule>> rules,
                             std::vector<SampledToken>* drawn, Logits* logits) override {
    if (!fail_.ok()) return std::exchange(fail_, absl::OkStatus());
    rows += static_cast<int64_t>(slots.size());
    for (const auto& r : rules) drawn_rows += r.has_value();
    return Backend::DecodeAndDraw(slots, tokens, rules, drawn, logits);
  }
  void FailNextDraw(absl::Status s) { fail_ = std::move(s); }
  int64_t rows = 0, drawn_rows = 0;

 private:
  absl::Status fail_;
};

class Recorder : public RequestSink {
 public:
  void OnToken(const TokenEvent& e) override {
    tokens[e.index].push_back(e.token.id);
    logprobs[e.index].push_back(e.token.logprob);
  }
  void OnFinish(const FinishEvent& e) override { finishes[e.index] = e; }
  std::map<int, std::vector<TokenId>> tokens;
  std::map<int, std::vector<float>> logprobs;
  std::map<int, FinishEvent> finishes;
};

struct Spec {
  int64_t prompt_len;
  int n;
  bool penalized;
  bool adapter;
};

class DecodePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RandomLoraOptions o;
    o.config = testing::SmallConfig();
    o.target_modules = {"in_proj", "out_proj"};
    o.rank = 4;
    o.alpha = 8;
    ASSERT_TRUE(WriteRandomLoraAdapter(o, dir_.path() / "a").ok());
  }

  // Runs the specs through one loop with a small step budget (prompts chunked, decodes sharing
  // steps with prompt chunks) and returns every request's recorder.
  std::vector<std::shared_ptr<Recorder>> Run(DrawingFake& fake, DecodePath path,
                                             const std::vector<Spec>& specs) {
    AdapterRegistry reg(fake, {});
    auto adapter = reg.Load("a", dir_.path() / "a");
    EXPECT_TRUE(adapter.ok()) << adapter.status();
    SchedulerOptions so;
    so.max_step_tokens = 12;
    BatchLoop loop(fake, nullptr, so, nullptr);
    loop.set_decode_path(path);
    std::mt19937_64 rng(5);
    std::vector<std::shared_ptr<Recorder>> sinks;
    for (size_t i = 0; i < specs.size(); ++i) {
      const Spec& s = specs[i];
      auto live = std::make_unique<LiveRequest>();
      live->view.id = RequestId(i + 1);
      live->req.prompt = testing::RandomPrompt(s.prompt_len, 96, 30 + i);
      live->req.params.temperature = s.penalized ? 0.7f : 0.0f;
      live->req.params.seed = 100 + i;
      live->req.params.repetition_penalty = s.penalized ? 1.4f : 1.0f;
      live->req.params.logprobs = true;
      live->req.params.max_new_tokens = 5 + static_cast<int32_t>(i % 4);
      live->req.params.ignore_eos = true;
      live->req.n = s.n;
      if (s.adapter && adapter.ok()) live->req.adapter = *adapter;
      sinks.push_back(std::make_shared<Recorder>());
      live->sink = sinks.back();
      live->submitted = Clock::now();
      loop.Enqueue(std::move(live));
    }
    for (int step = 0; step < 1000 && !loop.Idle(); ++step) loop.Step();
    EXPECT_TRUE(loop.Idle());
    return sinks;
  }

  testing::TempDir dir_;
};

TEST_F(DecodePathTest, EveryOutputEqualsThePrefillPaths) {
  const std::vector<Spec> specs = {{7, 1, false, false}, {30, 2, false, false},
                                   {3, 1, true, false},  {19, 1, false, true},
                                   {25, 3, true, false}, {11, 2, false, true}};
  DrawingFake prefill, decode;
  const auto want = Run(prefill, DecodePath::kPrefill, specs);
  const auto got = Run(decode, DecodePath::kDecode, specs);
  EXPECT_EQ(prefill.rows, 0);
  EXPECT_GT(decode.drawn_rows, 0);
  EXPECT_LT(decode.drawn_rows, decode.rows);  // penalized rows came back as logits
  int64_t base_decodes = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    ASSERT_EQ(got[i]->finishes.size(), static_cast<size_t>(specs[i].n)) << "request " << i;
    EXPECT_EQ(got[i]->tokens, want[i]->tokens) << "request " << i;
    EXPECT_EQ(got[i]->logprobs, want[i]->logprobs) << "request " << i;
    for (const auto& [index, f] : got[i]->finishes) EXPECT_TRUE(f.status.ok()) << f.status;
    if (!specs[i].adapter) {
      for (const auto& [index, t] : got[i]->tokens) base_decodes += std::ssize(t) - 1;
    }
  }
  // Only the base model's rows took the decode path; the adapter's stayed prefill chunks (the
  // fake's state under an adapter differs, so the equal outputs above prove they applied it).
  EXPECT_EQ(decode.rows, base_decodes);
}

TEST_F(DecodePathTest, AFailedDrawEndsTheStepsRequestsWithItsError) {
  DrawingFake fake;
  AdapterRegistry reg(fake, {});
  SchedulerOptions so;
  BatchLoop loop(fake, nullptr, so, nullptr);
  loop.set_decode_path(DecodePath::kDecode);
  auto sink = std::make_shared<Recorder>();
  auto live = std::make_unique<LiveRequest>();
  live->view.id = RequestId(1);
  live->req.prompt = {1, 2, 3};
  live->req.params.temperature = 0;
  live->req.params.max_new_tokens = 8;
  live->sink = sink;
  live->submitted = Clock::now();
  loop.Enqueue(std::move(live));
  loop.Step();  // the prompt, and the first token from its logits
  ASSERT_EQ(sink->tokens[0].size(), 1u);
  fake.FailNextDraw(absl::InternalError("device lost"));
  loop.Step();
  ASSERT_EQ(sink->finishes.size(), 1u);
  EXPECT_EQ(sink->finishes[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(sink->finishes[0].status.message().find("device lost"), std::string::npos);
  EXPECT_EQ(sink->tokens[0].size(), 1u);
  EXPECT_EQ(loop.slots().num_used(), 0);
}

// The host default refuses a call whose rules do not match its rows, naming both counts.
TEST(DecodeAndDrawTest, RulesMustMatchTheRows) {
  FakeBackend fake(testing::SmallConfig(), 2);
  const SlotId slots[] = {SlotId(0), SlotId(1)};
  const TokenId tokens[] = {1, 2};
  const std::optional<DrawRule> rules[] = {DrawRule{}};
  std::vector<SampledToken> drawn;
  Logits logits;
  const absl::Status s = fake.Backend::DecodeAndDraw(slots, tokens, rules, &drawn, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("2 slots but 1 rules"), std::string::npos) << s;
}

}  // namespace
}  // namespace mamba::engine
