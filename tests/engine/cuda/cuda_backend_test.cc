// The CUDA engine against the float64 reference model and against the CPU engine on random
// checkpoints of several configurations: logits, greedy tokens, chunked prefill against
// token-by-token decode, graphs against eager steps, many shuffled slots, split passes, slot
// copies, device-side greedy sampling, device selection. Skips without a usable device (except
// the checks of what happens without one).
#include "engine/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>

#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
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

bool HaveGpu(std::string* why) { return kernels::cuda::UsableDeviceCount(why) > 0; }

#define MAMBA_SKIP_WITHOUT_GPU()                                                        \
  do {                                                                                  \
    std::string mamba_why_;                                                             \
    if (!HaveGpu(&mamba_why_)) GTEST_SKIP() << "no usable CUDA device: " << mamba_why_; \
  } while (0)

std::vector<double> D(std::span<const float> v) { return {v.begin(), v.end()}; }

TokenId Argmax(std::span<const float> row) {
  return static_cast<TokenId>(std::max_element(row.begin(), row.end()) - row.begin());
}

class CudaBackendTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    MAMBA_SKIP_WITHOUT_GPU();
    auto ck = testing::OpenVariantModel(dir_, GetParam());
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = *ck;
    reference_ = std::make_unique<testing::ReferenceModel>(*checkpoint_);
    backend_ = MakeBackend(4, 2048);
    ASSERT_NE(backend_, nullptr);
  }
  std::unique_ptr<cuda::CudaBackend> MakeBackend(int slots, int64_t step_tokens,
                                                 bool graphs = true) {
    BackendOptions bo;
    bo.dtype = GetParam().compute;
    bo.num_slots = slots;
    bo.max_step_tokens = step_tokens;
    cuda::CudaBackendOptions co;
    co.cuda_graphs = graphs;
    auto b = cuda::CudaBackend::Create(checkpoint_, bo, 0, co);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  std::unique_ptr<cpu::CpuBackend> MakeCpu(int slots) {
    BackendOptions bo;
    bo.dtype = GetParam().compute;
    bo.num_slots = slots;
    auto b = cpu::CpuBackend::Create(checkpoint_, bo);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  bool Fp32() const { return backend_->compute_dtype() == DType::kF32; }
  // Against float64: fp32 compute tightly; 16-bit compute rounds activations at every GEMM.
  double Atol() const { return Fp32() ? 2e-4 : 4e-2; }
  double Rtol() const { return Fp32() ? 1e-3 : 4e-2; }
  // Against the CPU engine (both within the tolerance above of float64).
  double CpuTol() const { return Fp32() ? 2e-4 : 6e-2; }
  int64_t vocab() const { return checkpoint_->config().vocab_size; }

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<testing::ReferenceModel> reference_;
  std::unique_ptr<cuda::CudaBackend> backend_;
};

TEST_P(CudaBackendTest, PrefillThenDecodeMatchesFloat64Reference) {
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

// Same logits and greedy tokens as the CPU engine, prefill then 12 decode steps. Tokens may
// part only at a near tie of the CPU's logits; from there on the sequences differ.
TEST_P(CudaBackendTest, LogitsAndGreedyTokensMatchCpuEngine) {
  auto cpu = MakeCpu(4);
  ASSERT_NE(cpu, nullptr);
  const auto prompt = RandomPrompt(17, vocab(), 3);
  Logits g, c;
  ChunkInput in{SlotId(1), prompt, true, true};
  ASSERT_TRUE(backend_->Prefill({&in, 1}, &g).ok());
  ASSERT_TRUE(cpu->Prefill({&in, 1}, &c).ok());
  EXPECT_TRUE(AllClose(g.Row(0), D(c.Row(0)), CpuTol(), CpuTol()));
  const double tie = Fp32() ? 2e-3 : 0.15;
  for (int step = 0; step < 12; ++step) {
    const TokenId tg = Argmax(g.Row(0)), tc = Argmax(c.Row(0));
    if (tg != tc) {
      EXPECT_LT(std::fabs(c.Row(0)[static_cast<size_t>(tg)] - c.Row(0)[static_cast<size_t>(tc)]),
                tie)
          << "step " << step << ": cuda " << tg << " cpu " << tc;
      break;
    }
    ASSERT_TRUE(Dec(*backend_, {SlotId(1)}, {tg}, &g).ok());
    ASSERT_TRUE(Dec(*cpu, {SlotId(1)}, {tc}, &c).ok());
    EXPECT_TRUE(AllClose(g.Row(0), D(c.Row(0)), CpuTol(), CpuTol())) << "step " << step;
  }
}

// Prefill in any chunking equals token-by-token decode (same slot, continued state); chunks
// longer than the scan's 256-token sub-chunks included.
TEST_P(CudaBackendTest, AnyChunkingEqualsTokenByToken) {
  const auto prompt = RandomPrompt(300, vocab(), 3);
  Logits step;
  ASSERT_TRUE(backend_->ResetSlot(SlotId(0)).ok());
  for (TokenId t : prompt) ASSERT_TRUE(Dec(*backend_, {SlotId(0)}, {t}, &step).ok());
  const std::vector<double> want = D(step.Row(0));
  const double tol = Fp32() ? 1e-4 : 4e-2;
  for (std::vector<int64_t> pieces :
       {std::vector<int64_t>{300}, {1, 299}, {3, 3, 3, 291}, {257, 1, 42}, {16, 13, 271}}) {
    int64_t at = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      ChunkInput c{SlotId(1), std::span<const TokenId>(prompt).subspan(at, pieces[i]), i == 0,
                   i + 1 == pieces.size()};
      ASSERT_TRUE(backend_->Prefill({&c, 1}, &step).ok());
      at += pieces[i];
    }
    EXPECT_TRUE(AllClose(step.Row(0), want, tol, tol)) << "pieces " << pieces.size();
  }
}

// Decode steps replayed from graphs (batch 3 runs in the 4-row bucket) equal eager ones.
TEST_P(CudaBackendTest, GraphDecodeEqualsEagerDecode) {
  auto eager = MakeBackend(4, 2048, /*graphs=*/false);
  ASSERT_NE(eager, nullptr);
  std::vector<std::vector<TokenId>> prompts = {
      RandomPrompt(5, vocab(), 20), RandomPrompt(9, vocab(), 21), RandomPrompt(2, vocab(), 22)};
  std::vector<ChunkInput> chunks;
  const std::vector<SlotId> slots = {SlotId(3), SlotId(0), SlotId(2)};
  for (size_t i = 0; i < 3; ++i) chunks.push_back({slots[i], prompts[i], true, false});
  Logits a, b;
  ASSERT_TRUE(backend_->Prefill(chunks, &a).ok());
  ASSERT_TRUE(eager->Prefill(chunks, &b).ok());
  for (int step = 0; step < 5; ++step) {
    const std::vector<TokenId> tokens = RandomPrompt(3, vocab(), 30 + static_cast<uint64_t>(step));
    ASSERT_TRUE(backend_->Decode(slots, tokens, &a).ok());
    ASSERT_TRUE(eager->Decode(slots, tokens, &b).ok());
    ASSERT_EQ(a.rows, 3);
    // cuBLAS may pick other kernels for 3 and 4 rows; in 16-bit modes a last-bit difference can
    // round an activation to the neighbouring bf16/fp16 value.
    const double tol = Fp32() ? 1e-5 : 2e-2;
    EXPECT_TRUE(AllClose(a.data, D(b.data), tol, tol)) << "step " << step;
  }
  EXPECT_GE(backend_->graphs_captured(), 1);
  EXPECT_EQ(eager->graphs_captured(), 0);
}

// Many requests of different lengths in one call, slots in shuffled order: each matches the
// reference model run alone.
TEST_P(CudaBackendTest, ManyShuffledSlotsMatchReference) {
  auto big = MakeBackend(9, 2048);
  ASSERT_NE(big, nullptr);
  const std::vector<int32_t> order = {7, 2, 8, 0, 5, 3, 1};
  std::vector<std::vector<TokenId>> prompts;
  std::vector<ChunkInput> chunks;
  for (size_t i = 0; i < order.size(); ++i)
    prompts.push_back(RandomPrompt(1 + 37 * static_cast<int64_t>(i) % 61, vocab(), 40 + i));
  for (size_t i = 0; i < order.size(); ++i)
    chunks.push_back({SlotId(order[i]), prompts[i], true, i != 2});
  Logits got;
  ASSERT_TRUE(big->Prefill(chunks, &got).ok());
  ASSERT_EQ(got.rows, static_cast<int64_t>(order.size()) - 1);
  std::vector<SlotId> slots;
  std::vector<TokenId> next;
  int64_t row = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    reference_->Reset();
    const std::vector<double> want = reference_->Forward(prompts[i]);
    if (i != 2) {
      EXPECT_TRUE(AllClose(got.Row(row++), want, Atol(), Rtol())) << "request " << i;
    }
    slots.push_back(SlotId(order[i]));
    next.push_back(static_cast<TokenId>((5 * i + 1) % static_cast<size_t>(vocab())));
  }
  ASSERT_TRUE(big->Decode(slots, next, &got).ok());
  for (size_t i = 0; i < order.size(); ++i) {
    reference_->Reset();
    reference_->Forward(prompts[i]);
    const std::vector<double> want = reference_->Forward({&next[i], 1});
    EXPECT_TRUE(AllClose(got.Row(static_cast<int64_t>(i)), want, Atol(), Rtol())) << "decode " << i;
  }
}

