// The batching loop over the deterministic fake backend, step by step: continuous batching,
// chunking and budgets never change a request's output (against one request decoded alone),
// prompt progress under a full decode budget, forks for n > 1, backend failures and early ends.
// Everything is driven on this thread: no sleeps, no polling.
#include "engine/serving/batch_loop.h"

#include <map>
#include <random>

#include "engine/generate.h"
#include "gtest/gtest.h"
#include "tests/engine/fake_backend.h"
#include "tests/engine/single_request.h"

namespace mamba::engine {
namespace {

using testing::FakeBackend;
using testing::FakeBackendOptions;

class Recorder : public RequestSink {
 public:
  void OnToken(const TokenEvent& e) override { tokens[e.index].push_back(e.token.id); }
  void OnFinish(const FinishEvent& e) override { finishes[e.index] = e; }
  std::map<int, std::vector<TokenId>> tokens;
  std::map<int, FinishEvent> finishes;
};

std::unique_ptr<LiveRequest> Live(uint64_t id, std::vector<TokenId> prompt, int max_new,
                                  std::shared_ptr<RequestSink> sink, int n = 1) {
  auto live = std::make_unique<LiveRequest>();
  live->view.id = RequestId(id);
  live->req.prompt = std::move(prompt);
  live->req.params.temperature = 0;
  live->req.params.max_new_tokens = max_new;
  live->req.params.ignore_eos = true;
  live->req.n = n;
  live->sink = std::move(sink);
  live->submitted = Clock::now();
  return live;
}

std::vector<TokenId> Prompt(std::mt19937_64& rng, int64_t len, int64_t vocab) {
  std::vector<TokenId> p(static_cast<size_t>(len));
  for (TokenId& t : p) t = static_cast<TokenId>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

std::vector<TokenId> Ids(const std::vector<SampledToken>& tokens) {
  std::vector<TokenId> ids;
  for (const SampledToken& t : tokens) ids.push_back(t.id);
  return ids;
}

// 40 greedy and seeded requests with random lengths and arrival steps through Generate (the
// loop) with several slot counts, budgets and prefill chunks: each equals the request decoded
// alone, token for token and log-prob for log-prob (the fake is exact).
TEST(BatchLoop, BatchingNeverChangesAnOutput) {
  FakeBackendOptions fo;
  fo.vocab_size = 97;
  fo.eos_token_ids = {3};
  fo.peak = 2.0f;  // sampling has real choices
  std::mt19937_64 rng(7);
  std::vector<GenerationRequest> reqs(40);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt = Prompt(rng, 1 + static_cast<int64_t>(rng() % 50), fo.vocab_size);
    reqs[i].params.temperature = i % 2 ? 0.0f : 1.0f;
    if (i % 4 == 0) reqs[i].params.seed = rng();
    reqs[i].params.max_new_tokens = 1 + static_cast<int32_t>(rng() % 30);
    reqs[i].arrival_step = static_cast<int64_t>(rng() % 40);
  }
  std::vector<std::vector<SampledToken>> alone;
  for (size_t i = 0; i < reqs.size(); ++i) {
    fo.num_slots = 1;
    FakeBackend solo(fo);
    auto out = testing::SingleRequest(solo, reqs[i].prompt, reqs[i].params, 11 + i);
    ASSERT_TRUE(out.ok()) << out.status();
    alone.push_back(*out);
  }
  for (int slots : {1, 3, 16}) {
    for (int64_t budget : {int64_t{1} << 40, int64_t{7}}) {
      for (int64_t chunk : {int64_t{0}, int64_t{4}}) {
        fo.num_slots = slots;
        FakeBackend b(fo);
        GenerateOptions go;
        go.seed = 11;
        go.max_step_tokens = budget;
        go.prefill_chunk = chunk;
        auto together = Generate(b, reqs, go);
        ASSERT_TRUE(together.ok()) << together.status();
        for (size_t i = 0; i < reqs.size(); ++i) {
          const auto& got = (*together)[i].tokens;
          ASSERT_EQ(Ids(got), Ids(alone[i])) << "request " << i << " slots " << slots << " budget "
                                             << budget << " chunk " << chunk;
          for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k].logprob, alone[i][k].logprob);
        }
      }
    }
  }
}

// Three decodes fill a 2-token budget; a 40-token prompt admitted behind them still moves 16
// tokens a step (16, 16, 8) and then decodes with them.
TEST(BatchLoop, PromptsMoveSixteenTokensAStepUnderAFullDecodeBudget) {
  FakeBackend b(FakeBackendOptions{.num_slots = 4});
  SchedulerOptions so;
  so.max_step_tokens = 2;
  BatchLoop loop(b, nullptr, so, nullptr);
  auto sink = std::make_shared<Recorder>();
  for (uint64_t id = 1; id <= 3; ++id) loop.Enqueue(Live(id, {1, 2}, 1000, sink));
  loop.Step();  // the three 2-token prompts: 2 tokens of budget, then 16 for the oldest...
  while (loop.num_running() < 3 || b.calls().back().chunks.size() < 3) loop.Step();
  auto late = std::make_shared<Recorder>();
  loop.Enqueue(Live(4, std::vector<TokenId>(40, 5), 2, late));
  const size_t first = b.calls().size();
  for (int i = 0; i < 4; ++i) loop.Step();
  std::vector<std::vector<size_t>> shapes;  // per step: each chunk's token count
  for (size_t c = first; c < b.calls().size(); ++c) {
    shapes.emplace_back();
    for (const auto& ch : b.calls()[c].chunks) shapes.back().push_back(ch.tokens.size());
  }
  EXPECT_EQ(shapes, (std::vector<std::vector<size_t>>{
                        {1, 1, 1, 16}, {1, 1, 1, 16}, {1, 1, 1, 8}, {1, 1, 1, 1}}));
  loop.Step();
  ASSERT_EQ(late->finishes.count(0), 1u);
  EXPECT_EQ(late->finishes[0].reason, Finish::kLength);
  EXPECT_EQ(late->tokens[0].size(), 2u);
  EXPECT_TRUE(sink->finishes.empty());
}

