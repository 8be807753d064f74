// The serving engine: continuous batching must not change any request's result; cancellation,
// deadlines, overload, draining and stop strings behave as promised.
#include "engine/engine.h"

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/engine/single_request.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

// Records every event; Wait blocks (bounded) until all completions finished.
class Collector : public RequestSink {
 public:
  explicit Collector(int n = 1)
      : n_(n),
        tokens_(static_cast<size_t>(n)),
        logprobs_(static_cast<size_t>(n)),
        text_(static_cast<size_t>(n)) {}
  void OnToken(const TokenEvent& e) override {
    std::lock_guard<std::mutex> l(mu_);
    tokens_[static_cast<size_t>(e.index)].push_back(e.token.id);
    logprobs_[static_cast<size_t>(e.index)].push_back(e.token.logprob);
    text_[static_cast<size_t>(e.index)] += e.text;
    cv_.notify_all();
  }
  void OnFinish(const FinishEvent& e) override {
    std::lock_guard<std::mutex> l(mu_);
    text_[static_cast<size_t>(e.index)] += e.text;
    finishes_[e.index] = e;
    cv_.notify_all();
  }
  bool Wait(std::chrono::milliseconds t = 60s) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, t, [&] { return static_cast<int>(finishes_.size()) == n_; });
  }
  bool Done() {
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<int>(finishes_.size()) == n_;
  }
  bool WaitTokens(size_t k, std::chrono::milliseconds t = 60s) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, t, [&] { return tokens_[0].size() >= k; });
  }
  std::vector<TokenId> tokens(int i = 0) {
    std::lock_guard<std::mutex> l(mu_);
    return tokens_[static_cast<size_t>(i)];
  }
  std::vector<float> logprobs(int i = 0) {
    std::lock_guard<std::mutex> l(mu_);
    return logprobs_[static_cast<size_t>(i)];
  }
  std::string text(int i = 0) {
    std::lock_guard<std::mutex> l(mu_);
    return text_[static_cast<size_t>(i)];
  }
  FinishEvent finish(int i = 0) {
    std::lock_guard<std::mutex> l(mu_);
    return finishes_.at(i);
  }

 private:
  int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<TokenId>> tokens_;
  std::vector<std::vector<float>> logprobs_;
  std::vector<std::string> text_;
  std::map<int, FinishEvent> finishes_;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    o.config.vocab_size = 50280;  // the real tokenizer's ids must fit
    o.config.num_hidden_layers = 1;
    o.perturb_constants = true;
    auto ck = Checkpoint::Open(testing::WriteModel(*dir_, "m", o));
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = new std::shared_ptr<const Checkpoint>(*ck);
    auto tok = Tokenizer::FromFile(testing::SourceDir() / "models/gpt-neox-20b/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = new std::shared_ptr<const Tokenizer>(std::move(*tok));
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    delete tokenizer_;
    delete dir_;
  }
  std::unique_ptr<Backend> MakeBackend(int slots) {
    BackendOptions bo;
    bo.num_slots = slots;
    auto b = cpu::CpuBackend::Create(*checkpoint_, bo);
    EXPECT_TRUE(b.ok());
    return std::move(*b);
  }
  std::unique_ptr<Engine> MakeEngine(int slots, EngineOptions eo = {}) {
    auto e = Engine::Create(MakeBackend(slots), *tokenizer_, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  // Sinks hear OnFinish inside the step; the slot returns when the request retires, which
  // WaitIdle waits for (on a condition, not by polling).
  static bool SlotsFree(Engine& e) { return e.WaitIdle(30s) && e.Stats().slots_used == 0; }
  static Request Greedy(std::vector<TokenId> prompt, int max_new) {
    Request r;
    r.prompt = std::move(prompt);
    r.params.temperature = 0;
    r.params.max_new_tokens = max_new;
    r.params.ignore_eos = true;
    return r;
  }
  static TempDir* dir_;
  static std::shared_ptr<const Checkpoint>* checkpoint_;
  static std::shared_ptr<const Tokenizer>* tokenizer_;
};
TempDir* EngineTest::dir_ = nullptr;
std::shared_ptr<const Checkpoint>* EngineTest::checkpoint_ = nullptr;
std::shared_ptr<const Tokenizer>* EngineTest::tokenizer_ = nullptr;

// 64 concurrent greedy and seeded requests of mixed lengths, arriving at random times into 8
// slots with a small step budget (chunked prefill, queueing): each equals the request decoded
// alone, one Backend::Decode call per token (no scheduler, no batching loop).
TEST_F(EngineTest, ContinuousBatchingDoesNotChangeResults) {
  std::mt19937_64 rng(3);
  std::vector<Request> reqs;
  for (int i = 0; i < 64; ++i) {
    std::vector<TokenId> p(1 + rng() % 150);
    for (auto& t : p) t = static_cast<TokenId>(rng() % 50000);
    Request r = Greedy(p, 1 + static_cast<int>(rng() % 24));
    if (i % 3 == 0) {
      r.params.temperature = 0.8f;
      r.params.seed = 77 + i;
    }
    reqs.push_back(r);
  }
  auto solo = MakeBackend(1);
  std::vector<std::vector<TokenId>> want;
  for (const Request& r : reqs) {
    auto out = testing::SingleRequest(*solo, r.prompt, r.params, 0);
    ASSERT_TRUE(out.ok()) << out.status();
    std::vector<TokenId> ids;
    for (auto& t : *out) ids.push_back(t.id);
    want.push_back(ids);
  }
  EngineOptions eo;
  eo.max_step_tokens = 48;
  eo.max_queue = 64;
  auto engine = MakeEngine(8, eo);
  std::vector<std::shared_ptr<Collector>> sinks;
  for (const Request& r : reqs) {
    sinks.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(engine->Submit(r, sinks.back()).ok());
    if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 5));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(sinks[i]->Wait()) << i;
    EXPECT_EQ(sinks[i]->tokens(), want[i]) << "request " << i;
    EXPECT_EQ(sinks[i]->finish().usage.completion_tokens, static_cast<int64_t>(want[i].size()));
  }
  EXPECT_TRUE(SlotsFree(*engine));
}

