// Prompt log-probs (Request::prompt_logprobs) on the CPU engine: every prompt position against
// the float64 reference model, chunked = unchunked bitwise, never served from the state cache,
// scoring without generating (max_new_tokens 0), and a document scored turn by turn through a
// session equals the whole document scored at once.
#include <bit>
#include <cmath>
#include <condition_variable>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/request_validation.h"
#include "gtest/gtest.h"
#include "tests/engine/reference_model.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using namespace std::chrono_literals;
using testing::TempDir;

// Keeps the prompt event, the tokens and the finish of a one-completion request.
class Recorder : public RequestSink {
 public:
  void OnPrompt(const PromptEvent& e) override {
    std::lock_guard<std::mutex> l(mu_);
    ++prompts_;
    prompt_ = e;
    EXPECT_TRUE(tokens_.empty()) << "OnPrompt after a token";
  }
  void OnToken(const TokenEvent& e) override {
    std::lock_guard<std::mutex> l(mu_);
    tokens_.push_back(e.token);
  }
  void OnFinish(const FinishEvent& e) override {
    std::lock_guard<std::mutex> l(mu_);
    finish_ = e;
    done_ = true;
    cv_.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, 60s, [&] { return done_; });
  }
  PromptEvent prompt() {
    std::lock_guard<std::mutex> l(mu_);
    return prompt_;
  }
  int prompts() {
    std::lock_guard<std::mutex> l(mu_);
    return prompts_;
  }
  std::vector<SampledToken> tokens() {
    std::lock_guard<std::mutex> l(mu_);
    return tokens_;
  }
  FinishEvent finish() {
    std::lock_guard<std::mutex> l(mu_);
    return finish_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  PromptEvent prompt_;
  int prompts_ = 0;
  std::vector<SampledToken> tokens_;
  FinishEvent finish_;
  bool done_ = false;
};

