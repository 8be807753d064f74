// The CPU engine against the float64 reference model on random checkpoints of several
// configurations; chunked prefill against token-by-token decode; batch independence; slots.
#include "engine/cpu/cpu_backend.h"

#include <cstring>

#include "gtest/gtest.h"
#include "tests/engine/reference_model.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using kernels::DType;
using testing::AllClose;
using testing::Dec;
using testing::RandomPrompt;
using testing::TempDir;
using Variant = testing::BackendVariant;

class CpuBackendTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    auto ck = testing::OpenVariantModel(dir_, GetParam());
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = *ck;
    reference_ = std::make_unique<testing::ReferenceModel>(*checkpoint_);
    backend_ = MakeBackend(4, 2048);
  }
  std::unique_ptr<cpu::CpuBackend> MakeBackend(int slots, int64_t step_tokens) {
    BackendOptions bo;
    bo.dtype = GetParam().compute;
    bo.num_slots = slots;
    bo.max_step_tokens = step_tokens;
    auto b = cpu::CpuBackend::Create(checkpoint_, bo);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  // Tolerances: fp32 compute is checked tightly; 16-bit compute rounds activations at every GEMM.
  double Atol() const { return backend_->compute_dtype() == DType::kF32 ? 2e-4 : 4e-2; }
  double Rtol() const { return backend_->compute_dtype() == DType::kF32 ? 1e-3 : 4e-2; }
  int64_t vocab() const { return checkpoint_->config().vocab_size; }

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<testing::ReferenceModel> reference_;
  std::unique_ptr<cpu::CpuBackend> backend_;
};

TEST_P(CpuBackendTest, PrefillThenDecodeMatchesFloat64Reference) {
  const auto prompt = RandomPrompt(11, vocab(), 1);
  Logits logits;
  ChunkInput c{SlotId(2), prompt, true, true};
  ASSERT_TRUE(backend_->Prefill({&c, 1}, &logits).ok());
  std::vector<double> want = reference_->Forward(prompt);
  EXPECT_TRUE(AllClose(logits.Row(0), want, Atol(), Rtol()));
  for (TokenId t : RandomPrompt(6, vocab(), 2)) {
    ASSERT_TRUE(Dec(*backend_, {SlotId(2)}, {t}, &logits).ok());
    want = reference_->Forward({&t, 1});
    EXPECT_TRUE(AllClose(logits.Row(0), want, Atol(), Rtol())) << "decode token " << t;
  }
}

// Prefill in any chunking equals token-by-token decode (same slot, continued state).
TEST_P(CpuBackendTest, AnyChunkingEqualsTokenByToken) {
  const auto prompt = RandomPrompt(29, vocab(), 3);
  Logits step;
  std::vector<float> by_token;
  ASSERT_TRUE(backend_->ResetSlot(SlotId(0)).ok());
  for (TokenId t : prompt) ASSERT_TRUE(Dec(*backend_, {SlotId(0)}, {t}, &step).ok());
  by_token.assign(step.data.begin(), step.data.end());
  const std::vector<double> want(by_token.begin(), by_token.end());
  for (std::vector<int64_t> pieces :
       {std::vector<int64_t>{29}, {1, 28}, {3, 3, 3, 20}, {7, 1, 21}, {16, 13}}) {
    int64_t at = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      ChunkInput c{SlotId(1), std::span<const TokenId>(prompt).subspan(at, pieces[i]), i == 0,
                   i + 1 == pieces.size()};
      ASSERT_TRUE(backend_->Prefill({&c, 1}, &step).ok());
      at += pieces[i];
    }
    EXPECT_TRUE(AllClose(step.Row(0), want, 1e-4, 1e-4)) << "pieces " << pieces.size();
  }
}

// A request's logits do not depend on what else is in the step: bitwise with the packed GEMM,
// which computes a row the same way whatever the batch; within tolerance on the oneDNN fallback,
// which does not promise it (kernels/cpu/gemm.cc).
TEST_P(CpuBackendTest, ResultsIndependentOfBatch) {
  auto solo = MakeBackend(8, 2048), busy = MakeBackend(8, 2048);
  const auto prompt = RandomPrompt(13, vocab(), 4);
  Logits a, b;
  ChunkInput c{SlotId(5), prompt, true, true};
  ASSERT_TRUE(solo->Prefill({&c, 1}, &a).ok());
  std::vector<std::vector<TokenId>> others;
  for (int i = 0; i < 5; ++i) others.push_back(RandomPrompt(1 + 7 * i, vocab(), 10 + i));
  std::vector<ChunkInput> batch;
  for (int i = 0; i < 3; ++i)
    batch.push_back({SlotId(i), others[static_cast<size_t>(i)], true, i != 1});
  batch.push_back({SlotId(5), prompt, true, true});
  batch.push_back({SlotId(7), others[4], true, true});
  ASSERT_TRUE(busy->Prefill(batch, &b).ok());
  ASSERT_EQ(b.rows, 4);
  const bool packed = solo->Describe().find("packed") != std::string::npos;
  auto same = [&](std::span<const float> x, std::span<const float> y) {
    if (packed) return std::memcmp(x.data(), y.data(), x.size_bytes()) == 0;
    return static_cast<bool>(AllClose(x, std::vector<double>(y.begin(), y.end()), 1e-4, 1e-4));
  };
  EXPECT_TRUE(same(a.Row(0), b.Row(2)));
  // Decode: alone vs among 6.
  TokenId next = 17 % static_cast<TokenId>(vocab());
  ASSERT_TRUE(Dec(*solo, {SlotId(5)}, {next}, &a).ok());
  ASSERT_TRUE(
      Dec(*busy, {SlotId(0), SlotId(1), SlotId(2), SlotId(5), SlotId(7)}, {1, 2, 3, next, 4}, &b)
          .ok());
  EXPECT_TRUE(same(a.Row(0), b.Row(3)));
}

