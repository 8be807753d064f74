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

// ---- State cache ----

// Runs `prompts` through one loop with a state store, `concurrency` at a time in submission
// order, and returns each request's tokens (with log-probs) and the cached tokens it reported.
struct CachedRun {
  std::vector<std::vector<SampledToken>> tokens;
  std::vector<int64_t> cached;
};
class FullRecorder : public RequestSink {
 public:
  void OnToken(const TokenEvent& e) override { tokens.push_back(e.token); }
  void OnFinish(const FinishEvent& e) override {
    finish = e;
    done = true;
  }
  std::vector<SampledToken> tokens;
  FinishEvent finish;
  bool done = false;
};

std::unique_ptr<LiveRequest> Sampled(uint64_t id, std::vector<TokenId> prompt, int max_new,
                                     std::shared_ptr<RequestSink> sink, bool greedy) {
  auto live = Live(id, std::move(prompt), max_new, std::move(sink));
  if (!greedy) {
    live->req.params.temperature = 1.0f;
    live->req.params.seed = 1000 + id;
  }
  return live;
}

// Random prompt trees: shared prefixes, branches, exact repeats, extensions by one token,
// strict prefixes of cached prompts, and next turns (prompt + completion + new text).
std::vector<std::vector<TokenId>> PromptTree(std::mt19937_64& rng, int count, int64_t vocab) {
  std::vector<std::vector<TokenId>> out;
  std::vector<std::vector<TokenId>> roots = {Prompt(rng, 30, vocab), Prompt(rng, 12, vocab)};
  for (int i = 0; i < count; ++i) {
    std::vector<TokenId> p;
    const uint64_t kind = out.empty() ? 0 : rng() % 6;
    const std::vector<TokenId>& base = out.empty() ? roots[0] : out[rng() % out.size()];
    switch (kind) {
      case 0:  // a root plus a fresh suffix (siblings under a shared prefix)
        p = roots[rng() % roots.size()];
        for (TokenId t : Prompt(rng, 1 + static_cast<int64_t>(rng() % 8), vocab)) p.push_back(t);
        break;
      case 1:  // an exact repeat
        p = base;
        break;
      case 2:  // extended by one token
        p = base;
        p.push_back(static_cast<TokenId>(rng() % static_cast<uint64_t>(vocab)));
        break;
      case 3:  // a strict prefix of a cached prompt
        p.assign(base.begin(), base.begin() + 1 + static_cast<int64_t>(rng() % base.size()));
        break;
      case 4:  // a branch inside a cached prompt
        p.assign(base.begin(), base.begin() + static_cast<int64_t>(rng() % base.size()));
        for (TokenId t : Prompt(rng, 1 + static_cast<int64_t>(rng() % 5), vocab)) p.push_back(t);
        break;
      default:  // a fresh prompt
        p = Prompt(rng, 1 + static_cast<int64_t>(rng() % 20), vocab);
    }
    out.push_back(std::move(p));
  }
  return out;
}

