// Offline generation (the batching loop on the calling thread) with continuous batching: results
// must not depend on what else runs, on arrival order, on prompt chunking, on the step budget or
// on slot pressure.
#include "engine/generate.h"

#include <algorithm>
#include <random>

#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/engine/reference_model.h"
#include "tests/engine/single_request.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using testing::TempDir;

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    o.config.vocab_size = 256;
    o.perturb_constants = true;
    auto ck = Checkpoint::Open(testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok());
    checkpoint_ = *ck;
  }
  std::unique_ptr<Backend> Make(int slots) {
    BackendOptions bo;
    bo.num_slots = slots;
    auto b = cpu::CpuBackend::Create(checkpoint_, bo);
    EXPECT_TRUE(b.ok());
    return std::move(*b);
  }
  std::vector<GenerationRequest> Requests(int n, float temperature) {
    std::mt19937_64 rng(9);
    std::vector<GenerationRequest> reqs(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      auto& r = reqs[static_cast<size_t>(i)];
      r.prompt.resize(1 + rng() % 40);
      for (auto& t : r.prompt) t = static_cast<TokenId>(1 + rng() % 255);
      r.params.temperature = temperature;
      r.params.seed = 1000 + i;
      r.params.max_new_tokens = 3 + static_cast<int>(rng() % 20);
      r.params.logprobs = true;
      r.params.ignore_eos = true;
      r.arrival_step = static_cast<int64_t>(rng() % 30);
    }
    return reqs;
  }
  static std::vector<TokenId> Ids(const GenerationResult& r) {
    std::vector<TokenId> ids;
    for (const auto& t : r.tokens) ids.push_back(t.id);
    return ids;
  }
  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
};

// Against one request decoded alone (tests/engine/single_request.h: no scheduler, no loop).
TEST_F(GenerateTest, BatchingDoesNotChangeGreedyOrSeededResults) {
  for (float temperature : {0.0f, 0.9f}) {
    auto reqs = Requests(24, temperature);
    std::vector<std::vector<SampledToken>> alone;
    auto solo = Make(1);
    for (const auto& r : reqs) {
      auto out = testing::SingleRequest(*solo, r.prompt, r.params, 0);
      ASSERT_TRUE(out.ok()) << out.status();
      alone.push_back(*out);
    }
    // Our packed GEMM is bitwise independent of the batch and the scan of the chunking, so
    // log-probs are bitwise equal too; the oneDNN fallback only within rounding.
    const bool exact = solo->Describe().find("packed") != std::string::npos;
    for (int slots : {4, 24}) {
      for (int64_t chunk : {int64_t{0}, int64_t{5}}) {
        for (int64_t budget : {int64_t{1} << 40, int64_t{16}}) {
          auto busy = Make(slots);
          GenerateOptions go;
          go.prefill_chunk = chunk;
          go.max_step_tokens = budget;
          auto together = Generate(*busy, reqs, go);
          ASSERT_TRUE(together.ok()) << together.status();
          for (size_t i = 0; i < reqs.size(); ++i) {
            const auto& got = (*together)[i].tokens;
            ASSERT_EQ(got.size(), alone[i].size());
            for (size_t k = 0; k < got.size(); ++k) {
              EXPECT_EQ(got[k].id, alone[i][k].id)
                  << "request " << i << " token " << k << " slots " << slots << " chunk " << chunk
                  << " budget " << budget << " T " << temperature;
              if (exact) {
                EXPECT_EQ(got[k].logprob, alone[i][k].logprob);
              }
            }
          }
        }
      }
    }
  }
}