TEST_P(CudaBackendTest, StepsLargerThanScratchAreSplit) {
  auto small = MakeBackend(4, 5);
  ASSERT_NE(small, nullptr);
  const auto p1 = RandomPrompt(23, vocab(), 5), p2 = RandomPrompt(4, vocab(), 6);
  std::vector<ChunkInput> chunks = {{SlotId(0), p1, true, true}, {SlotId(3), p2, true, true}};
  Logits want, got;
  ASSERT_TRUE(backend_->Prefill(chunks, &want).ok());
  ASSERT_TRUE(small->Prefill(chunks, &got).ok());
  ASSERT_EQ(got.rows, 2);
  const double tol = Fp32() ? 1e-4 : 4e-2;
  EXPECT_TRUE(AllClose(got.data, D(want.data), tol, tol));
  // A decode batch larger than the scratch goes through the prefill path.
  auto tiny = MakeBackend(4, 2);
  ASSERT_NE(tiny, nullptr);
  ASSERT_TRUE(tiny->Prefill(chunks, &got).ok());
  ASSERT_TRUE(Dec(*tiny, {SlotId(0), SlotId(3), SlotId(1)}, {1, 2, 3}, &got).ok());
  ASSERT_TRUE(Dec(*backend_, {SlotId(0), SlotId(3), SlotId(1)}, {1, 2, 3}, &want).ok());
  EXPECT_TRUE(AllClose(got.data, D(want.data), tol, tol));
}