CachedRun RunCached(FakeBackendOptions fo, StateStore* store,
                    const std::vector<std::vector<TokenId>>& prompts, int concurrency, int max_new,
                    bool greedy, bool next_turns, int64_t prefill_chunk) {
  FakeBackend b(fo);
  SchedulerOptions so;
  so.prefill_chunk = prefill_chunk;
  BatchLoop loop(b, nullptr, so, nullptr, StateCache{store, StateKey{1, 0}});
  CachedRun run;
  std::vector<std::shared_ptr<FullRecorder>> sinks;
  std::vector<std::vector<TokenId>> sent;
  size_t next = 0;
  while (next < prompts.size() || !loop.Idle()) {
    while (next < prompts.size() &&
           loop.num_waiting() + loop.num_running() < static_cast<size_t>(concurrency)) {
      std::vector<TokenId> p = prompts[next];
      // A next turn: the previous request's prompt + its completion + this prompt's tokens.
      if (next_turns && next % 2 == 1 && sinks[next - 1]->done) {
        std::vector<TokenId> turn = sent[next - 1];
        for (const SampledToken& t : sinks[next - 1]->tokens) turn.push_back(t.id);
        turn.insert(turn.end(), p.begin(), p.end());
        p = std::move(turn);
      }
      sinks.push_back(std::make_shared<FullRecorder>());
      sent.push_back(p);
      loop.Enqueue(Sampled(next + 1, p, max_new, sinks.back(), greedy));
      ++next;
    }
    loop.Step();
  }
  for (size_t i = 0; i < sinks.size(); ++i) {
    EXPECT_TRUE(sinks[i]->done);
    run.tokens.push_back(sinks[i]->tokens);
    run.cached.push_back(sinks[i]->finish.usage.cached_tokens);
  }
  // Cold: the same requests, decoded alone.
  for (size_t i = 0; i < sent.size(); ++i) {
    fo.num_slots = 1;
    FakeBackend solo(fo);
    auto r = Sampled(i + 1, sent[i], max_new, nullptr, greedy);
    auto cold = testing::SingleRequest(solo, sent[i], r->req.params, 0);
    EXPECT_TRUE(cold.ok());
    EXPECT_EQ(Ids(run.tokens[i]), Ids(*cold)) << "request " << i;
    if (run.tokens[i].size() == cold->size()) {
      for (size_t k = 0; k < cold->size(); ++k) {
        EXPECT_EQ(run.tokens[i][k].logprob, (*cold)[k].logprob) << "request " << i;
      }
    }
  }
  return run;
}

// Every request served with the cache equals the same request served cold, token for token and
// log-prob for log-prob, whatever the tree of prompts, the concurrency, the chunking and the
// eviction pressure; and the cache is really used.
TEST(StateCache, NeverChangesAnOutput) {
  FakeBackendOptions fo;
  fo.vocab_size = 40;
  fo.peak = 2.0f;
  fo.num_slots = 4;
  std::mt19937_64 rng(11);
  const int64_t entry = StateSnapshot{std::vector<float>(2), {}}.bytes();
  for (int64_t capacity : {int64_t{1} << 30, 6 * (entry + 160)}) {
    for (int concurrency : {1, 4}) {
      for (bool greedy : {true, false}) {
        for (int64_t chunk : {int64_t{0}, int64_t{3}}) {
          StateStoreOptions so;
          so.capacity_bytes = capacity;
          StateStore store(so);
          const auto prompts = PromptTree(rng, 60, fo.vocab_size);
          SCOPED_TRACE(::testing::Message()
                       << "capacity " << capacity << " concurrency " << concurrency << " greedy "
                       << greedy << " chunk " << chunk);
          const CachedRun run = RunCached(fo, &store, prompts, concurrency, 6, greedy, true, chunk);
          int64_t reused = 0;
          for (int64_t c : run.cached) reused += c;
          EXPECT_GT(reused, 0);
          EXPECT_LE(store.stats().bytes, capacity);
          if (capacity < 1000) {
            EXPECT_GT(store.stats().evictions, 0);
          }
        }
      }
    }
  }
}

// Siblings under a shared prefix: the second splits its prefill at the branch point and leaves a
// snapshot there; the third restores it and computes only its own suffix.
TEST(StateCache, SharedPrefixHitsFromTheSecondSibling) {
  FakeBackend b(FakeBackendOptions{.num_slots = 2});
  StateStore store(StateStoreOptions{.capacity_bytes = 1 << 20});
  BatchLoop loop(b, nullptr, SchedulerOptions{}, nullptr, StateCache{&store, {}});
  std::vector<TokenId> shared(20, 7);
  auto with = [&](std::vector<TokenId> suffix) {
    std::vector<TokenId> p = shared;
    p.insert(p.end(), suffix.begin(), suffix.end());
    return p;
  };
  auto run = [&](std::vector<TokenId> prompt) {
    auto sink = std::make_shared<FullRecorder>();
    const size_t first = b.calls().size();
    loop.Enqueue(Live(1, std::move(prompt), 2, sink));
    while (!loop.Idle()) loop.Step();
    std::vector<size_t> prompt_chunks;  // the prompt chunks' sizes, in order
    for (size_t c = first; c < b.calls().size(); ++c) {
      for (const auto& ch : b.calls()[c].chunks) {
        if (ch.tokens.size() > 1 || ch.start) prompt_chunks.push_back(ch.tokens.size());
      }
    }
    return std::make_pair(prompt_chunks, sink->finish.usage.cached_tokens);
  };
  EXPECT_EQ(run(with({1, 2, 3})), std::make_pair(std::vector<size_t>{23}, int64_t{0}));
  // Shares 20 tokens with the cached path, no snapshot there: split at 20, snapshot taken.
  EXPECT_EQ(run(with({4, 5})), std::make_pair(std::vector<size_t>{20, 2}, int64_t{0}));
  EXPECT_TRUE(store.Contains({}, shared));
  // From the third sibling on: restored at 20, only the suffix runs.
  EXPECT_EQ(run(with({6, 8, 9, 10})), std::make_pair(std::vector<size_t>{4}, int64_t{20}));
}