class PromptLogprobsTest : public ::testing::Test {
 protected:
  static constexpr int64_t kVocab = 300;
  void SetUp() override {
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    o.config.vocab_size = kVocab;
    o.perturb_constants = true;
    auto ck = Checkpoint::Open(testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = *ck;
  }
  std::unique_ptr<Engine> MakeEngine(EngineOptions eo, int slots = 4) {
    BackendOptions bo;
    bo.num_slots = slots;
    auto b = cpu::CpuBackend::Create(checkpoint_, bo);
    EXPECT_TRUE(b.ok()) << b.status();
    auto e = Engine::Create(std::move(*b), nullptr, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }
  static Request Scoring(std::vector<TokenId> prompt, int k, int max_new = 0) {
    Request r;
    r.prompt = std::move(prompt);
    r.prompt_logprobs = k;
    r.params.temperature = 0;
    r.params.logprobs = true;
    r.params.max_new_tokens = max_new;
    r.params.ignore_eos = true;
    return r;
  }
  static std::shared_ptr<Recorder> Run(Engine& e, const Request& r) {
    auto sink = std::make_shared<Recorder>();
    auto id = e.Submit(r, sink);
    EXPECT_TRUE(id.ok()) << id.status();
    if (id.ok()) {
      EXPECT_TRUE(sink->Wait());
    }
    return sink;
  }

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
};

// log_softmax(want)[id] in float64.
double RefLogProb(const std::vector<double>& logits, TokenId id) {
  double m = -INFINITY, sum = 0;
  for (double x : logits) m = std::max(m, x);
  for (double x : logits) sum += std::exp(x - m);
  return logits[static_cast<size_t>(id)] - m - std::log(sum);
}

// Each prompt token's log-prob (and its top alternatives) equals the float64 reference model's
// log_softmax after the tokens before it; the generated tokens follow as usual.
TEST_F(PromptLogprobsTest, EveryPositionMatchesTheFloat64Reference) {
  EngineOptions eo;
  eo.max_step_tokens = 16;  // several chunks
  auto engine = MakeEngine(eo);
  const std::vector<TokenId> prompt = testing::RandomPrompt(57, kVocab, 5);
  auto sink = Run(*engine, Scoring(prompt, 3, 4));
  const PromptEvent p = sink->prompt();
  EXPECT_EQ(sink->prompts(), 1);
  EXPECT_EQ(p.first, 1);
  ASSERT_EQ(p.tokens.size(), prompt.size() - 1);
  testing::ReferenceModel ref(*checkpoint_);
  // Log-probs differ from logits by a log-sum-exp of them: the reference tolerance of fp32
  // logits (tests/engine/backend_suite.cc), twice over.
  const double atol = 4e-4, rtol = 2e-3;
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    const std::vector<double> want = ref.Forward({&prompt[i], 1});
    const SampledToken& got = p.tokens[i];
    EXPECT_EQ(got.id, prompt[i + 1]);
    const double w = RefLogProb(want, prompt[i + 1]);
    EXPECT_NEAR(got.logprob, w, atol + rtol * std::abs(w)) << "position " << i + 1;
    // Its rank, top-3 or not: 1 + the entries with a larger logit, counted by brute force on the
    // reference's (an entry within the fp32 tolerance of the token's may count either way).
    const double own = want[static_cast<size_t>(prompt[i + 1])];
    const double tol = atol + rtol * std::abs(own);
    int32_t surely = 0, maybe = 0;
    for (double x : want) {
      surely += x > own + tol ? 1 : 0;
      maybe += x > own - tol ? 1 : 0;
    }
    EXPECT_GE(got.rank, 1 + surely) << "position " << i + 1;
    EXPECT_LE(got.rank, 1 + maybe) << "position " << i + 1;
    ASSERT_EQ(got.top.size(), 3u);
    for (const TokenLogprob& t : got.top) {
      const double wt = RefLogProb(want, t.id);
      EXPECT_NEAR(t.logprob, wt, atol + rtol * std::abs(wt)) << "position " << i + 1;
    }
    EXPECT_GE(got.top[0].logprob, got.top[1].logprob);
  }
  const FinishEvent f = sink->finish();
  EXPECT_EQ(f.reason, Finish::kLength);
  EXPECT_EQ(f.usage.completion_tokens, 4);
  EXPECT_EQ(sink->tokens().size(), 4u);
}

// The same prompt scored in one chunk and in chunks of 1, 7 and 16 tokens: bitwise equal.
TEST_F(PromptLogprobsTest, ChunkedEqualsUnchunkedBitwise) {
  const std::vector<TokenId> prompt = testing::RandomPrompt(80, kVocab, 6);
  std::vector<PromptEvent> got;
  for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{16}}) {
    EngineOptions eo;
    eo.prefill_chunk = chunk;
    auto engine = MakeEngine(eo);
    got.push_back(Run(*engine, Scoring(prompt, 2))->prompt());
  }
  for (size_t k = 1; k < got.size(); ++k) {
    ASSERT_EQ(got[k].tokens.size(), got[0].tokens.size());
    for (size_t i = 0; i < got[0].tokens.size(); ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>(got[k].tokens[i].logprob),
                std::bit_cast<uint32_t>(got[0].tokens[i].logprob))
          << "chunking " << k << " position " << i + 1;
      EXPECT_EQ(got[k].tokens[i].top.size(), 2u);
    }
  }
}