// FalconMamba through the whole batching loop (continuous batching, chunked prompts, a small
// step budget): each request's greedy tokens are the float64 reference model's, as long as the
// reference's best token leads the runner-up clearly (fp32 against float64).
TEST_F(GenerateTest, FalconMambaGreedyEqualsTheFloat64Reference) {
  RandomCheckpointOptions o;
  o.config = testing::SmallConfig();
  o.config.vocab_size = 256;
  o.config.model_type = ModelType::kFalconMamba;
  o.config.mixer_rms_eps = 1e-5;
  o.untied_head = true;
  o.perturb_constants = true;
  auto ck = Checkpoint::Open(testing::WriteModel(dir_, "falcon", o));
  ASSERT_TRUE(ck.ok()) << ck.status();
  ASSERT_TRUE((*ck)->config().mixer_rms_norm());
  BackendOptions bo;
  bo.num_slots = 4;
  auto backend = cpu::CpuBackend::Create(*ck, bo);
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::vector<GenerationRequest> reqs = Requests(8, 0.0f);
  for (auto& r : reqs) r.params.max_new_tokens = 12;
  GenerateOptions go;
  go.prefill_chunk = 5;
  go.max_step_tokens = 16;
  auto out = Generate(**backend, reqs, go);
  ASSERT_TRUE(out.ok()) << out.status();
  testing::ReferenceModel ref(**ck);
  int compared = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const std::vector<TokenId> got = Ids((*out)[i]);
    ASSERT_EQ(got.size(), 12u);
    const std::vector<TokenId> want = testing::ReferenceGreedy(ref, reqs[i].prompt, 12);
    EXPECT_EQ(std::vector<TokenId>(got.begin(), got.begin() + static_cast<long>(want.size())), want)
        << "request " << i;
    compared += static_cast<int>(want.size());
  }
  EXPECT_GT(compared, 60);
}

// Forwards to a backend and counts the decode rows DecodeAndDraw ran, and how many of them it
// drew: which path a step's decode rows took.
class CountingBackend : public Backend {
 public:
  explicit CountingBackend(Backend& inner) : inner_(inner) {}
  const ModelConfig& config() const override { return inner_.config(); }
  std::string Describe() const override { return inner_.Describe(); }
  BackendInfo info() const override { return inner_.info(); }
  kernels::DType compute_dtype() const override { return inner_.compute_dtype(); }
  int num_slots() const override { return inner_.num_slots(); }
  absl::Status Prefill(std::span<const ChunkInput> chunks, Logits* logits) override {
    return inner_.Prefill(chunks, logits);
  }
  absl::Status Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                      Logits* logits) override {
    return inner_.Decode(slots, tokens, logits);
  }
  absl::Status DecodeAndDraw(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                             std::span<const std::optional<DrawRule>> rules,
                             std::vector<SampledToken>* drawn, Logits* logits) override {
    rows += static_cast<int64_t>(slots.size());
    drawn_rows += std::count_if(rules.begin(), rules.end(), [](const auto& r) { return r; });
    return inner_.DecodeAndDraw(slots, tokens, rules, drawn, logits);
  }
  absl::Status ResetSlot(SlotId slot) override { return inner_.ResetSlot(slot); }
  absl::Status CopySlot(SlotId from, SlotId to) override { return inner_.CopySlot(from, to); }
  int64_t state_floats() const override { return inner_.state_floats(); }
  absl::Status SaveSlot(SlotId slot, std::vector<float>* state) override {
    return inner_.SaveSlot(slot, state);
  }
  absl::Status RestoreSlot(SlotId slot, std::span<const float> state) override {
    return inner_.RestoreSlot(slot, state);
  }
  int64_t rows = 0, drawn_rows = 0;

 private:
  Backend& inner_;
};