// Siblings arriving together: the first computes the shared prefix and snapshots it at the
// branch point while the others wait (their slots free for other work); they are admitted on the
// snapshot and compute only their suffixes. The prefix runs once, however many arrive at once.
TEST(StateCache, SiblingsArrivingTogetherComputeTheSharedPrefixOnce) {
  FakeBackend b(FakeBackendOptions{.num_slots = 4});
  StateStore store(StateStoreOptions{.capacity_bytes = 1 << 20});
  SchedulerOptions so;
  so.max_step_tokens = 64;
  BatchLoop loop(b, nullptr, so, nullptr, StateCache{&store, {}});
  std::mt19937_64 rng(5);
  const std::vector<TokenId> shared = Prompt(rng, 200, 64);
  std::vector<std::vector<TokenId>> prompts;
  std::vector<std::shared_ptr<FullRecorder>> sinks;
  for (int i = 0; i < 8; ++i) {
    std::vector<TokenId> p = shared;
    for (TokenId t : Prompt(rng, 10, 64)) p.push_back(t);
    if (i == 7) p = Prompt(rng, 50, 64);  // unrelated: not held back
    prompts.push_back(p);
    sinks.push_back(std::make_shared<FullRecorder>());
    loop.Enqueue(Live(static_cast<uint64_t>(i + 1), p, 3, sinks.back()));
  }
  int64_t prompt_tokens = 0;
  while (!loop.Idle()) {
    const size_t first = b.calls().size();
    loop.Step();
    for (size_t c = first; c < b.calls().size(); ++c) {
      for (const auto& ch : b.calls()[c].chunks) {
        if (ch.tokens.size() > 1 || ch.start)
          prompt_tokens += static_cast<int64_t>(ch.tokens.size());
      }
    }
  }
  // Prefix once (one token of which may run as a 1-token chunk the count above skips), the
  // seven suffixes, the unrelated prompt.
  EXPECT_LE(prompt_tokens, 200 + 7 * 10 + 50);
  EXPECT_GE(prompt_tokens, 199 + 7 * 10 + 50);
  int64_t cached = 0;
  for (size_t i = 0; i < sinks.size(); ++i) {
    ASSERT_TRUE(sinks[i]->done);
    cached += sinks[i]->finish.usage.cached_tokens;
    FakeBackend solo(FakeBackendOptions{.num_slots = 1});
    SamplingParams p;
    p.temperature = 0;
    p.max_new_tokens = 3;
    p.ignore_eos = true;
    auto cold = testing::SingleRequest(solo, prompts[i], p, 0);
    ASSERT_TRUE(cold.ok());
    EXPECT_EQ(Ids(sinks[i]->tokens), Ids(*cold)) << "request " << i;
  }
  EXPECT_EQ(cached, 6 * 200);
}

// Greedy ids of `prompt` decoded alone on the fake model the two tests below use.
std::vector<TokenId> GreedyCold(const std::vector<TokenId>& prompt, int max_new) {
  FakeBackend solo(FakeBackendOptions{.vocab_size = 50, .num_slots = 1, .peak = 1.0f});
  SamplingParams p;
  p.temperature = 0;
  p.max_new_tokens = max_new;
  p.ignore_eos = true;
  auto cold = testing::SingleRequest(solo, prompt, p, 0);
  EXPECT_TRUE(cold.ok()) << cold.status();
  return cold.ok() ? Ids(*cold) : std::vector<TokenId>{};
}