// Scoring only: max_new_tokens 0 finishes with length and no token; refused without prompt
// log-probs; a prompt of one token has no log-probs at all.
TEST_F(PromptLogprobsTest, ScoringWithoutGenerating) {
  auto engine = MakeEngine({});
  auto sink = Run(*engine, Scoring(testing::RandomPrompt(12, kVocab, 7), 0));
  EXPECT_EQ(sink->prompt().tokens.size(), 11u);
  EXPECT_TRUE(sink->prompt().tokens[0].top.empty());
  EXPECT_TRUE(sink->tokens().empty());
  EXPECT_EQ(sink->finish().reason, Finish::kLength);
  EXPECT_EQ(sink->finish().usage.completion_tokens, 0);
  EXPECT_EQ(sink->finish().usage.prompt_tokens, 12);

  EXPECT_EQ(Run(*engine, Scoring({42}, 1))->prompt().tokens.size(), 0u);

  Request r = Scoring({1, 2, 3}, -1);
  auto refused = engine->Submit(r, std::make_shared<Recorder>());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("prompt log-probs"), std::string::npos);
  EXPECT_EQ(FieldOf(refused.status()), "max_new_tokens");
  r.prompt_logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ(engine->Submit(r, std::make_shared<Recorder>()).status().code(),
            absl::StatusCode::kInvalidArgument);
  // n > 1 while scoring: each completion finishes, the prompt is reported once.
  Request n3 = Scoring(testing::RandomPrompt(5, kVocab, 8), 0);
  n3.n = 3;
  auto sink3 = std::make_shared<Recorder>();
  ASSERT_TRUE(engine->Submit(n3, sink3).ok());
  ASSERT_TRUE(sink3->Wait());
  ASSERT_TRUE(engine->WaitIdle(30s));
  EXPECT_EQ(sink3->prompts(), 1);
}

// With the state cache on, a prompt seen before is computed again when its log-probs are asked
// (cached_tokens 0) and gives bitwise the same values; the snapshots it leaves serve others.
TEST_F(PromptLogprobsTest, NeverServedFromTheStateCache) {
  EngineOptions eo;
  eo.state_cache_bytes = int64_t{1} << 26;
  auto engine = MakeEngine(eo);
  const std::vector<TokenId> prompt = testing::RandomPrompt(40, kVocab, 9);
  Request plain = Scoring(prompt, -1, 3);
  Run(*engine, plain);
  auto a = Run(*engine, Scoring(prompt, 1));
  auto b = Run(*engine, Scoring(prompt, 1));
  EXPECT_EQ(a->finish().usage.cached_tokens, 0);
  EXPECT_EQ(b->finish().usage.cached_tokens, 0);
  ASSERT_EQ(a->prompt().tokens.size(), 39u);
  ASSERT_EQ(b->prompt().tokens.size(), 39u);
  for (size_t i = 0; i < 39; ++i) {
    EXPECT_EQ(a->prompt().tokens[i].logprob, b->prompt().tokens[i].logprob);
  }
  EXPECT_GT(Run(*engine, plain)->finish().usage.cached_tokens, 0);
}