TEST_P(CudaBackendTest, CopySlotForksAndResetClears) {
  const auto prompt = RandomPrompt(9, vocab(), 7);
  Logits a, b, fresh;
  ChunkInput c{SlotId(0), prompt, true, false};
  ASSERT_TRUE(backend_->Prefill({&c, 1}, &a).ok());
  ASSERT_TRUE(backend_->CopySlot(SlotId(0), SlotId(3)).ok());
  ASSERT_TRUE(Dec(*backend_, {SlotId(0), SlotId(3)}, {5, 5}, &a).ok());
  const double tol = Fp32() ? 1e-5 : 2e-2;
  EXPECT_TRUE(AllClose(a.Row(1), D(a.Row(0)), tol, tol));
  ASSERT_TRUE(backend_->ResetSlot(SlotId(3)).ok());
  ASSERT_TRUE(Dec(*backend_, {SlotId(3)}, {5}, &b).ok());
  TokenId five = 5;
  ChunkInput f{SlotId(1), {&five, 1}, true, true};
  ASSERT_TRUE(backend_->Prefill({&f, 1}, &fresh).ok());
  EXPECT_TRUE(AllClose(b.Row(0), D(fresh.Row(0)), tol, tol));
}

// Greedy sampling on the device reports what the host Sampler reports at temperature 0.
TEST_P(CudaBackendTest, DeviceGreedySamplingMatchesHostSampler) {
  std::vector<ChunkInput> chunks;
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < 3; ++i)
    prompts.push_back(RandomPrompt(4 + i, vocab(), 60 + static_cast<uint64_t>(i)));
  for (int i = 0; i < 3; ++i)
    chunks.push_back({SlotId(i), prompts[static_cast<size_t>(i)], true, true});
  Logits logits;
  ASSERT_TRUE(backend_->Prefill(chunks, &logits).ok());
  std::vector<SampledToken> got;
  ASSERT_TRUE(backend_->SampleGreedy(5, &got).ok());
  ASSERT_EQ(got.size(), 3u);
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = true;
  p.top_logprobs = 5;
  for (size_t r = 0; r < 3; ++r) {
    Sampler sampler(p, {}, {}, 1);
    std::vector<float> row(logits.Row(static_cast<int64_t>(r)).begin(),
                           logits.Row(static_cast<int64_t>(r)).end());
    const SampledToken want = sampler.Sample(row);
    EXPECT_EQ(got[r].id, want.id) << "row " << r;
    EXPECT_NEAR(got[r].logprob, want.logprob, 1e-4);
    ASSERT_EQ(got[r].top.size(), want.top.size());
    for (size_t k = 0; k < want.top.size(); ++k) {
      EXPECT_EQ(got[r].top[k].id, want.top[k].id) << "row " << r << " rank " << k;
      EXPECT_NEAR(got[r].top[k].logprob, want.top[k].logprob, 1e-4);
    }
  }
  // Decode without copying logits to the host, then sample there.
  ASSERT_TRUE(
      backend_
          ->DecodeOnDevice(std::vector<SlotId>{SlotId(0), SlotId(2)}, std::vector<TokenId>{1, 2})
          .ok());
  ASSERT_TRUE(backend_->SampleGreedy(0, &got).ok());
  EXPECT_EQ(got.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, CudaBackendTest,
    ::testing::Values(
        Variant{"base"}, Variant{"bias", DType::kF32, ComputeDType::kAuto, true},
        Variant{"no_conv_bias", DType::kF32, ComputeDType::kAuto, false, true},
        Variant{"untied_sharded", DType::kF32, ComputeDType::kAuto, false, false, true, false, 3},
        Variant{"mamba_ssm", DType::kF32, ComputeDType::kAuto, false, false, false, true},
        Variant{"odd_dims", DType::kF32, ComputeDType::kAuto, false, false, false, false, 1, 20, 5,
                3, 2, 3},
        Variant{"conv3_dstate64", DType::kF32, ComputeDType::kAuto, false, false, false, false, 1,
                48, 64, 3, 3},
        Variant{"bf16_as_f32", DType::kBF16, ComputeDType::kFloat32},
        Variant{"bf16", DType::kBF16, ComputeDType::kAuto, true},
        Variant{"f16", DType::kF16, ComputeDType::kAuto, false, false, true},
        Variant{"f32_as_bf16", DType::kF32, ComputeDType::kBFloat16}),
    [](const ::testing::TestParamInfo<Variant>& i) { return std::string(i.param.name); });

class CudaBackendErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    auto ck = Checkpoint::Open(testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok());
    checkpoint_ = *ck;
  }
  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
};

// Runs everywhere: without a device the CUDA engine refuses to start and `auto` picks the CPU.
TEST_F(CudaBackendErrors, DeviceSelection) {
  BackendOptions bo;
  bo.num_slots = 2;
  std::string why;
  const bool gpu = HaveGpu(&why);
  auto direct = cuda::CudaBackend::Create(checkpoint_, bo, 0);
  EXPECT_EQ(direct.ok(), gpu) << direct.status();
  if (!gpu) {
    EXPECT_EQ(direct.status().code(), absl::StatusCode::kFailedPrecondition) << direct.status();
  }
  EXPECT_EQ(cuda::CudaBackend::Create(checkpoint_, bo, 99).status().code(),
            gpu ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kFailedPrecondition);
  bo.device = "auto";
  auto chosen = CreateBackend(checkpoint_, bo);
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_EQ((*chosen)->Describe().rfind(gpu ? "cuda" : "cpu", 0), 0u) << (*chosen)->Describe();
  bo.device = "cuda:x";
  EXPECT_FALSE(CreateBackend(checkpoint_, bo).ok());
  if (!gpu) {
    bo.device = "cuda";
    EXPECT_FALSE(CreateBackend(checkpoint_, bo).ok());
  }
}

TEST_F(CudaBackendErrors, BadCallsAreInvalidArgument) {
  MAMBA_SKIP_WITHOUT_GPU();
  BackendOptions bo;
  bo.num_slots = 2;
  auto created = cuda::CudaBackend::Create(checkpoint_, bo, 0);
  ASSERT_TRUE(created.ok()) << created.status();
  cuda::CudaBackend& b = **created;
  Logits l;
  std::vector<TokenId> ok = {1, 2}, bad = {1, 96}, neg = {-1};
  auto code = [&](std::vector<ChunkInput> c) { return b.Prefill(c, &l).code(); };
  EXPECT_EQ(code({{SlotId(2), ok}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(-1), ok}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), ok}, {SlotId(0), ok}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), bad}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), neg}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SlotId(0), {}}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Dec(b, {SlotId(0)}, {}, &l).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Dec(b, {SlotId(0), SlotId(0)}, {1, 1}, &l).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.CopySlot(SlotId(0), SlotId(9)).code(), absl::StatusCode::kInvalidArgument);
  std::vector<SampledToken> s;
  EXPECT_EQ(b.SampleGreedy(21, &s).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(b.Prefill(std::vector<ChunkInput>{{SlotId(1), ok}}, &l).ok());
  EXPECT_TRUE(b.SampleGreedy(3, &s).ok());
  // num_slots = 0 sizes the pool from free memory.
  bo.num_slots = 0;
  auto auto_slots = cuda::CudaBackend::Create(checkpoint_, bo, 0);
  ASSERT_TRUE(auto_slots.ok()) << auto_slots.status();
  EXPECT_GE((*auto_slots)->num_slots(), 1);
  bo.num_slots = -1;
  EXPECT_EQ(cuda::CudaBackend::Create(checkpoint_, bo, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mamba::engine