// An identical prompt restores the prompt-end snapshot with its logits and runs no prompt token;
// the next turn (prompt + completion + new text) resumes where the completion left its state.
TEST(StateCache, RepeatsRunNothingAndNextTurnsResume) {
  FakeBackend b(FakeBackendOptions{.vocab_size = 50, .num_slots = 2, .peak = 1.0f});
  StateStore store(StateStoreOptions{.capacity_bytes = 1 << 20});
  BatchLoop loop(b, nullptr, SchedulerOptions{}, nullptr, StateCache{&store, {}});
  const std::vector<TokenId> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  auto first = std::make_shared<FullRecorder>();
  loop.Enqueue(Live(1, prompt, 5, first));
  while (!loop.Idle()) loop.Step();
  const size_t calls = b.calls().size();
  auto again = std::make_shared<FullRecorder>();
  loop.Enqueue(Live(2, prompt, 5, again));
  loop.Step();
  EXPECT_EQ(b.calls().size(), calls);  // the first token came from the stored logits
  while (!loop.Idle()) loop.Step();
  EXPECT_EQ(Ids(again->tokens), Ids(first->tokens));
  EXPECT_EQ(again->finish.usage.cached_tokens, 8);

  std::vector<TokenId> turn = prompt;
  for (const SampledToken& t : first->tokens) turn.push_back(t.id);
  turn.push_back(11);
  auto next = std::make_shared<FullRecorder>();
  loop.Enqueue(Live(3, turn, 3, next));
  loop.Step();
  // Restored after prompt + 4 of the 5 completion tokens: runs the last one and the new token.
  EXPECT_EQ(next->finish.usage.cached_tokens, 0);  // not finished yet
  EXPECT_EQ(b.calls().back().chunks.back().tokens,
            (std::vector<TokenId>{first->tokens.back().id, 11}));
  while (!loop.Idle()) loop.Step();
  EXPECT_EQ(next->finish.usage.cached_tokens, 12);
  EXPECT_EQ(Ids(next->tokens), GreedyCold(turn, 3));
}

// n > 1 with a cache hit forks the restored state; a request cancelled mid-prefill leaves no
// snapshot of its prompt (only of the branch it reached, keyed by exactly those tokens).
TEST(StateCache, ForksAndCancellationsKeepTheStoreExact) {
  FakeBackend b(FakeBackendOptions{.vocab_size = 50, .num_slots = 4, .peak = 1.0f});
  StateStore store(StateStoreOptions{.capacity_bytes = 1 << 20});
  SchedulerOptions so;
  so.prefill_chunk = 4;
  BatchLoop loop(b, nullptr, so, nullptr, StateCache{&store, {}});
  const std::vector<TokenId> prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  auto warm = std::make_shared<Recorder>();
  loop.Enqueue(Live(1, prompt, 4, warm));
  while (!loop.Idle()) loop.Step();
  auto three = std::make_shared<Recorder>();
  loop.Enqueue(Live(2, prompt, 4, three, 3));
  while (!loop.Idle()) loop.Step();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(three->tokens[i], warm->tokens[0]);
  EXPECT_EQ(three->finishes[0].usage.cached_tokens, 10);

  std::vector<TokenId> long_prompt(30, 21);
  auto cancelled = std::make_shared<Recorder>();
  loop.Enqueue(Live(3, long_prompt, 4, cancelled));
  loop.Step();
  loop.Step();  // 8 of 30 tokens in
  loop.EndWhere([](const LiveRequest&) {
    return std::optional<BatchLoop::Ending>(
        BatchLoop::Ending{Finish::kCancelled, absl::CancelledError("x")});
  });
  EXPECT_FALSE(store.Contains({}, long_prompt));
  auto after = std::make_shared<Recorder>();
  loop.Enqueue(Live(4, long_prompt, 4, after));
  while (!loop.Idle()) loop.Step();
  EXPECT_EQ(after->tokens[0], GreedyCold(long_prompt, 4));
}

}  // namespace
}  // namespace mamba::engine