TEST_F(EngineTest, NCompletionsShareThePrompt) {
  auto engine = MakeEngine(4);
  auto one = std::make_shared<Collector>(1);
  ASSERT_TRUE(engine->Submit(Greedy({10, 20, 30}, 8), one).ok());
  Request r = Greedy({10, 20, 30}, 8);
  r.n = 3;
  auto three = std::make_shared<Collector>(3);
  ASSERT_TRUE(engine->Submit(r, three).ok());
  ASSERT_TRUE(one->Wait() && three->Wait());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(three->tokens(i), one->tokens());
  r.params.temperature = 1.0f;
  r.params.seed = 5;
  auto sampled = std::make_shared<Collector>(3);
  ASSERT_TRUE(engine->Submit(r, sampled).ok());
  ASSERT_TRUE(sampled->Wait());
  EXPECT_FALSE(sampled->tokens(0) == sampled->tokens(1) &&
               sampled->tokens(1) == sampled->tokens(2));
  r.n = 5;
  EXPECT_EQ(engine->Submit(r, sampled).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, CancelFreesTheSlotWithinAStep) {
  auto engine = MakeEngine(2);
  auto sink = std::make_shared<Collector>();
  auto id = engine->Submit(Greedy({1, 2, 3}, 16000), sink);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(sink->WaitTokens(3));
  EXPECT_EQ(engine->Stats().slots_used, 1);
  engine->Cancel(*id);
  ASSERT_TRUE(sink->Wait(5s));
  EXPECT_EQ(sink->finish().reason, Finish::kCancelled);
  EXPECT_EQ(sink->finish().status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(SlotsFree(*engine));
}

TEST_F(EngineTest, DeadlineEndsRunningAndWaitingRequests) {
  auto engine = MakeEngine(1);
  Request r = Greedy({1, 2}, 16000);
  r.deadline = Clock::now() + 150ms;
  auto running = std::make_shared<Collector>(), waiting = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, running).ok());
  ASSERT_TRUE(engine->Submit(r, waiting).ok());
  ASSERT_TRUE(running->Wait(10s) && waiting->Wait(10s));
  EXPECT_EQ(running->finish().reason, Finish::kDeadline);
  EXPECT_EQ(waiting->finish().reason, Finish::kDeadline);
  EXPECT_EQ(waiting->finish().usage.completion_tokens, 0);
}