TEST_P(CpuBackendTest, StepsLargerThanScratchAreSplit) {
  auto small = MakeBackend(4, 5);
  const auto p1 = RandomPrompt(23, vocab(), 5), p2 = RandomPrompt(4, vocab(), 6);
  std::vector<ChunkInput> chunks = {{SlotId(0), p1, true, true}, {SlotId(3), p2, true, true}};
  Logits want, got;
  ASSERT_TRUE(backend_->Prefill(chunks, &want).ok());
  ASSERT_TRUE(small->Prefill(chunks, &got).ok());
  ASSERT_EQ(got.rows, 2);
  EXPECT_TRUE(
      AllClose(got.data, std::vector<double>(want.data.begin(), want.data.end()), 1e-4, 1e-4));
}

TEST_P(CpuBackendTest, CopySlotForksAndResetClears) {
  const auto prompt = RandomPrompt(9, vocab(), 7);
  Logits a, b, fresh;
  ChunkInput c{SlotId(0), prompt, true, false};
  ASSERT_TRUE(backend_->Prefill({&c, 1}, &a).ok());
  ASSERT_TRUE(backend_->CopySlot(SlotId(0), SlotId(3)).ok());
  ASSERT_TRUE(Dec(*backend_, {SlotId(0), SlotId(3)}, {5, 5}, &a).ok());
  EXPECT_EQ(0, std::memcmp(a.Row(0).data(), a.Row(1).data(), a.Row(0).size_bytes()));
  ASSERT_TRUE(backend_->ResetSlot(SlotId(3)).ok());
  ASSERT_TRUE(Dec(*backend_, {SlotId(3)}, {5}, &b).ok());
  ChunkInput f{SlotId(1), std::span<const TokenId>(&prompt[0], 0), true, true};
  TokenId five = 5;
  f.tokens = {&five, 1};
  ASSERT_TRUE(backend_->Prefill({&f, 1}, &fresh).ok());
  EXPECT_EQ(0, std::memcmp(b.Row(0).data(), fresh.Row(0).data(), b.Row(0).size_bytes()));
}

INSTANTIATE_TEST_SUITE_P(
    Configs, CpuBackendTest,
    ::testing::Values(
        Variant{"base"}, Variant{"bias", DType::kF32, ComputeDType::kAuto, true},
        Variant{"no_conv_bias", DType::kF32, ComputeDType::kAuto, false, true},
        Variant{"untied_sharded", DType::kF32, ComputeDType::kAuto, false, false, true, false, 3},
        Variant{"mamba_ssm", DType::kF32, ComputeDType::kAuto, false, false, false, true},
        Variant{"odd_dims", DType::kF32, ComputeDType::kAuto, false, false, false, false, 1, 20, 5,
                3, 2, 3},
        Variant{"conv3", DType::kF32, ComputeDType::kAuto, false, false, false, false, 1, 48, 16, 3,
                3},
        Variant{"bf16_as_f32", DType::kBF16, ComputeDType::kFloat32},
        Variant{"bf16", DType::kBF16, ComputeDType::kAuto, true},
        Variant{"f16_as_f32", DType::kF16, ComputeDType::kFloat32, false, false, true},
        Variant{"f32_as_bf16", DType::kF32, ComputeDType::kBFloat16}),
    [](const ::testing::TestParamInfo<Variant>& i) { return std::string(i.param.name); });

class CpuBackendErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    auto ck = Checkpoint::Open(testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok());
    checkpoint_ = *ck;
    BackendOptions bo;
    bo.num_slots = 2;
    auto b = cpu::CpuBackend::Create(checkpoint_, bo);
    ASSERT_TRUE(b.ok());
    backend_ = std::move(*b);
  }
  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<cpu::CpuBackend> backend_;
};

TEST_F(CpuBackendErrors, BadCallsAreInvalidArgument) {
  Logits l;
  std::vector<TokenId> ok = {1, 2}, bad = {1, 96}, neg = {-1};
  auto code = [&](std::vector<ChunkInput> c) { return backend_->Prefill(c, &l).code(); };
  EXPECT_EQ(code({{SlotId(2), ok}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(-1), ok}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), ok}, {SlotId(0), ok}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), bad}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), neg}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), {}}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Dec(*backend_, {SlotId(0)}, {}, &l).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->CopySlot(SlotId(0), SlotId(9)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend_->Prefill(std::vector<ChunkInput>{{SlotId(1), ok}}, &l).ok());
}

TEST_F(CpuBackendErrors, UnsupportedOptions) {
  BackendOptions bo;
  bo.num_slots = -1;
  EXPECT_FALSE(cpu::CpuBackend::Create(checkpoint_, bo).ok());
  bo.num_slots = 0;  // automatic
  auto automatic = cpu::CpuBackend::Create(checkpoint_, bo);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ((*automatic)->num_slots(), kDefaultCpuSlots);
  bo.num_slots = 1;
  bo.device = "tpu";
  EXPECT_EQ(CreateBackend(checkpoint_, bo).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseComputeDType("int8").ok());
  bo.device = "cpu";
  bo.dtype = ComputeDType::kFloat16;
  auto f16 = CreateBackend(checkpoint_, bo);
  if (!kernels::cpu::GemmHasFastPath(DType::kF16)) {
    ASSERT_FALSE(f16.ok());
    EXPECT_NE(std::string(f16.status().message()).find("float16"), std::string::npos);
  } else {
    EXPECT_TRUE(f16.ok());
  }
}

}  // namespace
}  // namespace mamba::engine