// n = 3: one prefill, then three decodes in three slots, each forked from the prompt's state;
// greedy completions are equal, seeded ones differ; the slots return when all end.
TEST(BatchLoop, NCompletionsForkTheirPromptOnce) {
  FakeBackend b(FakeBackendOptions{.vocab_size = 50, .num_slots = 4, .peak = 1.0f});
  BatchLoop loop(b, nullptr, SchedulerOptions{}, nullptr);
  auto greedy = std::make_shared<Recorder>();
  loop.Enqueue(Live(1, {4, 5, 6}, 5, greedy, 3));
  loop.Step();
  ASSERT_EQ(b.calls().size(), 1u);
  EXPECT_EQ(b.calls()[0].chunks.size(), 1u);  // the prompt, once
  EXPECT_EQ(loop.slots().num_used(), 3);
  while (!loop.Idle()) loop.Step();
  EXPECT_EQ(b.calls()[1].chunks.size(), 3u);
  EXPECT_EQ(greedy->tokens[0], greedy->tokens[1]);
  EXPECT_EQ(greedy->tokens[0], greedy->tokens[2]);
  EXPECT_EQ(loop.slots().num_used(), 0);

  auto sampled = std::make_shared<Recorder>();
  auto live = Live(2, {4, 5, 6}, 12, sampled, 3);
  live->req.params.temperature = 1.0f;
  live->req.params.seed = 5;
  loop.Enqueue(std::move(live));
  while (!loop.Idle()) loop.Step();
  EXPECT_NE(sampled->tokens[0], sampled->tokens[1]);
  EXPECT_NE(sampled->tokens[1], sampled->tokens[2]);
}

TEST(BatchLoop, BackendFailureEndsEveryRunningRequestAndFreesItsSlots) {
  FakeBackend b(FakeBackendOptions{.num_slots = 2});
  BatchLoop loop(b, nullptr, SchedulerOptions{}, nullptr);
  auto sink = std::make_shared<Recorder>();
  for (uint64_t id = 1; id <= 3; ++id) loop.Enqueue(Live(id, {1, 2, 3}, 50, sink));
  loop.Step();
  b.FailNextCall(absl::DataLossError("device lost"));
  const BatchLoop::StepResult r = loop.Step();
  EXPECT_EQ(r.counts.retired, 2);
  ASSERT_EQ(sink->finishes.size(), 1u);  // one index (0) shared by the sink: the last writer
  EXPECT_EQ(sink->finishes[0].reason, Finish::kError);
  EXPECT_EQ(sink->finishes[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(sink->finishes[0].status.message().find("device lost"), std::string::npos);
  EXPECT_EQ(loop.slots().num_used(), 0);
  // The third request, still waiting during the failure, runs afterwards.
  EXPECT_EQ(loop.num_waiting(), 1u);
  while (!loop.Idle()) loop.Step();
  EXPECT_EQ(sink->finishes[0].reason, Finish::kLength);
}

TEST(BatchLoop, EndWhereEndsWaitingAndRunningRequests) {
  FakeBackend b(FakeBackendOptions{.num_slots = 1});
  BatchLoop loop(b, nullptr, SchedulerOptions{}, nullptr);
  auto running = std::make_shared<Recorder>(), waiting = std::make_shared<Recorder>();
  loop.Enqueue(Live(1, {1}, 100, running));
  loop.Enqueue(Live(2, {1}, 100, waiting));
  loop.Step();
  EXPECT_EQ(loop.num_running(), 1u);
  const LoopCounts counts = loop.EndWhere([](const LiveRequest&) {
    return std::optional<BatchLoop::Ending>(
        BatchLoop::Ending{Finish::kCancelled, absl::CancelledError("bye")});
  });
  EXPECT_EQ(counts.dropped, 1);
  EXPECT_EQ(counts.retired, 1);
  EXPECT_TRUE(loop.Idle());
  EXPECT_EQ(loop.slots().num_used(), 0);
  EXPECT_EQ(running->finishes[0].reason, Finish::kCancelled);
  EXPECT_EQ(running->finishes[0].usage.completion_tokens, 1);
  EXPECT_EQ(waiting->finishes[0].reason, Finish::kCancelled);
  EXPECT_EQ(waiting->finishes[0].usage.completion_tokens, 0);
}

}  // namespace
}  // namespace mamba::engine
