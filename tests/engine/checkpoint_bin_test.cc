// A model directory with pytorch_model.bin (whole or sharded, HF or mamba_ssm layout) opens as
// the same model as its safetensors twin: same fingerprint, bit-identical CPU logits.
#include <cstring>
#include <filesystem>
#include <string>

#include "engine/backend_factory.h"
#include "engine/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::RandomPrompt;
using testing::SmallConfig;
using testing::SourceDir;
using testing::TempDir;
using testing::WriteModel;

struct Case {
  const char* name;
  kernels::DType dtype;
  int shards;
  bool untied, mamba_ssm;
};

Logits PrefillLogits(std::shared_ptr<const Checkpoint> ck) {
  BackendOptions bo;
  bo.device = "cpu";
  bo.num_slots = 1;
  auto b = CreateBackend(std::move(ck), bo);
  EXPECT_TRUE(b.ok()) << b.status();
  Logits logits;
  if (!b.ok()) return logits;
  const auto prompt = RandomPrompt(9, SmallConfig().vocab_size, 7);
  ChunkInput c{SlotId(0), prompt, true, true};
  c.all_logits = true;
  EXPECT_TRUE((*b)->Prefill({&c, 1}, &logits).ok());
  return logits;
}

TEST(CheckpointBinTest, PytorchBinLoadsAsTheSameModelAsSafetensors) {
  for (const Case& c : {Case{"f32", kernels::DType::kF32, 1, false, false},
                        Case{"bf16-untied-2-shards", kernels::DType::kBF16, 2, true, false},
                        Case{"f16-mamba-ssm", kernels::DType::kF16, 1, false, true},
                        Case{"f32-mamba-ssm-3-shards", kernels::DType::kF32, 3, false, true}}) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    RandomCheckpointOptions o;
    o.config = SmallConfig();
    o.dtype = c.dtype;
    o.seed = 5;
    o.shards = c.shards;
    o.untied_head = c.untied;
    o.mamba_ssm_layout = c.mamba_ssm;
    o.perturb_constants = true;
    const fs::path st = WriteModel(dir, "st", o);
    o.format = CheckpointFormat::kPytorchBin;
    const fs::path bin = WriteModel(dir, "bin", o);
    EXPECT_TRUE(
        fs::exists(bin / (c.shards > 1 ? "pytorch_model.bin.index.json" : "pytorch_model.bin")));
    EXPECT_FALSE(fs::exists(bin / "model.safetensors"));
    auto a = Checkpoint::Open(st);
    ASSERT_TRUE(a.ok()) << a.status();
    auto b = Checkpoint::Open(bin);
    ASSERT_TRUE(b.ok()) << b.status();
    // The same config and tensor bytes: the same model, whatever the files.
    EXPECT_EQ((*a)->fingerprint(), (*b)->fingerprint());
    EXPECT_EQ((*a)->stored_bytes(), (*b)->stored_bytes());
    const Logits la = PrefillLogits(*a), lb = PrefillLogits(*b);
    ASSERT_EQ(la.data.size(), lb.data.size());
    ASSERT_FALSE(la.data.empty());
    EXPECT_EQ(std::memcmp(la.data.data(), lb.data.data(), la.data.size() * sizeof(float)), 0);
  }
}

TEST(CheckpointBinTest, RefusesAPickleThatRunsCode) {
  TempDir dir;
  RandomCheckpointOptions o;
  o.config = SmallConfig();
  const fs::path m = WriteModel(dir, "m", o);
  fs::remove(m / "model.safetensors");
  fs::copy_file(SourceDir() / "tests/engine/testdata/pytorch_bin/os_system.bin",
                m / "pytorch_model.bin");
  auto ck = Checkpoint::Open(m);
  ASSERT_FALSE(ck.ok());
  EXPECT_THAT(std::string(ck.status().message()), HasSubstr("global 'posix.system'"));
  fs::remove(m / "pytorch_model.bin");
  ck = Checkpoint::Open(m);
  ASSERT_FALSE(ck.ok());
  EXPECT_THAT(std::string(ck.status().message()), HasSubstr("pytorch_model.bin.index.json"));
}

}  // namespace
}  // namespace mamba::engine
