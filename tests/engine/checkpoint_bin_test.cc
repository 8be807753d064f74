// A model directory with pytorch_model.bin (whole or sharded, HF or mamba_ssm layout) opens as
// the same model as its safetensors twin: same fingerprint, bit-identical CPU logits.
#include <cstring>
#include <filesystem>
#include <string>

#include "engine/backend_factory.h"
#include "engine/checkpoint.h"
#include "engine/pytorch_bin.h"
#include "engine/safetensors.h"
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
  bo.max_step_tokens = 64;
  auto b = CreateBackend(std::move(ck), bo);
  EXPECT_TRUE(b.ok()) << b.status();
  Logits logits;
  if (!b.ok()) return logits;
  const auto prompt = RandomPrompt(9, (*b)->config().vocab_size, 7);
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

// A model directory torch wrote as mamba_ssm does (make_golden.py): mamba_ssm config.json,
// backbone.embedding.weight, lm_head.weight saved as the embedding itself. It loads tied and
// computes what the same tensors as safetensors compute, bit for bit.
TEST(CheckpointBinTest, TorchWrittenMambaSsmModel) {
  const fs::path golden = SourceDir() / "tests/engine/testdata/pytorch_bin/tiny_mamba_ssm";
  auto bin = Checkpoint::Open(golden);
  ASSERT_TRUE(bin.ok()) << bin.status();
  EXPECT_EQ((*bin)->lm_head(), nullptr) << "a head stored as the embedding's bytes is tied";
  EXPECT_TRUE((*bin)->config().tie_word_embeddings);
  TempDir dir;
  fs::copy_file(golden / "config.json", dir.path() / "config.json");
  auto f = PytorchBinFile::Open(golden / "pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<TensorToWrite> tensors;
  for (const TensorInfo& t : (*f)->tensors()) {
    if (t.name == "lm_head.weight") continue;
    tensors.push_back({t.name, t.dtype, t.shape, {t.data, t.nbytes}});
  }
  ASSERT_TRUE(WriteSafetensors(dir.path() / "model.safetensors", tensors).ok());
  auto st = Checkpoint::Open(dir.path());
  ASSERT_TRUE(st.ok()) << st.status();
  const Logits la = PrefillLogits(*st), lb = PrefillLogits(*bin);
  ASSERT_EQ(la.data.size(), lb.data.size());
  ASSERT_FALSE(la.data.empty());
  EXPECT_EQ(std::memcmp(la.data.data(), lb.data.data(), la.data.size() * sizeof(float)), 0);
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
