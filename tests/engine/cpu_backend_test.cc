// The CPU engine: the backend suite (tests/engine/backend_suite.h) instantiated for it, and what
// only the CPU engine has (its default slot count, its refusal of float16 without a fast GEMM).
#include "engine/cpu/cpu_backend.h"

#include "engine/backend_factory.h"
#include "gtest/gtest.h"
#include "kernels/cpu/gemm.h"
#include "tests/engine/backend_suite.h"
#include "tests/engine/lora_backend_suite.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

using kernels::DType;
using testing::BackendDevice;
using testing::BackendErrorsTest;
using testing::BackendTest;
using testing::LoraBackendTest;
using testing::TempDir;

BackendDevice CpuDevice() {
  BackendDevice d;
  d.name = "cpu";
  d.unavailable = [] { return std::string(); };
  d.unsupported = [](DType t) -> std::string {
    if (t == DType::kF16 && !kernels::cpu::GemmHasFastPath(DType::kF16)) {
      return "no float16 GEMM on this CPU";
    }
    return "";
  };
  d.create = [](std::shared_ptr<const Checkpoint> checkpoint,
                const BackendOptions& options) -> absl::StatusOr<std::unique_ptr<Backend>> {
    auto b = cpu::CpuBackend::Create(std::move(checkpoint), options);
    if (!b.ok()) return b.status();
    return std::unique_ptr<Backend>(std::move(*b));
  };
  // The packed GEMM computes a row the same way whatever the batch, and so does the int8 GEMM
  // (exact integer sums, per-row activation scales); the oneDNN fallback does not promise it
  // (kernels/cpu/gemm.cc).
  d.batch_invariant = [](const Backend& b) {
    return b.compute_dtype() == DType::kI8 || b.Describe().find("packed") != std::string::npos;
  };
  return d;
}

INSTANTIATE_TEST_SUITE_P(Cpu, BackendTest, ::testing::ValuesIn(testing::BackendCases(CpuDevice())),
                         testing::CaseName);
INSTANTIATE_TEST_SUITE_P(Cpu, BackendErrorsTest, ::testing::Values(CpuDevice()),
                         testing::DeviceName);
INSTANTIATE_TEST_SUITE_P(Cpu, LoraBackendTest, ::testing::ValuesIn(testing::LoraCases(CpuDevice())),
                         testing::LoraCaseName);

// An adapter another backend laid out is refused, not reinterpreted.
TEST(CpuBackendLora, ForeignAdapterIsInvalidArgument) {
  struct Foreign : AdapterWeights {
    int64_t bytes() const override { return 0; }
  } foreign;
  TempDir dir;
  RandomCheckpointOptions o;
  o.config = testing::SmallConfig();
  auto ck = Checkpoint::Open(testing::WriteModel(dir, "m", o));
  ASSERT_TRUE(ck.ok());
  BackendOptions bo;
  bo.num_slots = 2;
  auto b = cpu::CpuBackend::Create(*ck, bo);
  ASSERT_TRUE(b.ok()) << b.status();
  const std::vector<TokenId> prompt = {1, 2, 3};
  ChunkInput c{SlotId(0), prompt, true, true, false, &foreign};
  Logits logits;
  const absl::Status s = (*b)->Prefill({&c, 1}, &logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("not loaded by the CPU engine"), std::string::npos) << s;
}

TEST(CpuBackendOptions, UnsupportedOptions) {
  TempDir dir;
  RandomCheckpointOptions o;
  o.config = testing::SmallConfig();
  auto ck = Checkpoint::Open(testing::WriteModel(dir, "m", o));
  ASSERT_TRUE(ck.ok());
  std::shared_ptr<const Checkpoint> checkpoint = *ck;
  BackendOptions bo;
  bo.num_slots = -1;
  EXPECT_FALSE(cpu::CpuBackend::Create(checkpoint, bo).ok());
  bo.num_slots = 0;  // automatic
  auto automatic = cpu::CpuBackend::Create(checkpoint, bo);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ((*automatic)->num_slots(), kDefaultCpuSlots);
  // With a memory size: automatic slots keep their states within a quarter of it, and explicit
  // slots whose states alone exceed it are refused.
  const int64_t per_slot = checkpoint->config().StateBytesPerSequence();
  bo.memory_bytes = 4 * 5 * per_slot + 1;
  auto sized = cpu::CpuBackend::Create(checkpoint, bo);
  ASSERT_TRUE(sized.ok()) << sized.status();
  EXPECT_EQ((*sized)->num_slots(), 5);
  bo.num_slots = 21;
  EXPECT_EQ(cpu::CpuBackend::Create(checkpoint, bo).status().code(),
            absl::StatusCode::kResourceExhausted);
  bo.num_slots = 20;
  EXPECT_TRUE(cpu::CpuBackend::Create(checkpoint, bo).ok());
  bo.memory_bytes = 0;
  bo.num_slots = 1;
  bo.device = "tpu";
  EXPECT_EQ(CreateBackend(checkpoint, bo).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseComputeDType("int4").ok());
  bo.device = "cpu";
  bo.dtype = ComputeDType::kFloat16;
  auto f16 = CreateBackend(checkpoint, bo);
  if (!kernels::cpu::GemmHasFastPath(DType::kF16)) {
    ASSERT_FALSE(f16.ok());
    EXPECT_NE(std::string(f16.status().message()).find("float16"), std::string::npos);
  } else {
    EXPECT_TRUE(f16.ok());
  }
}

}  // namespace
}  // namespace mamba::engine
