// The CUDA engine's fast decode path (CudaBackend::DecodeAndDraw: sampling on the device)
// against the CPU engine's, the base-class Backend::DecodeAndDraw (decode to the host, then
// engine::DrawByRule), on a small random checkpoint in fp32: mixed rule / no-rule rows, batches
// of 1, 7 and 33, in one pass and (max_step_tokens 16) through the several-pass fallback; and its
// argument checks. Label `gpu`; skips without a usable device (fails under MAMBA_REQUIRE_GPU=1).
#include <algorithm>
#include <cmath>
#include <optional>
#include <random>

#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/sampling.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
#include "tests/engine/test_support.h"
#include "tests/support/gpu_required.h"

namespace mamba::engine {
namespace {

using testing::AllClose;
using testing::RandomPrompt;
using testing::TempDir;

constexpr int kSlots = 40;
constexpr double kCpuTol = 2e-4;      // fp32 logits against the CPU engine (cuda_backend_test)
constexpr double kTie = 2e-3;         // a greedy id may differ only at a closer top-2 margin
constexpr float kLogprobTol = 1e-3f;  // log-probs of logits within kCpuTol of each other

std::vector<double> D(std::span<const float> v) { return {v.begin(), v.end()}; }

class CudaDrawTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (kernels::cuda::UsableDeviceCount(&why) == 0) {
      if (mamba::testing::GpuRequired()) {
        FAIL() << "no usable CUDA device (MAMBA_REQUIRE_GPU=1): " << why;
      }
      GTEST_SKIP() << "no usable CUDA device: " << why;
    }
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    auto ck = Checkpoint::Open(testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = *ck;
  }
  BackendOptions Options(int64_t step_tokens) const {
    BackendOptions bo;
    bo.dtype = ComputeDType::kFloat32;
    bo.num_slots = kSlots;
    bo.max_step_tokens = step_tokens;
    return bo;
  }
  std::unique_ptr<cuda::CudaBackend> MakeCuda(int64_t step_tokens) {
    auto b = cuda::CudaBackend::Create(checkpoint_, Options(step_tokens), 0);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  std::unique_ptr<cpu::CpuBackend> MakeCpu() {
    auto b = cpu::CpuBackend::Create(checkpoint_, Options(2048));
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  int64_t vocab() const { return checkpoint_->config().vocab_size; }

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
};

// Row i's rule: none (every third row), greedy with log-probs, or a draw.
std::optional<DrawRule> RuleFor(int i, std::mt19937_64& rng) {
  if (i % 3 == 0) return std::nullopt;
  DrawRule r;
  if (i % 3 == 1) {
    r.logprobs = true;
    r.top_logprobs = 3;
    return r;
  }
  r.temperature = 0.8f;
  r.top_k = 20;
  r.top_p = 0.9f;
  r.min_p = i % 2 == 0 ? 0.01f : 0.0f;
  r.uniform = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  r.logprobs = i % 4 == 2;
  return r;
}

// The `n` best ids of a row (ties -> lower id) and the gap between the best two logits.
std::vector<TokenId> Best(std::span<const float> row, size_t n) {
  std::vector<TokenId> ids(row.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<TokenId>(i);
  std::stable_sort(ids.begin(), ids.end(), [&](TokenId a, TokenId b) {
    return row[static_cast<size_t>(a)] > row[static_cast<size_t>(b)];
  });
  ids.resize(std::min(n, ids.size()));
  return ids;
}

TEST_F(CudaDrawTest, MatchesCpuEngineDecodeAndDraw) {
  for (int64_t step_tokens : {2048, 16}) {  // 16: batch 33 takes the several-pass fallback
    auto gpu = MakeCuda(step_tokens);
    auto cpu = MakeCpu();
    auto cpu_full = MakeCpu();  // the same steps through Decode: every row's logits
    ASSERT_NE(gpu, nullptr);
    ASSERT_NE(cpu, nullptr);
    ASSERT_NE(cpu_full, nullptr);
    EXPECT_TRUE(gpu->fast_decode());
    EXPECT_FALSE(cpu->fast_decode());
    std::mt19937_64 rng(11);
    int sampled = 0, sampled_same = 0;
    for (int batch : {1, 7, 33}) {
      const std::string where =
          "step_tokens " + std::to_string(step_tokens) + " batch " + std::to_string(batch);
      std::vector<SlotId> slots;
      std::vector<std::vector<TokenId>> prompts;
      std::vector<ChunkInput> chunks;
      for (int i = 0; i < batch; ++i) {
        slots.push_back(SlotId((i * 7) % kSlots));  // distinct, not in order
        prompts.push_back(RandomPrompt(3 + i % 5, vocab(), 100 + static_cast<uint64_t>(i)));
      }
      for (int i = 0; i < batch; ++i) {
        chunks.push_back(
            {slots[static_cast<size_t>(i)], prompts[static_cast<size_t>(i)], true, false});
      }
      Logits unused;
      for (Backend* b : std::initializer_list<Backend*>{gpu.get(), cpu.get(), cpu_full.get()}) {
        ASSERT_TRUE(b->Prefill(chunks, &unused).ok()) << where;
      }
      std::vector<TokenId> tokens = RandomPrompt(batch, vocab(), 7);
      for (int step = 0; step < 3; ++step) {
        std::vector<std::optional<DrawRule>> rules;
        for (int i = 0; i < batch; ++i) rules.push_back(RuleFor(i + step, rng));
        std::vector<SampledToken> got, want;
        Logits got_logits, want_logits, full;
        ASSERT_TRUE(gpu->DecodeAndDraw(slots, tokens, rules, &got, &got_logits).ok()) << where;
        ASSERT_TRUE(cpu->DecodeAndDraw(slots, tokens, rules, &want, &want_logits).ok()) << where;
        ASSERT_TRUE(cpu_full->Decode(slots, tokens, &full).ok()) << where;
        ASSERT_EQ(got.size(), static_cast<size_t>(batch)) << where;
        ASSERT_EQ(got_logits.rows, want_logits.rows) << where;
        ASSERT_EQ(got_logits.vocab, vocab()) << where;
        for (int64_t r = 0; r < got_logits.rows; ++r) {
          EXPECT_TRUE(AllClose(got_logits.Row(r), D(want_logits.Row(r)), kCpuTol, kCpuTol))
              << where << " step " << step << " logits row " << r;
        }
        for (int i = 0; i < batch; ++i) {
          const auto& rule = rules[static_cast<size_t>(i)];
          const SampledToken& g = got[static_cast<size_t>(i)];
          const SampledToken& w = want[static_cast<size_t>(i)];
          const std::span<const float> row = full.Row(i);
          const std::string at =
              where + " step " + std::to_string(step) + " row " + std::to_string(i);
          if (!rule) continue;
          const std::vector<TokenId> best = Best(row, 20);
          if (rule->temperature == 0.0f) {
            const double margin = row[static_cast<size_t>(best[0])] -
                                  (best.size() > 1 ? row[static_cast<size_t>(best[1])] : -1e30);
            if (margin > kTie) {
              EXPECT_EQ(g.id, w.id) << at;
            }
          } else {
            // A draw from the kept set; the same id unless the logits' differences moved a cut.
            ++sampled;
            sampled_same += g.id == w.id ? 1 : 0;
            EXPECT_NE(std::find(best.begin(), best.end(), g.id), best.end()) << at;
          }
          if (rule->logprobs && g.id == w.id) {
            EXPECT_NEAR(g.logprob, w.logprob, kLogprobTol) << at;
          }
          if (!rule->logprobs) {
            EXPECT_EQ(g.logprob, 0.0f) << at;
          }
          ASSERT_EQ(g.top.size(), w.top.size()) << at;
          for (size_t k = 0; k < g.top.size(); ++k) {
            EXPECT_NEAR(g.top[k].logprob, w.top[k].logprob, kLogprobTol) << at << " top " << k;
          }
        }
        // Both engines go on with the CPU's tokens (the argmax where no rule drew one).
        for (int i = 0; i < batch; ++i) {
          tokens[static_cast<size_t>(i)] = rules[static_cast<size_t>(i)]
                                               ? want[static_cast<size_t>(i)].id
                                               : Best(full.Row(i), 1)[0];
        }
      }
    }
    EXPECT_GE(sampled_same * 10, sampled * 8) << "step_tokens " << step_tokens;
  }
}

// The checks DecodeAndDraw adds to Decode's, and an empty batch.
TEST_F(CudaDrawTest, Arguments) {
  auto gpu = MakeCuda(2048);
  ASSERT_NE(gpu, nullptr);
  const std::vector<SlotId> slots = {SlotId(0), SlotId(1)};
  const std::vector<TokenId> tokens = {1, 2};
  std::vector<SampledToken> drawn;
  Logits logits;
  std::vector<std::optional<DrawRule>> one(1);
  EXPECT_EQ(gpu->DecodeAndDraw(slots, tokens, one, &drawn, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  DrawRule too_many;
  too_many.top_logprobs = kMaxTopLogprobs + 1;
  std::vector<std::optional<DrawRule>> rules = {std::nullopt, too_many};
  EXPECT_EQ(gpu->DecodeAndDraw(slots, tokens, rules, &drawn, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  rules[1] = DrawRule{};
  const std::vector<SlotId> bad = {SlotId(0), SlotId(kSlots)};
  EXPECT_EQ(gpu->DecodeAndDraw(bad, tokens, rules, &drawn, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(gpu->DecodeAndDraw(slots, tokens, rules, &drawn, &logits).ok());
  EXPECT_EQ(drawn.size(), 2u);
  EXPECT_EQ(logits.rows, 1);
  ASSERT_TRUE(gpu->DecodeAndDraw({}, {}, {}, &drawn, &logits).ok());
  EXPECT_TRUE(drawn.empty());
  EXPECT_EQ(logits.rows, 0);
}

}  // namespace
}  // namespace mamba::engine