// A document scored piece by piece through a session (each turn max_new_tokens 0 with prompt
// log-probs) reports each piece's tokens, the first given the pieces before it, bitwise equal to
// scoring the whole document at once; the session then holds the whole document.
TEST_F(PromptLogprobsTest, SessionScoresADocumentPieceByPiece) {
  for (int64_t cache : {int64_t{0}, int64_t{1} << 26}) {
    EngineOptions eo;
    eo.state_cache_bytes = cache;
    eo.sessions.max_bytes = int64_t{1} << 26;
    eo.max_step_tokens = 16;
    auto engine = MakeEngine(eo);
    const std::vector<TokenId> doc = testing::RandomPrompt(70, kVocab, 10);
    const PromptEvent whole = Run(*engine, Scoring(doc, 2))->prompt();
    ASSERT_EQ(whole.tokens.size(), 69u);
    const std::string id = absl::StrCat("doc-", cache);
    size_t at = 0;
    for (size_t piece : {25u, 1u, 30u, 14u}) {
      Request r = Scoring({doc.begin() + at, doc.begin() + at + piece}, 2);
      r.session_id = id;
      auto sink = Run(*engine, r);
      const PromptEvent p = sink->prompt();
      SCOPED_TRACE(absl::StrCat("cache ", cache, " piece at ", at));
      EXPECT_EQ(sink->finish().reason, Finish::kLength);
      EXPECT_EQ(sink->finish().session_tokens, static_cast<int64_t>(at + piece));
      ASSERT_EQ(p.tokens.size(), at == 0 ? piece - 1 : piece);
      EXPECT_EQ(p.first, at == 0 ? 1 : static_cast<int64_t>(at));
      for (size_t i = 0; i < p.tokens.size(); ++i) {
        const size_t pos = static_cast<size_t>(p.first) + i;
        EXPECT_EQ(p.tokens[i].id, doc[pos]);
        EXPECT_EQ(p.tokens[i].logprob, whole.tokens[pos - 1].logprob) << "position " << pos;
        EXPECT_EQ(p.tokens[i].top.size(), 2u);
      }
      at += piece;
    }
    // A generating turn after scoring ones continues from the whole document.
    Request gen = Scoring({5}, -1, 3);
    gen.session_id = id;
    auto g = Run(*engine, gen);
    EXPECT_EQ(g->finish().session_tokens, 70 + 1 + 3);
    std::vector<TokenId> cont = doc;
    cont.push_back(5);
    auto cold = Run(*engine, Scoring(cont, -1, 3));
    ASSERT_EQ(g->tokens().size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(g->tokens()[i].id, cold->tokens()[i].id);
  }
}

// A session may hold more than max_prompt_tokens (up to max_session_tokens): a document longer
// than any one prompt is scored turn by turn, bitwise equal to an engine that takes it whole;
// the turn that would pass max_session_tokens is refused and changes nothing. Without
// max_session_tokens the prompt limit bounds a session, as before.
TEST_F(PromptLogprobsTest, SessionsHoldMoreThanOnePrompt) {
  EngineOptions big;
  big.max_prompt_tokens = 1000;
  const std::vector<TokenId> doc = testing::RandomPrompt(90, kVocab, 11);
  const PromptEvent whole = Run(*MakeEngine(big), Scoring(doc, 1))->prompt();
  ASSERT_EQ(whole.tokens.size(), 89u);

  EngineOptions eo;
  eo.sessions.max_bytes = int64_t{1} << 26;
  eo.max_step_tokens = 16;
  eo.max_prompt_tokens = 32;
  eo.max_session_tokens = 100;
  auto engine = MakeEngine(eo);
  EXPECT_EQ(engine->max_session_tokens(), 100);
  for (size_t at = 0; at < doc.size(); at += 30) {
    Request r = Scoring({doc.begin() + at, doc.begin() + at + 30}, 1);
    r.session_id = "long";
    auto sink = Run(*engine, r);
    const PromptEvent p = sink->prompt();
    SCOPED_TRACE(absl::StrCat("piece at ", at));
    EXPECT_EQ(sink->finish().usage.prompt_tokens, static_cast<int64_t>(at + 30));
    ASSERT_EQ(p.tokens.size(), at == 0 ? 29u : 30u);
    for (size_t i = 0; i < p.tokens.size(); ++i) {
      const size_t pos = static_cast<size_t>(p.first) + i;
      EXPECT_EQ(p.tokens[i].id, doc[pos]);
      EXPECT_EQ(p.tokens[i].logprob, whole.tokens[pos - 1].logprob) << "position " << pos;
    }
  }
  EXPECT_EQ(engine->GetSession("long")->tokens, 90);
  Request over = Scoring(testing::RandomPrompt(11, kVocab, 12), 1);
  over.session_id = "long";
  auto refused = engine->Submit(over, std::make_shared<Recorder>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("session limit of 100"), std::string::npos)
      << refused.status();
  EXPECT_EQ(engine->GetSession("long")->tokens, 90);
  over.prompt.resize(10);  // exactly at the limit
  EXPECT_EQ(Run(*engine, over)->finish().session_tokens, 100);
  // One turn still obeys max_prompt_tokens.
  Request wide = Scoring(testing::RandomPrompt(33, kVocab, 13), 1);
  wide.session_id = "wide";
  EXPECT_EQ(engine->Submit(wide, std::make_shared<Recorder>()).status().code(),
            absl::StatusCode::kInvalidArgument);

  eo.max_session_tokens = 0;
  auto bounded = MakeEngine(eo);
  EXPECT_EQ(bounded->max_session_tokens(), 32);
  Request a = Scoring({doc.begin(), doc.begin() + 30}, 1);
  a.session_id = "s";
  Run(*bounded, a);
  a.prompt.resize(3);
  EXPECT_EQ(bounded->Submit(a, std::make_shared<Recorder>()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mamba::engine