TEST_F(EngineTest, FullQueueIsRefusedAtOnce) {
  EngineOptions eo;
  eo.max_queue = 2;
  auto engine = MakeEngine(1, eo);
  std::vector<std::shared_ptr<Collector>> sinks;
  int refused = 0;
  std::vector<RequestId> ids;
  for (int i = 0; i < 6; ++i) {
    sinks.push_back(std::make_shared<Collector>());
    auto id = engine->Submit(Greedy({1, 2}, 16000), sinks.back());
    if (!id.ok()) {
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      ++refused;
    } else {
      ids.push_back(*id);
    }
  }
  EXPECT_EQ(refused, 3);  // 1 running + 2 queued, however far the loop has got
  for (RequestId id : ids) engine->Cancel(id);
}

// A burst into an idle engine fills every free slot before anything counts as queued; with
// max_queue 0 a request runs now or is refused.
TEST_F(EngineTest, BurstFillsFreeSlotsBeforeTheQueue) {
  for (int max_queue : {0, 2}) {
    EngineOptions eo;
    eo.max_queue = max_queue;
    auto engine = MakeEngine(4, eo);
    std::vector<std::shared_ptr<Collector>> sinks;
    std::vector<RequestId> ids;
    int refused = 0;
    for (int i = 0; i < 10; ++i) {
      sinks.push_back(std::make_shared<Collector>());
      auto id = engine->Submit(Greedy({1, 2}, 16000), sinks.back());
      if (id.ok()) {
        ids.push_back(*id);
      } else {
        EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
        sinks.pop_back();
        ++refused;
      }
    }
    EXPECT_EQ(ids.size(), static_cast<size_t>(4 + max_queue)) << "max_queue " << max_queue;
    EXPECT_EQ(refused, 6 - max_queue);
    for (RequestId id : ids) engine->Cancel(id);
    for (auto& s : sinks) EXPECT_TRUE(s->Wait(10s));
    EXPECT_TRUE(SlotsFree(*engine));
  }
}

// More running completions than max_step_tokens: decodes alone would fill every step, yet a
// newly admitted prompt still makes progress and gets its tokens while the others run on.
TEST_F(EngineTest, PromptsProgressWhenDecodesFillTheBudget) {
  EngineOptions eo;
  eo.max_step_tokens = 4;
  auto engine = MakeEngine(8, eo);
  std::vector<std::shared_ptr<Collector>> long_sinks;
  std::vector<RequestId> ids;
  for (int i = 0; i < 6; ++i) {
    long_sinks.push_back(std::make_shared<Collector>());
    auto id = engine->Submit(Greedy({1, 2, 3}, 16000), long_sinks.back());
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  for (auto& s : long_sinks) ASSERT_TRUE(s->WaitTokens(2));
  auto late = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(testing::RandomPrompt(40, 1000, 5), 3), late).ok());
  EXPECT_TRUE(late->Wait(20s)) << "the late prompt starved behind the decodes";
  EXPECT_EQ(late->finish().reason, Finish::kLength);
  for (auto& s : long_sinks) EXPECT_FALSE(s->Done());  // they were still running meanwhile
  for (RequestId id : ids) engine->Cancel(id);
  for (auto& s : long_sinks) EXPECT_TRUE(s->Wait(10s));
}

TEST_F(EngineTest, DrainRefusesNewWorkAndFinishesOrCancelsOld) {
  auto engine = MakeEngine(2);
  auto quick = std::make_shared<Collector>(), slow = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy({4, 5}, 5), quick).ok());
  engine->StartDrain();
  EXPECT_EQ(engine->Submit(Greedy({4, 5}, 5), quick).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->WaitIdle(30s));
  EXPECT_EQ(quick->finish().reason, Finish::kLength);
  auto engine2 = MakeEngine(2);
  ASSERT_TRUE(engine2->Submit(Greedy({4, 5}, 16000), slow).ok());
  engine2->StartDrain();
  EXPECT_FALSE(engine2->WaitIdle(200ms));
  ASSERT_TRUE(slow->Wait(5s));
  EXPECT_EQ(slow->finish().reason, Finish::kCancelled);
}

TEST_F(EngineTest, StopStringsCutTheText) {
  auto engine = MakeEngine(2);
  const auto prompt = *(*tokenizer_)->Encode("The quick brown fox");
  auto full = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(Greedy(prompt, 40), full).ok());
  ASSERT_TRUE(full->Wait());
  const std::string text = full->text();
  ASSERT_EQ(text, *(*tokenizer_)->Decode(full->tokens(), true));
  ASSERT_GE(text.size(), 6u);
  const std::string stop = text.substr(3, 3);  // somewhere inside the output
  Request r = Greedy(prompt, 40);
  r.stop_strings = {stop};
  auto cut = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, cut).ok());
  ASSERT_TRUE(cut->Wait());
  EXPECT_EQ(cut->text(), text.substr(0, text.find(stop)));
  EXPECT_EQ(cut->finish().reason, Finish::kStop);
  EXPECT_EQ(cut->finish().matched_stop, stop);
}