// The decode path (what a GPU engine takes) against one-token prefill chunks (the CPU engine's
// own): greedy tokens, and tokens the Sampler must process on the host (penalties, logit bias),
// come out bitwise equal with their log-probs; seeded tokens drawn by the backend's rule
// (DrawByRule walks the kept set in id order, the Sampler in its own) do not depend on the batch.
TEST_F(GenerateTest, TheDecodePathChangesNoGreedyOrHostSampledToken) {
  std::vector<GenerationRequest> reqs = Requests(18, 0.0f);
  enum Kind { kGreedy, kHost, kDrawn };
  auto kind = [](size_t i) { return static_cast<Kind>(i % 3); };
  for (size_t i = 0; i < reqs.size(); ++i) {
    SamplingParams& p = reqs[i].params;
    p.top_logprobs = static_cast<int32_t>(i % 4);
    if (kind(i) == kHost) {
      p.temperature = 0.8f;
      if (i % 2)
        p.repetition_penalty = 1.3f;
      else
        p.logit_bias = {{7, 2.0f}};
    } else if (kind(i) == kDrawn) {
      p.temperature = 0.9f;
      p.top_p = 0.9f;
      p.top_k = i % 2 ? 20 : 0;
    }
  }
  auto run = [&](DecodePath path, std::span<const GenerationRequest> rs, int64_t* rows,
                 int64_t* drawn) {
    auto cpu = Make(4);
    CountingBackend b(*cpu);
    GenerateOptions go;
    go.prefill_chunk = 5;
    go.max_step_tokens = 16;
    go.decode_path = path;
    auto out = Generate(b, rs, go);
    EXPECT_TRUE(out.ok()) << out.status();
    *rows += b.rows;
    *drawn += b.drawn_rows;
    return out.ok() ? *out : std::vector<GenerationResult>{};
  };
  const bool exact = Make(1)->Describe().find("packed") != std::string::npos;
  int64_t prefill_rows = 0, prefill_drawn = 0, rows = 0, drawn = 0;
  const auto want = run(DecodePath::kPrefill, reqs, &prefill_rows, &prefill_drawn);
  const auto got = run(DecodePath::kDecode, reqs, &rows, &drawn);
  EXPECT_EQ(prefill_rows, 0);  // the CPU engine's own path never calls DecodeAndDraw
  int64_t decode_tokens = 0;
  for (const auto& r : want) decode_tokens += static_cast<int64_t>(r.tokens.size()) - 1;
  EXPECT_EQ(rows, decode_tokens);  // every decode row went through DecodeAndDraw
  EXPECT_GT(drawn, 0);
  EXPECT_LT(drawn, rows);  // the host-sampled requests' rows came back as logits
  ASSERT_EQ(got.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (kind(i) == kDrawn) {
      ASSERT_EQ(got[i].tokens.size(), want[i].tokens.size());
      EXPECT_EQ(got[i].tokens[0].id, want[i].tokens[0].id);  // from the prompt's logits
      int64_t r = 0, d = 0;
      const auto alone = run(DecodePath::kDecode, {&reqs[i], 1}, &r, &d);
      ASSERT_EQ(alone.size(), 1u);
      EXPECT_EQ(Ids(alone[0]), Ids(got[i])) << "request " << i;
      continue;
    }
    ASSERT_EQ(got[i].tokens.size(), want[i].tokens.size()) << "request " << i;
    for (size_t k = 0; k < got[i].tokens.size(); ++k) {
      const SampledToken &a = got[i].tokens[k], &b = want[i].tokens[k];
      ASSERT_EQ(a.id, b.id) << "request " << i << " token " << k;
      ASSERT_EQ(a.top.size(), b.top.size());
      if (!exact) continue;  // the oneDNN fallback: log-probs equal within rounding only
      EXPECT_EQ(a.logprob, b.logprob);
      for (size_t j = 0; j < a.top.size(); ++j) {
        EXPECT_EQ(a.top[j].id, b.top[j].id);
        EXPECT_EQ(a.top[j].logprob, b.top[j].logprob);
      }
    }
  }
}

TEST_F(GenerateTest, StopsOnStopTokensAndLength) {
  auto b = Make(2);
  GenerationRequest r;
  r.prompt = {5, 6, 7};
  r.params.temperature = 0;
  r.params.max_new_tokens = 12;
  auto free_run = Generate(*b, {&r, 1});
  ASSERT_TRUE(free_run.ok());
  ASSERT_EQ((*free_run)[0].tokens.size(), 12u);
  EXPECT_EQ((*free_run)[0].finish, FinishReason::kLength);
  r.params.stop_token_ids = {(*free_run)[0].tokens[4].id};
  auto stopped = Generate(*b, {&r, 1});
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ((*stopped)[0].finish, FinishReason::kStop);
  EXPECT_LE((*stopped)[0].tokens.size(), 5u);
  EXPECT_EQ((*stopped)[0].tokens.back().id, r.params.stop_token_ids[0]);
}

TEST_F(GenerateTest, RejectsBadRequests) {
  auto b = Make(2);
  GenerationRequest r;
  EXPECT_EQ(Generate(*b, {&r, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  r.prompt = {1};
  r.params.top_p = 0.0f;
  EXPECT_EQ(Generate(*b, {&r, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  r.params.top_p = 1.0f;
  r.prompt = {999};
  EXPECT_EQ(Generate(*b, {&r, 1}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mamba::engine
