// The CUDA engine: the backend suites (tests/engine/backend_suite.h, lora_backend_suite.h)
// instantiated for it, and what only the CUDA engine has: logits and greedy tokens against the
// CPU engine, graphs against eager steps, greedy draws of the fast decode path against the host
// Sampler, device selection. Label `gpu`; skips without a usable device (fails under
// MAMBA_REQUIRE_GPU=1), except the checks of what happens without one.
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/backend_factory.h"
#include "engine/checkpoint_quantizer.h"
#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
#include "tests/engine/backend_suite.h"
#include "tests/engine/lora_backend_suite.h"
#include "tests/engine/reference_model.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using kernels::DType;
using testing::AllClose;
using testing::BackendDevice;
using testing::BackendErrorsTest;
using testing::BackendTest;
using testing::Dec;
using testing::LoraBackendTest;
using testing::RandomPrompt;
using testing::TempDir;
using Variant = testing::BackendVariant;

bool HaveGpu(std::string* why) { return kernels::cuda::UsableDeviceCount(why) > 0; }

BackendDevice CudaDevice() {
  BackendDevice d;
  d.name = "cuda";
  d.unavailable = [] {
    std::string why;
    return HaveGpu(&why) ? std::string() : why;
  };
  d.unsupported = [](DType) { return std::string(); };
  d.create = [](std::shared_ptr<const Checkpoint> checkpoint,
                const BackendOptions& options) -> absl::StatusOr<std::unique_ptr<Backend>> {
    auto b = cuda::CudaBackend::Create(std::move(checkpoint), options, 0);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(std::move(*b));
  };
  d.batch_invariant = [](const Backend&) { return false; };  // cuBLAS picks kernels by shape
  // int8: weight-only (bf16 activations, not quantized); dt_proj int8 too, as on the CPU.
  d.int8_scheme.int8_activations = false;
  d.int8_scheme.int8_dt_proj = true;
  d.int8_tolerances = DType::kBF16;
  return d;
}

INSTANTIATE_TEST_SUITE_P(Cuda, BackendTest,
                         ::testing::ValuesIn(testing::BackendCases(CudaDevice())),
                         testing::CaseName);
INSTANTIATE_TEST_SUITE_P(Cuda, BackendErrorsTest, ::testing::Values(CudaDevice()),
                         testing::DeviceName);
// LoRA adapters (issue 15) against the float64 reference; cuda_lora_test has the CUDA-only cases.
INSTANTIATE_TEST_SUITE_P(Cuda, LoraBackendTest,
                         ::testing::ValuesIn(testing::LoraCases(CudaDevice())),
                         testing::LoraCaseName);

std::vector<double> D(std::span<const float> v) { return {v.begin(), v.end()}; }

TokenId Argmax(std::span<const float> row) {
  return static_cast<TokenId>(std::max_element(row.begin(), row.end()) - row.begin());
}

// The CUDA-only cases, over the same variants.
class CudaBackendTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    MAMBA_SKIP_UNLESS_AVAILABLE(CudaDevice());
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
    bo.int8_group_size = GetParam().int8_group_size;
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
    bo.int8_group_size = GetParam().int8_group_size;
    bo.num_slots = slots;
    auto b = cpu::CpuBackend::Create(checkpoint_, bo);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  bool Fp32() const { return backend_->compute_dtype() == DType::kF32; }
  // Against the CPU engine (both within the tolerance above of float64).
  double CpuTol() const { return Fp32() ? 2e-4 : 6e-2; }
  int64_t vocab() const { return checkpoint_->config().vocab_size; }

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<testing::ReferenceModel> reference_;
  std::unique_ptr<cuda::CudaBackend> backend_;
};

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