TEST_F(EngineTest, InvalidRequests) {
  EngineOptions eo;
  eo.max_prompt_tokens = 10;
  auto engine = MakeEngine(2, eo);
  auto sink = std::make_shared<Collector>();
  EXPECT_EQ(engine->Submit(Greedy({}, 5), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy({50280}, 5), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Too long is a bad argument too (the engine's limit; front ends map it, issue 12).
  EXPECT_EQ(engine->Submit(Greedy(std::vector<TokenId>(11, 1), 5), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  Request r = Greedy({1}, 5);
  r.params.top_k = -1;
  EXPECT_EQ(engine->Submit(r, sink).status().code(), absl::StatusCode::kInvalidArgument);
  r = Greedy({1}, 5);
  r.stop_strings = {""};
  EXPECT_EQ(engine->Submit(r, sink).status().code(), absl::StatusCode::kInvalidArgument);
}

// Checks `got` against `turn` run alone on `solo` with prompt `whole` (for a session turn: the
// whole conversation so far + the new text), token for token, and log-prob for log-prob where
// the packed GEMM makes results batch-independent.
void ExpectCold(Backend& solo, const std::vector<TokenId>& whole, const Request& turn,
                Collector& got) {
  auto cold = testing::SingleRequest(solo, whole, turn.params, 0);
  ASSERT_TRUE(cold.ok()) << cold.status();
  std::vector<TokenId> ids;
  std::vector<float> logprobs;
  for (const SampledToken& t : *cold) {
    ids.push_back(t.id);
    logprobs.push_back(t.logprob);
  }
  EXPECT_EQ(got.tokens(), ids);
  if (solo.Describe().find("packed") != std::string::npos) {
    EXPECT_EQ(got.logprobs(), logprobs);
  }
}

// The state cache on the CPU engine: conversations (each turn = the last prompt + its
// completion + new text), siblings under a shared prefix and repeats, greedy and seeded, served
// with the cache equal the same requests decoded alone, token for token and log-prob for
// log-prob (bitwise where the packed GEMM runs), and most of their prompts were restored.
TEST_F(EngineTest, StateCacheServesExactlyWhatAColdRunServes) {
  EngineOptions eo;
  eo.state_cache_bytes = int64_t{1} << 28;
  eo.max_step_tokens = 64;
  auto engine = MakeEngine(4, eo);
  auto solo = MakeBackend(1);
  const std::vector<TokenId> system = testing::RandomPrompt(80, 50000, 21);
  std::vector<Request> asked;
  std::vector<std::shared_ptr<Collector>> sinks;
  auto ask = [&](std::vector<TokenId> prompt, bool sampled) {
    Request r = Greedy(std::move(prompt), 10);
    if (sampled) {
      r.params.temperature = 0.9f;
      r.params.seed = 40 + asked.size();
    }
    asked.push_back(r);
    sinks.push_back(std::make_shared<Collector>());
    EXPECT_TRUE(engine->Submit(r, sinks.back()).ok());
    EXPECT_TRUE(sinks.back()->Wait());
  };
  for (int conversation = 0; conversation < 3; ++conversation) {
    std::vector<TokenId> prompt = system;
    for (TokenId t : testing::RandomPrompt(7, 50000, 100 + conversation)) prompt.push_back(t);
    for (int turn = 0; turn < 3; ++turn) {
      ask(prompt, conversation == 1);
      for (TokenId t : sinks.back()->tokens()) prompt.push_back(t);
      for (TokenId t : testing::RandomPrompt(5, 50000, 200 + turn)) prompt.push_back(t);
    }
  }
  ask(asked[4].prompt, false);  // a repeat
  int64_t cached = 0;
  for (size_t i = 0; i < asked.size(); ++i) {
    {
      SCOPED_TRACE(absl::StrCat("request ", i));
      ExpectCold(*solo, asked[i].prompt, asked[i], *sinks[i]);
    }
    cached += sinks[i]->finish().usage.cached_tokens;
  }
  EXPECT_EQ(sinks.back()->finish().usage.cached_tokens,
            static_cast<int64_t>(asked.back().prompt.size()));
  EXPECT_GT(cached, 600);
  const EngineStats st = engine->Stats();
  EXPECT_GT(st.cache_hits + st.cache_partial_hits, 7);
  EXPECT_GT(st.cache_entries, 0);
}

// A conversation sent turn by turn through a session (only the new text each turn) produces
// exactly what the whole conversation sent cold produces, with the state cache on or off, greedy
// and seeded; each turn reuses everything but the last token of the one before.
TEST_F(EngineTest, SessionTurnsEqualColdRunsOfTheWholeConversation) {
  auto solo = MakeBackend(1);
  for (int64_t cache : {int64_t{0}, int64_t{1} << 28}) {
    EngineOptions eo;
    eo.state_cache_bytes = cache;
    eo.sessions.max_bytes = int64_t{1} << 28;
    eo.max_step_tokens = 16;
    auto engine = MakeEngine(3, eo);
    for (int sampled = 0; sampled < 2; ++sampled) {
      const std::string id = absl::StrCat("conv-", cache, "-", sampled);
      std::vector<TokenId> whole;
      for (int turn = 0; turn < 4; ++turn) {
        const std::vector<TokenId> text =
            testing::RandomPrompt(turn == 0 ? 30 : 5, 50000, 300 + turn + 10 * sampled);
        Request r = Greedy(text, 6);
        r.session_id = id;
        if (sampled) {
          r.params.temperature = 0.8f;
          r.params.seed = 77 + turn;
        }
        auto sink = std::make_shared<Collector>();
        ASSERT_TRUE(engine->Submit(r, sink).ok());
        ASSERT_TRUE(sink->Wait());
        const int64_t before = static_cast<int64_t>(whole.size());
        whole.insert(whole.end(), text.begin(), text.end());
        SCOPED_TRACE(absl::StrCat(id, " turn ", turn));
        ExpectCold(*solo, whole, r, *sink);
        const FinishEvent f = sink->finish();
        EXPECT_EQ(f.usage.prompt_tokens, static_cast<int64_t>(whole.size()));
        EXPECT_EQ(f.usage.cached_tokens, turn == 0 ? 0 : before - 1);
        for (TokenId t : sink->tokens()) whole.push_back(t);
        EXPECT_EQ(f.session_tokens, static_cast<int64_t>(whole.size()));
        EXPECT_EQ(engine->GetSession(id)->tokens, static_cast<int64_t>(whole.size()));
      }
    }
    EXPECT_EQ(engine->Stats().session_restores, 6);
  }
}

TEST_F(EngineTest, SessionRefusals) {
  EngineOptions eo;
  eo.sessions.max_bytes = int64_t{1} << 28;
  eo.max_prompt_tokens = 40;
  auto engine = MakeEngine(2, eo);
  auto code = [&](Request r) {
    auto id = engine->Submit(std::move(r), std::make_shared<Collector>());
    return id.status().code();
  };
  Request r = Greedy(testing::RandomPrompt(20, 50000, 1), 4);
  r.session_id = "s";
  // A second request on a session in use.
  Request hold = r;
  hold.params.max_new_tokens = 100000 > eo.max_new_tokens_limit ? eo.max_new_tokens_limit : 100000;
  auto holder = std::make_shared<Collector>();
  auto held = engine->Submit(hold, holder);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(holder->WaitTokens(1));
  EXPECT_EQ(code(r), absl::StatusCode::kAborted);
  EXPECT_TRUE(engine->GetSession("s")->in_use);
  // A first turn that fails (cancelled) leaves no session.
  engine->Cancel(*held);
  ASSERT_TRUE(holder->Wait());
  EXPECT_EQ(engine->GetSession("s").status().code(), absl::StatusCode::kNotFound);
  // The session would pass max_prompt_tokens: refused, the session untouched.
  auto first = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(r, first).ok());
  ASSERT_TRUE(first->Wait());
  EXPECT_EQ(engine->GetSession("s")->tokens, 24);
  Request more = r;
  more.prompt = testing::RandomPrompt(17, 50000, 2);
  auto too_long = engine->Submit(more, std::make_shared<Collector>());
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("24 tokens"), std::string::npos) << too_long.status();
  EXPECT_EQ(engine->GetSession("s")->tokens, 24);
  EXPECT_FALSE(engine->GetSession("s")->in_use);
  // An empty turn continues from the last token; an empty new session has nothing to run.
  Request empty = r;
  empty.prompt.clear();
  auto cont = std::make_shared<Collector>();
  ASSERT_TRUE(engine->Submit(empty, cont).ok());
  ASSERT_TRUE(cont->Wait());
  EXPECT_EQ(cont->finish().session_tokens, 28);
  empty.session_id = "new";
  EXPECT_EQ(code(empty), absl::StatusCode::kInvalidArgument);
  Request two = r;
  two.n = 2;
  EXPECT_EQ(code(two), absl::StatusCode::kInvalidArgument);
  Request bad = r;
  bad.session_id = "a/b";
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  // Sessions off.
  auto plain = MakeEngine(1);
  EXPECT_EQ(plain->Submit(r, std::make_shared<Collector>()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(plain->GetSession("s").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(SlotsFree(*engine));
  EXPECT_EQ(engine->Stats().sessions.conflicts, 1);
}

// A session exported from one engine and imported into another on the same model continues
// exactly as it would have on the first; a fork continues on its own; another model's engine
// refuses the file, naming both fingerprints.
TEST_F(EngineTest, SessionsMoveBetweenEnginesAndFork) {
  EngineOptions eo;
  eo.sessions.max_bytes = int64_t{1} << 28;
  auto a = MakeEngine(2, eo);
  auto b = MakeEngine(2, eo);
  auto turn = [](Engine& e, const std::string& id, std::vector<TokenId> text) {
    Request r = Greedy(std::move(text), 5);
    r.session_id = id;
    auto sink = std::make_shared<Collector>();
    EXPECT_TRUE(e.Submit(r, sink).ok());
    EXPECT_TRUE(sink->Wait());
    return sink->tokens();
  };
  turn(*a, "x", testing::RandomPrompt(25, 50000, 5));
  auto file = a->ExportSession("x");
  ASSERT_TRUE(file.ok()) << file.status();
  auto imported = b->ImportSession("y", *file);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->tokens, a->GetSession("x")->tokens);
  ASSERT_TRUE(a->ForkSession("x", "x2").ok());
  const std::vector<TokenId> next = testing::RandomPrompt(4, 50000, 6);
  const std::vector<TokenId> on_a = turn(*a, "x", next);
  EXPECT_EQ(turn(*b, "y", next), on_a);
  EXPECT_EQ(a->GetSession("x")->tokens, b->GetSession("y")->tokens);
  // The fork took the state before that turn: it diverges with other text, and its turn with
  // the same text equals the original's.
  EXPECT_EQ(turn(*a, "x2", next), on_a);

  TempDir other_dir;
  RandomCheckpointOptions o;
  o.config = (*checkpoint_)->config();
  o.seed = 99;
  auto other_ck = Checkpoint::Open(testing::WriteModel(other_dir, "other", o));
  ASSERT_TRUE(other_ck.ok());
  EXPECT_NE((*other_ck)->fingerprint(), (*checkpoint_)->fingerprint());
  BackendOptions bo;
  bo.num_slots = 1;
  auto other = Engine::Create(*cpu::CpuBackend::Create(*other_ck, bo), *tokenizer_, eo);
  ASSERT_TRUE(other.ok());
  auto refused = (*other)->ImportSession("z", *file);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find((*checkpoint_)->fingerprint()), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find((*other_ck)->fingerprint()), std::string::npos);
}

// Admission control sees a request's slots before its first token reaches the client (who may
// then send the next request): the sink, called on the scheduler thread, reads the stats.
TEST_F(EngineTest, SlotsAreCountedBeforeTheFirstTokenIsEmitted) {
  auto engine = MakeEngine(2);
  struct Probe : RequestSink {
    Engine* engine = nullptr;
    std::atomic<int64_t> slots_at_first_token{-1};
    std::atomic<bool> finished{false};
    void OnToken(const TokenEvent&) override {
      int64_t unset = -1;
      slots_at_first_token.compare_exchange_strong(unset, engine->Stats().slots_used);
    }
    void OnFinish(const FinishEvent&) override { finished = true; }
  };
  auto probe = std::make_shared<Probe>();
  probe->engine = engine.get();
  ASSERT_TRUE(engine->Submit(Greedy({1, 2, 3}, 3), probe).ok());
  EXPECT_TRUE(engine->WaitIdle(30s));
  EXPECT_TRUE(probe->finished);
  EXPECT_EQ(probe->slots_at_first_token, 1);
}

}  // namespace
}  // namespace mamba::engine
