// LoRA adapters in the serving engine (issue 15): each request's chunks run under its own
// adapter, the state cache and sessions keyed by adapter, hot load and unload under load, and on
// the CPU engine a batch mixing adapters and the base model giving each request bitwise alone.
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/lora/adapter_registry.h"
#include "engine/request_validation.h"
#include "engine/serving/batch_loop.h"
#include "gtest/gtest.h"
#include "tests/engine/fake_backend.h"
#include "tests/engine/lora/lora_test_support.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using namespace std::chrono_literals;
using testing::AdapterSpec;
using testing::FakeBackend;
using testing::kSpecs;
using testing::TempDir;
using Adapter = std::shared_ptr<const ServedAdapter>;

// Records every event of a request; Wait blocks (bounded) until every completion finished. With
// a gate, the first token blocks the engine's thread until Open (a test's fixed point).
class Collector : public RequestSink {
 public:
  explicit Collector(int n = 1) : n_(n), tokens_(n), logprobs_(n) {}
  void OnToken(const TokenEvent& e) override {
    std::unique_lock<std::mutex> l(mu_);
    tokens_[static_cast<size_t>(e.index)].push_back(e.token.id);
    logprobs_[static_cast<size_t>(e.index)].push_back(e.token.logprob);
    cv_.notify_all();
    if (gated_) cv_.wait(l, [&] { return open_; });
  }
  void OnFinish(const FinishEvent& e) override {
    std::lock_guard<std::mutex> l(mu_);
    finishes_[e.index] = e;
    cv_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, 60s, [&] { return static_cast<int>(finishes_.size()) == n_; });
  }
  void Gate() { gated_ = true; }
  bool WaitFirstToken() {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, 60s, [&] { return !tokens_[0].empty(); });
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    cv_.notify_all();
  }
  std::vector<std::vector<TokenId>> tokens() {
    std::lock_guard<std::mutex> l(mu_);
    return tokens_;
  }
  std::vector<std::vector<float>> logprobs() {
    std::lock_guard<std::mutex> l(mu_);
    return logprobs_;
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
  std::map<int, FinishEvent> finishes_;
  bool gated_ = false, open_ = false;
};

Request Greedy(std::vector<TokenId> prompt, int max_new, Adapter adapter) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_new_tokens = max_new;
  r.params.ignore_eos = true;
  r.adapter = std::move(adapter);
  return r;
}

// Submits and waits; null (with a failure) when refused.
std::shared_ptr<Collector> RunAndWait(Engine& e, Request r) {
  auto sink = std::make_shared<Collector>(r.n);
  auto id = e.Submit(std::move(r), sink);
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return nullptr;
  EXPECT_TRUE(sink->Wait());
  return sink;
}

class LoraEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    written_ = new absl::Status(testing::WriteSpecAdapters(testing::SmallConfig(), dir_->path()));
    RandomCheckpointOptions mo;
    mo.config = testing::SmallConfig();
    mo.perturb_constants = true;
    mo.seed = 3;
    auto ck = Checkpoint::Open(testing::WriteModel(*dir_, "model", mo));
    written_->Update(ck.status());
    if (ck.ok()) checkpoint_ = new std::shared_ptr<const Checkpoint>(*ck);
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    checkpoint_ = nullptr;
    delete written_;
    delete dir_;
  }
  void SetUp() override { ASSERT_TRUE(written_->ok()) << *written_; }

  static std::filesystem::path Path(std::string_view name) { return dir_->path() / name; }

  struct Fake {
    FakeBackend* backend;  // owned by the engine
    std::unique_ptr<Engine> engine;
  };
  static Fake MakeFake(int slots, EngineOptions eo = {}) {
    auto b = std::make_unique<FakeBackend>(testing::SmallConfig(), slots);
    FakeBackend* raw = b.get();
    auto e = Engine::Create(std::move(b), nullptr, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    return {raw, std::move(*e)};
  }
  static std::unique_ptr<Engine> MakeCpu(int slots, EngineOptions eo = {}) {
    BackendOptions bo;
    bo.num_slots = slots;
    auto b = cpu::CpuBackend::Create(*checkpoint_, bo);
    EXPECT_TRUE(b.ok()) << b.status();
    auto e = Engine::Create(std::move(*b), nullptr, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  // Loads every adapter of kSpecs into `e` under its name.
  static std::map<std::string, Adapter> LoadAll(Engine& e) {
    std::map<std::string, Adapter> out;
    for (const AdapterSpec& s : kSpecs) {
      auto a = e.adapters()->Load(s.name, Path(s.name));
      EXPECT_TRUE(a.ok()) << a.status();
      if (a.ok()) out[s.name] = *a;
    }
    return out;
  }

  static TempDir* dir_;
  static absl::Status* written_;
  static std::shared_ptr<const Checkpoint>* checkpoint_;
};
TempDir* LoraEngineTest::dir_ = nullptr;
absl::Status* LoraEngineTest::written_ = nullptr;
std::shared_ptr<const Checkpoint>* LoraEngineTest::checkpoint_ = nullptr;

// ---- The engine over the fake backend ----

// Requests on four adapters and the base model, some sharing prompts, greedy and sampled, n = 2
// on one, batched together: each equals the request run alone, every chunk of it (prompt chunks
// and decode tokens, both completions) ran under its own adapter, and the adapters change the
// output (the fake salts each token's step with the adapter).
std::vector<Request> MixedRequests(const std::map<std::string, Adapter>& ad, int64_t vocab) {
  const std::vector<Adapter> which = {nullptr, ad.at("a"), ad.at("b"), ad.at("c"), ad.at("d")};
  std::vector<std::vector<TokenId>> prompts;
  for (int64_t len : {3, 17, 40, 64, 9}) {
    prompts.push_back(testing::RandomPrompt(len, vocab, 10 + static_cast<uint64_t>(len)));
  }
  // Prompt i / 4 under adapter i % 5: requests 0-3 share a prompt on the base model and a, b, c;
  // 4 and 5 one on d and the base model.
  std::vector<Request> reqs;
  for (int i = 0; i < 16; ++i) {
    Request r =
        Greedy(prompts[static_cast<size_t>(i / 4)], 4 + i % 9, which[static_cast<size_t>(i % 5)]);
    if (i % 3 == 0) {
      r.params.temperature = 0.9f;
      r.params.seed = 100 + i;
    }
    if (i == 9) r.n = 2;
    reqs.push_back(std::move(r));
  }
  // Repeats on the same adapter (state-cache hits when it is on), with other lengths.
  for (int i : {9, 13, 2, 6}) {
    Request r = reqs[static_cast<size_t>(i)];
    r.params.max_new_tokens += 3;
    reqs.push_back(std::move(r));
  }
  return reqs;
}

// MixedRequests' prompts shared across adapters give other log-probs under each.
void ExpectAdaptersChangeTheOutput(const std::vector<std::shared_ptr<Collector>>& sinks) {
  for (size_t i : {1, 2, 3}) {
    EXPECT_NE(sinks[i]->logprobs()[0], sinks[0]->logprobs()[0]) << "request " << i;
  }
  EXPECT_NE(sinks[4]->logprobs()[0], sinks[5]->logprobs()[0]);
}

// The request run alone on `alone` (which serves the same adapters by name).
Request OnEngine(const Request& r, Engine& alone) {
  Request copy = r;
  if (r.adapter) copy.adapter = alone.adapters()->Find(r.adapter->name);
  EXPECT_TRUE(!r.adapter || copy.adapter);
  return copy;
}

TEST_F(LoraEngineTest, EveryChunkRunsUnderItsRequestsAdapter) {
  EngineOptions eo;
  eo.max_step_tokens = 24;
  Fake mixed = MakeFake(8, eo);
  Fake alone = MakeFake(2, eo);
  const auto ad = LoadAll(*mixed.engine);
  LoadAll(*alone.engine);
  const std::vector<Request> reqs = MixedRequests(ad, testing::SmallConfig().vocab_size);
  std::vector<std::shared_ptr<Collector>> sinks;
  for (const Request& r : reqs) {
    sinks.push_back(std::make_shared<Collector>(r.n));
    ASSERT_TRUE(mixed.engine->Submit(r, sinks.back()).ok());
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(sinks[i]->Wait()) << i;
    SCOPED_TRACE(absl::StrCat("request ", i));
    const size_t before = alone.backend->calls().size();
    auto solo = RunAndWait(*alone.engine, OnEngine(reqs[i], *alone.engine));
    ASSERT_TRUE(solo);
    ASSERT_TRUE(alone.engine->WaitIdle(30s));
    EXPECT_EQ(sinks[i]->tokens(), solo->tokens());
    EXPECT_EQ(sinks[i]->logprobs(), solo->logprobs());
    const AdapterWeights* want =
        reqs[i].adapter ? alone.engine->adapters()->Find(reqs[i].adapter->name)->weights.get()
                        : nullptr;
    int64_t chunks = 0;
    for (size_t c = before; c < alone.backend->calls().size(); ++c) {
      for (const auto& ch : alone.backend->calls()[c].chunks) {
        EXPECT_EQ(ch.adapter, want);
        ++chunks;
      }
    }
    EXPECT_GT(chunks, reqs[i].params.max_new_tokens - 1);
    for (int k = 0; k < reqs[i].n; ++k) {
      EXPECT_EQ(sinks[i]->finish(k).adapter, reqs[i].adapter ? reqs[i].adapter->name : "");
    }
  }
  ExpectAdaptersChangeTheOutput(sinks);
  const EngineStats st = mixed.engine->Stats();
  EXPECT_EQ(st.lora_loaded, 4);
  EXPECT_EQ(st.lora_resident, 4);
}

// The same prompt under the base model, adapter a and adapter b: no entry of one serves another;
// a repeat under the same one is a whole-prompt hit; every output equals the cache-off run. A
// next turn resumes from its own adapter's end-of-completion state only.
TEST_F(LoraEngineTest, StateCacheIsKeyedByAdapter) {
  EngineOptions eo;
  eo.state_cache_bytes = int64_t{1} << 24;
  Fake cached = MakeFake(2, eo);
  Fake cold = MakeFake(2);
  const auto ad = LoadAll(*cached.engine);
  LoadAll(*cold.engine);
  const std::vector<TokenId> p = testing::RandomPrompt(40, 96, 5);
  const std::vector<Adapter> order = {nullptr,    ad.at("a"), ad.at("b"),
                                      ad.at("a"), nullptr,    ad.at("b")};
  std::map<const ServedAdapter*, std::vector<TokenId>> first_out;
  for (size_t i = 0; i < order.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("request ", i));
    Request r = Greedy(p, 6, order[i]);
    auto got = RunAndWait(*cached.engine, r);
    auto want = RunAndWait(*cold.engine, OnEngine(r, *cold.engine));
    ASSERT_TRUE(got && want);
    EXPECT_EQ(got->tokens(), want->tokens());
    EXPECT_EQ(got->logprobs(), want->logprobs());
    EXPECT_EQ(got->finish().usage.cached_tokens, i < 3 ? 0 : 40);
    first_out.emplace(order[i].get(), got->tokens()[0]);
  }
  EngineStats st = cached.engine->Stats();
  EXPECT_EQ(st.cache_lookups, 6);
  EXPECT_EQ(st.cache_misses, 3);
  EXPECT_EQ(st.cache_hits, 3);
  EXPECT_EQ(st.cache_partial_hits, 0);
  // Next turns after a's completion: under a, everything but its last token is restored; under
  // the base model only the prompt is (its own entry), never a's longer one.
  const std::vector<TokenId>& out_a = first_out.at(ad.at("a").get());
  std::vector<TokenId> next = p;
  next.insert(next.end(), out_a.begin(), out_a.end());
  for (TokenId t : testing::RandomPrompt(5, 96, 6)) next.push_back(t);
  for (const Adapter& a : {ad.at("a"), Adapter(), ad.at("c")}) {
    Request r = Greedy(next, 4, a);
    auto got = RunAndWait(*cached.engine, r);
    auto want = RunAndWait(*cold.engine, OnEngine(r, *cold.engine));
    ASSERT_TRUE(got && want);
    EXPECT_EQ(got->tokens(), want->tokens());
    EXPECT_EQ(got->logprobs(), want->logprobs());
    const int64_t expect = a == ad.at("a") ? 40 + 6 - 1 : a ? 0 : 40;
    EXPECT_EQ(got->finish().usage.cached_tokens, expect) << (a ? a->name : "base");
  }
}

std::unique_ptr<LiveRequest> Live(uint64_t id, std::vector<TokenId> prompt, int max_new,
                                  Adapter adapter, std::shared_ptr<RequestSink> sink) {
  auto live = std::make_unique<LiveRequest>();
  live->view.id = RequestId(id);
  live->req = Greedy(std::move(prompt), max_new, std::move(adapter));
  live->sink = std::move(sink);
  live->submitted = Clock::now();
  return live;
}

// Siblings sharing a long prefix arrive together: under one adapter the second waits for the
// first's snapshot at the branch point and restores it; under different adapters neither can
// use the other's state, so none waits and no branch snapshot is taken.
TEST_F(LoraEngineTest, OnlySiblingsUnderTheSameAdapterShareAPrefix) {
  FakeBackend fake(testing::SmallConfig(), 4);
  AdapterRegistry reg(fake, {});
  const Adapter a = *reg.Load("a", Path("a"));
  const Adapter b = *reg.Load("b", Path("b"));
  for (bool same : {false, true}) {
    SCOPED_TRACE(same ? "same adapter" : "different adapters");
    StateStore store(StateStoreOptions{.capacity_bytes = 1 << 20});
    SchedulerOptions so;
    so.max_step_tokens = 16;
    BatchLoop loop(fake, nullptr, so, nullptr, StateCache{&store, StateKey{7, 0}});
    const std::vector<TokenId> shared = testing::RandomPrompt(40, 96, same ? 8 : 9);
    std::vector<std::shared_ptr<Collector>> sinks;
    for (uint64_t i = 0; i < 2; ++i) {
      std::vector<TokenId> p = shared;
      for (TokenId t : testing::RandomPrompt(10, 96, 20 + i)) p.push_back(t);
      sinks.push_back(std::make_shared<Collector>());
      loop.Enqueue(Live(i + 1, p, 3, i == 0 || same ? a : b, sinks.back()));
    }
    while (!loop.Idle()) loop.Step();
    EXPECT_EQ(sinks[0]->finish().usage.cached_tokens, 0);
    EXPECT_EQ(sinks[1]->finish().usage.cached_tokens, same ? 40 : 0);
    // Prompt ends and ends of completion; plus the branch point when shared.
    EXPECT_EQ(store.stats().entries, same ? 5 : 4);
    EXPECT_EQ(store.Contains(StateKey{7, a->key}, shared), same);
    EXPECT_FALSE(store.Contains(StateKey{7, b->key}, shared));
    EXPECT_FALSE(store.Contains(StateKey{7, 0}, shared));
  }
}

// A session remembers the adapter it began under: a turn under another adapter or the base model
// is refused (field "model", both sides named), it survives fork and export / import (into an
// engine serving the same adapter under another name), and its turns there continue exactly.
TEST_F(LoraEngineTest, SessionsStayUnderTheirAdapter) {
  EngineOptions eo;
  eo.sessions.max_bytes = int64_t{1} << 24;
  Fake one = MakeFake(2, eo);
  Fake two = MakeFake(2, eo);
  const auto ad = LoadAll(*one.engine);
  auto copy = two.engine->adapters()->Load("a-copy", Path("a"));
  ASSERT_TRUE(copy.ok()) << copy.status();
  ASSERT_TRUE(two.engine->adapters()->Load("b", Path("b")).ok());
  auto turn = [](Engine& e, const std::string& id, std::vector<TokenId> text, Adapter a) {
    Request r = Greedy(std::move(text), 4, std::move(a));
    r.session_id = id;
    auto sink = std::make_shared<Collector>();
    auto submitted = e.Submit(std::move(r), sink);
    if (!submitted.ok()) return absl::StatusOr<std::vector<TokenId>>(submitted.status());
    EXPECT_TRUE(sink->Wait());
    return absl::StatusOr<std::vector<TokenId>>(sink->tokens()[0]);
  };
  const std::string fp_a = ad.at("a")->host->fingerprint();
  const std::string fp_b = ad.at("b")->host->fingerprint();
  ASSERT_TRUE(turn(*one.engine, "s", testing::RandomPrompt(20, 96, 1), ad.at("a")).ok());
  EXPECT_EQ(one.engine->GetSession("s")->adapter, fp_a);
  auto other = turn(*one.engine, "s", {5, 6}, ad.at("b"));
  ASSERT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument) << other.status();
  EXPECT_EQ(FieldOf(other.status()).value_or(""), "model");
  for (const std::string& part : {std::string("'s'"), fp_a, std::string("'b'"), fp_b}) {
    EXPECT_NE(other.status().message().find(part), std::string::npos) << other.status();
  }
  auto base = turn(*one.engine, "s", {5, 6}, nullptr);
  ASSERT_EQ(base.status().code(), absl::StatusCode::kInvalidArgument) << base.status();
  EXPECT_NE(base.status().message().find("the base model"), std::string::npos) << base.status();
  EXPECT_EQ(one.engine->GetSession("s")->tokens, 24);
  EXPECT_FALSE(one.engine->GetSession("s")->in_use);
  // A session begun on the base model refuses an adapter.
  ASSERT_TRUE(turn(*one.engine, "p", {1, 2, 3}, nullptr).ok());
  EXPECT_EQ(one.engine->GetSession("p")->adapter, "");
  auto onto = turn(*one.engine, "p", {4}, ad.at("c"));
  ASSERT_EQ(onto.status().code(), absl::StatusCode::kInvalidArgument) << onto.status();
  EXPECT_NE(onto.status().message().find("created under the base model"), std::string::npos)
      << onto.status();
  // Fork and export keep the adapter.
  auto fork = one.engine->ForkSession("s", "s2");
  ASSERT_TRUE(fork.ok()) << fork.status();
  EXPECT_EQ(fork->adapter, fp_a);
  EXPECT_EQ(turn(*one.engine, "s2", {7}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto file = one.engine->ExportSession("s");
  ASSERT_TRUE(file.ok()) << file.status();
  auto imported = two.engine->ImportSession("t", *file);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->adapter, fp_a);
  EXPECT_EQ(turn(*two.engine, "t", {7}, two.engine->adapters()->Find("b")).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<TokenId> next = testing::RandomPrompt(6, 96, 2);
  auto on_one = turn(*one.engine, "s", next, ad.at("a"));
  auto on_fork = turn(*one.engine, "s2", next, ad.at("a"));
  auto on_two = turn(*two.engine, "t", next, *copy);
  ASSERT_TRUE(on_one.ok() && on_fork.ok() && on_two.ok());
  EXPECT_EQ(*on_fork, *on_one);
  EXPECT_EQ(*on_two, *on_one);
  EXPECT_EQ(two.engine->GetSession("t")->tokens, one.engine->GetSession("s")->tokens);
}

// Unloading an adapter while a request runs on it: it is found no more at once, stays resident
// while the request runs, the request finishes exactly as it would have, and then it is gone.
void UnloadWhileRunning(Engine& engine, Engine& reference, const std::filesystem::path& dir) {
  ASSERT_TRUE(engine.adapters()->Load("a", dir).ok());
  ASSERT_TRUE(reference.adapters()->Load("a", dir).ok());
  const std::vector<TokenId> prompt = testing::RandomPrompt(12, 96, 4);
  auto want = RunAndWait(reference, Greedy(prompt, 40, reference.adapters()->Find("a")));
  ASSERT_TRUE(want);
  auto sink = std::make_shared<Collector>();
  sink->Gate();
  ASSERT_TRUE(engine.Submit(Greedy(prompt, 40, engine.adapters()->Find("a")), sink).ok());
  ASSERT_TRUE(sink->WaitFirstToken());  // the engine's thread waits in the sink
  EXPECT_TRUE(engine.adapters()->Unload("a").ok());
  EXPECT_EQ(engine.adapters()->Find("a"), nullptr);
  EngineStats st = engine.Stats();
  EXPECT_EQ(st.lora_loaded, 0);
  EXPECT_EQ(st.lora_resident, 1);
  sink->Open();
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->finish().reason, Finish::kLength);
  EXPECT_EQ(sink->tokens(), want->tokens());
  EXPECT_EQ(sink->logprobs(), want->logprobs());
  EXPECT_EQ(sink->finish().adapter, "a");
  ASSERT_TRUE(engine.WaitIdle(30s));
  EXPECT_EQ(engine.Stats().lora_resident, 0);
}

TEST_F(LoraEngineTest, UnloadWhileARequestRunsLetsItFinish) {
  Fake engine = MakeFake(2);
  Fake reference = MakeFake(1);
  UnloadWhileRunning(*engine.engine, *reference.engine, Path("a"));
}

// Hot load and unload under load: submitters pick adapters by name while another thread loads
// and unloads them (all but `a`, which stays); whatever each request found (an adapter or, when
// its name was not loaded, the base model) it runs under to the end, exactly; none is lost;
// nothing stays resident. The submitters keep pace with the loader's rounds (no timing).
TEST_F(LoraEngineTest, HotLoadAndUnloadUnderLoadLosesNothing) {
  EngineOptions eo;
  eo.max_step_tokens = 16;
  eo.max_queue = 512;
  eo.state_cache_bytes = int64_t{1} << 20;
  eo.lora.max_loras = 64;  // more than the loader's rounds: every load fits
  Fake served = MakeFake(4, eo);
  Fake reference = MakeFake(1);
  LoadAll(*reference.engine);
  AdapterRegistry& reg = *served.engine->adapters();
  ASSERT_TRUE(reg.Load("a", Path("a")).ok());
  const char* names[] = {"a", "b", "c", "d"};
  std::vector<std::vector<TokenId>> prompts;
  for (uint64_t i = 0; i < 4; ++i) prompts.push_back(testing::RandomPrompt(10 + 7 * i, 96, 50 + i));
  constexpr int kRequests = 40;
  std::atomic<int> rounds{0};
  std::thread loader([&] {
    std::mt19937 rng(1);
    for (int round = 0; round < kRequests; ++round) {
      const char* name = names[1 + rng() % 3];
      if (reg.Find(name)) {
        EXPECT_TRUE(reg.Unload(name).ok());
      } else {
        auto s = reg.Load(name, Path(name));
        EXPECT_TRUE(s.ok()) << s.status();
      }
      rounds = round + 1;
    }
  });
  struct Sent {
    Request request;  // without its adapter (only the engine holds that)
    std::string adapter;
    std::shared_ptr<Collector> sink;
  };
  std::vector<std::vector<Sent>> sent(3);
  std::vector<std::thread> submitters;
  for (size_t t = 0; t < sent.size(); ++t) {
    submitters.emplace_back([&, t] {
      std::mt19937 rng(10 + static_cast<unsigned>(t));
      for (int i = 0; i < kRequests; ++i) {
        while (rounds.load() < i) std::this_thread::yield();
        Request r = Greedy(prompts[rng() % prompts.size()], 3 + static_cast<int>(rng() % 6),
                           reg.Find(names[i % 4 == 0 ? 0 : rng() % 4]));
        auto sink = std::make_shared<Collector>();
        const std::string adapter = r.adapter ? r.adapter->name : "";
        Request copy = r;
        copy.adapter.reset();
        EXPECT_TRUE(served.engine->Submit(std::move(r), sink).ok());
        sent[t].push_back({std::move(copy), adapter, sink});
      }
    });
  }
  for (std::thread& s : submitters) s.join();
  loader.join();
  int64_t under_adapters = 0;
  for (const auto& batch : sent) {
    for (const Sent& x : batch) {
      ASSERT_TRUE(x.sink->Wait());
      EXPECT_EQ(x.sink->finish().reason, Finish::kLength);
      EXPECT_EQ(x.sink->finish().adapter, x.adapter);
      Request r = x.request;
      if (!x.adapter.empty()) r.adapter = reference.engine->adapters()->Find(x.adapter);
      auto want = RunAndWait(*reference.engine, r);
      ASSERT_TRUE(want);
      EXPECT_EQ(x.sink->tokens(), want->tokens());
      EXPECT_EQ(x.sink->logprobs(), want->logprobs());
      if (!x.adapter.empty()) ++under_adapters;
    }
  }
  EXPECT_GT(under_adapters, kRequests / 4);
  ASSERT_TRUE(served.engine->WaitIdle(30s));
  const EngineStats st = served.engine->Stats();
  EXPECT_EQ(st.lora_resident, st.lora_loaded);
}

// ---- The CPU engine ----

// Requests on four adapters (different targets, ranks, scalings, fp32/bf16/fp16 files) and the
// base model, some sharing prompts, greedy and sampled, n = 2 on one, batched with chunked
// prefill beside decodes: each gets bitwise the tokens and log-probs it gets alone, with the
// state cache off and on.
TEST_F(LoraEngineTest, CpuBatchMixingAdaptersEqualsEachRequestAlone) {
  auto alone = MakeCpu(2);
  const auto ad_alone = LoadAll(*alone);
  for (int64_t cache : {int64_t{0}, int64_t{1} << 26}) {
    SCOPED_TRACE(absl::StrCat("state cache ", cache));
    EngineOptions eo;
    eo.max_step_tokens = 32;
    eo.state_cache_bytes = cache;
    auto mixed = MakeCpu(8, eo);
    const auto ad = LoadAll(*mixed);
    const std::vector<Request> reqs = MixedRequests(ad, testing::SmallConfig().vocab_size);
    std::vector<std::shared_ptr<Collector>> sinks;
    for (const Request& r : reqs) {
      sinks.push_back(std::make_shared<Collector>(r.n));
      ASSERT_TRUE(mixed->Submit(r, sinks.back()).ok());
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
      ASSERT_TRUE(sinks[i]->Wait()) << i;
      auto solo = RunAndWait(*alone, OnEngine(reqs[i], *alone));
      ASSERT_TRUE(solo);
      EXPECT_EQ(sinks[i]->tokens(), solo->tokens()) << "request " << i;
      EXPECT_EQ(sinks[i]->logprobs(), solo->logprobs()) << "request " << i;
    }
    ExpectAdaptersChangeTheOutput(sinks);
    if (cache > 0) {
      const EngineStats st = mixed->Stats();
      EXPECT_GT(st.cache_hits + st.cache_partial_hits, 0);
    }
  }
}

TEST_F(LoraEngineTest, CpuUnloadWhileARequestRunsLetsItFinish) {
  auto engine = MakeCpu(2);
  auto reference = MakeCpu(1);
  UnloadWhileRunning(*engine, *reference, Path("d"));
}

}  // namespace
}  // namespace mamba::engine