// A quantized checkpoint (WriteInt8Checkpoint, mamba-quantize) runs with its int8 matrices and
// scales uploaded as stored, dt_proj included (int8 with fp32 inputs): prefill and decode against
// the weight-only reference that quantizes dt_proj too, at bf16 tolerances, and bitwise what
// --dtype int8 on the original computes (dt_proj quantized at load there).
TEST_P(CudaBackendTest, QuantizedCheckpointMatchesReference) {
  if (GetParam().compute != ComputeDType::kInt8) GTEST_SKIP() << "int8 variants only";
  QuantizeCheckpointOptions qo;
  qo.group_size = GetParam().int8_group_size;
  auto written = WriteInt8Checkpoint(*checkpoint_, dir_.path() / "int8", qo);
  ASSERT_TRUE(written.ok()) << written.status();
  auto q = Checkpoint::Open(dir_.path() / "int8");
  ASSERT_TRUE(q.ok()) << q.status();
  BackendOptions bo;  // dtype auto: the checkpoint's int8
  bo.num_slots = 2;
  auto b = cuda::CudaBackend::Create(*q, bo, 0);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->compute_dtype(), DType::kI8);
  testing::ReferenceOptions ro;
  ro.int8 = true;
  ro.int8_group_size = GetParam().int8_group_size;
  ro.int8_activations = false;
  ro.int8_dt_proj = true;
  testing::ReferenceModel ref(*checkpoint_, ro);
  const auto tol = testing::TolerancesFor(DType::kBF16).reference;
  const auto prompt = RandomPrompt(13, vocab(), 41);
  auto loaded = MakeBackend(2, bo.max_step_tokens);  // --dtype int8 on the float checkpoint
  ASSERT_NE(loaded, nullptr);
  Logits got, want;
  ChunkInput in{SlotId(1), prompt, true, true};
  ASSERT_TRUE((*b)->Prefill({&in, 1}, &got).ok());
  ASSERT_TRUE(loaded->Prefill({&in, 1}, &want).ok());
  EXPECT_TRUE(AllClose(got.Row(0), ref.Forward(prompt), tol));
  EXPECT_TRUE(std::ranges::equal(got.Row(0), want.Row(0))) << "prefill";
  for (TokenId t : {TokenId{3}, TokenId{7}}) {
    ASSERT_TRUE(Dec(**b, {SlotId(1)}, {t}, &got).ok());
    ASSERT_TRUE(Dec(*loaded, {SlotId(1)}, {t}, &want).ok());
    EXPECT_TRUE(AllClose(got.Row(0), ref.Forward({&t, 1}), tol)) << "token " << t;
    EXPECT_TRUE(std::ranges::equal(got.Row(0), want.Row(0))) << "token " << t;
  }
}

// The fast decode path's greedy draws (sampling on the device) report what the host Sampler
// reports at temperature 0 for the same step's logits (the step run twice from saved states),
// and a row without a rule gets its logits.
TEST_P(CudaBackendTest, DecodeAndDrawGreedyMatchesHostSampler) {
  const std::vector<SlotId> slots = {SlotId(2), SlotId(0), SlotId(1)};
  std::vector<std::vector<TokenId>> prompts;
  std::vector<ChunkInput> chunks;
  for (size_t i = 0; i < 3; ++i) {
    prompts.push_back(RandomPrompt(4 + static_cast<int64_t>(i), vocab(), 60 + i));
  }
  for (size_t i = 0; i < 3; ++i) chunks.push_back({slots[i], prompts[i], true, false});
  Logits logits;
  ASSERT_TRUE(backend_->Prefill(chunks, &logits).ok());
  std::vector<std::vector<float>> saved(3);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(backend_->SaveSlot(slots[i], &saved[i]).ok());
  const std::vector<TokenId> tokens = RandomPrompt(3, vocab(), 70);
  ASSERT_TRUE(backend_->Decode(slots, tokens, &logits).ok());
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(backend_->RestoreSlot(slots[i], saved[i]).ok());
  DrawRule greedy;
  greedy.logprobs = true;
  greedy.top_logprobs = 5;
  const std::vector<std::optional<DrawRule>> rules = {greedy, std::nullopt, greedy};
  std::vector<SampledToken> got;
  Logits rest;
  ASSERT_TRUE(backend_->DecodeAndDraw(slots, tokens, rules, &got, &rest).ok());
  ASSERT_EQ(got.size(), 3u);
  ASSERT_EQ(rest.rows, 1);
  EXPECT_TRUE(AllClose(rest.Row(0), D(logits.Row(1)), 1e-6, 1e-6));
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = true;
  p.top_logprobs = 5;
  for (int64_t r : {0, 2}) {
    Sampler sampler(p, {}, {}, 1);
    std::vector<float> row(logits.Row(r).begin(), logits.Row(r).end());
    const SampledToken want = sampler.Sample(row);
    const SampledToken& g = got[static_cast<size_t>(r)];
    EXPECT_EQ(g.id, want.id) << "row " << r;
    EXPECT_NEAR(g.logprob, want.logprob, 1e-5);
    ASSERT_EQ(g.top.size(), want.top.size());
    for (size_t k = 0; k < want.top.size(); ++k) {
      EXPECT_EQ(g.top[k].id, want.top[k].id) << "row " << r << " rank " << k;
      EXPECT_NEAR(g.top[k].logprob, want.top[k].logprob, 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaBackendTest, ::testing::ValuesIn(testing::BackendVariants()),
                         [](const ::testing::TestParamInfo<Variant>& i) {
                           return std::string(i.param.name);
                         });

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

// What only the CUDA engine has to check (the common argument checks are in the suite; those of
// DecodeAndDraw in cuda_draw_test): the code of a negative slot count.
TEST_F(CudaBackendErrors, SlotCountArgument) {
  MAMBA_SKIP_UNLESS_AVAILABLE(CudaDevice());
  BackendOptions bo;
  bo.num_slots = -1;
  EXPECT_EQ(cuda::CudaBackend::Create(checkpoint_, bo, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mamba::engine
