// The random PEFT LoRA writer (engine/lora/lora_writer.h): the size of its update against the
// base model, PEFT's zero-B initialisation, the keys of its adapter_config.json; and the
// mamba-make-lora tool end to end.
#include "engine/lora/lora_writer.h"

#include <sys/wait.h>

#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/lora/lora_test_support.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine {
namespace {

using ::mamba::testing::RunCommand;

namespace fs = std::filesystem;
using ::mamba::engine::testing::MustLoad;
using ::mamba::engine::testing::Options;
using ::mamba::engine::testing::Preset;
using ::mamba::engine::testing::Write;
using ::mamba::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ojson = nlohmann::ordered_json;

// The writer's update is of the order of 20 % of the base module's output on a random
// checkpoint (std over std), so that tests see it while activations stay finite.
TEST(LoraWriterTest, UpdateIsAFractionOfTheBaseOutput) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomCheckpointOptions co;
  co.config = c;
  ASSERT_TRUE(WriteRandomCheckpoint(co, t.path() / "model").ok());
  auto model = Checkpoint::Open(t.path() / "model");
  ASSERT_TRUE(model.ok()) << model.status();
  auto a = MustLoad(Write(t, "a", Options(c)), c);
  ASSERT_NE(a, nullptr);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal;
  auto ratio = [&](const TensorInfo& w, const LoraModule& m) {
    std::vector<float> wf(static_cast<size_t>(w.NumElements()));
    kernels::ConvertToF32(w.data, w.dtype, wf.data(), w.NumElements());
    double base = 0, lora = 0;
    for (int trial = 0; trial < 32; ++trial) {
      std::vector<double> x(static_cast<size_t>(m.in)), ax(static_cast<size_t>(m.rank), 0.0);
      for (double& v : x) v = normal(rng);
      for (int64_t r = 0; r < m.rank; ++r) {
        for (int64_t i = 0; i < m.in; ++i) ax[r] += m.a[r * m.in + i] * x[i];
      }
      for (int64_t o = 0; o < m.out; ++o) {
        double y = 0, u = 0;
        for (int64_t i = 0; i < m.in; ++i) y += wf[o * m.in + i] * x[i];
        for (int64_t r = 0; r < m.rank; ++r) u += m.b[o * m.rank + r] * ax[r];
        base += y * y;
        lora += (m.scale * u) * (m.scale * u);
      }
    }
    return std::sqrt(lora / base);
  };
  const LayerTensors& l = (*model)->layer(1);
  for (const auto& [w, target] :
       {std::pair{l.in_proj, LoraTarget::kInProj}, std::pair{l.x_proj, LoraTarget::kXProj},
        std::pair{l.out_proj, LoraTarget::kOutProj}}) {
    const double r = ratio(*w, *a->layer_module(1, target));
    EXPECT_GT(r, 0.1) << Name(target);
    EXPECT_LT(r, 0.3) << Name(target);
  }
  // Embeddings: the update's std over the embedding's (N(0, 0.02)).
  const LoraModule& e = *a->embeddings();
  double sum = 0;
  for (int64_t tok = 0; tok < e.in; ++tok) {
    for (int64_t o = 0; o < e.out; ++o) {
      double u = 0;
      for (int64_t r = 0; r < e.rank; ++r) u += e.b[o * e.rank + r] * e.a[r * e.in + tok];
      sum += (e.scale * u) * (e.scale * u);
    }
  }
  const double emb = std::sqrt(sum / static_cast<double>(e.in * e.out)) / 0.02;
  EXPECT_GT(emb, 0.1);
  EXPECT_LT(emb, 0.3);
}

TEST(LoraWriterTest, ZeroBStdIsPeftsInitialisation) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c);
  o.b_std = 0;
  auto a = MustLoad(Write(t, "a", o), c);
  const std::vector<float>& b = a->layer_module(0, LoraTarget::kInProj)->b;
  EXPECT_TRUE(std::all_of(b.begin(), b.end(), [](float v) { return v == 0; }));
}

TEST(LoraWriterTest, ConfigHasEveryKeyPeft013Writes) {
  TempDir t;
  RandomLoraOptions o = Options(Preset("tiny"));
  o.rank_pattern = {{"x_proj", 4}};
  o.layers_to_transform = {0};
  const fs::path dir = Write(t, "a", o);
  std::ifstream in(dir / "adapter_config.json");
  const ojson j = ojson::parse(in);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_THAT(keys,
              ElementsAre("alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias",
                          "fan_in_fan_out", "inference_mode", "init_lora_weights",
                          "layer_replication", "layers_pattern", "layers_to_transform",
                          "loftq_config", "lora_alpha", "lora_dropout", "megatron_config",
                          "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern",
                          "revision", "target_modules", "task_type", "use_dora", "use_rslora"));
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["lora_alpha"], 16);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());
  EXPECT_EQ(j["rank_pattern"], (ojson{{"x_proj", 4}}));
  EXPECT_EQ(j["layers_to_transform"], ojson::array({0}));
}

// The tool end to end: --base reads a model directory's config.json; flags reach the adapter;
// bad flags exit 2 naming the cause.
TEST(MakeLoraTool, WritesWhatTheFlagsSay) {
  TempDir t;
  RandomCheckpointOptions co;
  co.config = Preset("falcon-tiny");
  ASSERT_TRUE(WriteRandomCheckpoint(co, t.path() / "model").ok());
  const fs::path out = t.path() / "lora";
  int status = 0;
  std::string text = RunCommand(
      absl::StrCat(MAMBA_MAKE_LORA_BIN, " --base ", (t.path() / "model").string(), " --out ",
                   out.string(),
                   " --targets in_proj,dt_proj --rank 4 --alpha 8 --rslora --dtype float16 "
                   "--rank-pattern dt_proj=2 --alpha-pattern in_proj=2 --layers 1 --format bin "
                   "--seed 3"),
      &status);
  ASSERT_EQ(status, 0) << text;
  EXPECT_THAT(text, HasSubstr("in_proj,dt_proj, max rank 4, float16"));
  EXPECT_TRUE(fs::exists(out / "adapter_model.bin"));
  auto a = MustLoad(out, co.config);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kInProj), nullptr);
  EXPECT_EQ(a->layer_module(1, LoraTarget::kDtProj)->rank, 2);
  EXPECT_EQ(a->layer_module(1, LoraTarget::kInProj)->scale, 1.0f);  // 2 / sqrt(4)
  EXPECT_THAT(text, HasSubstr(a->fingerprint()));

  const std::string bin = MAMBA_MAKE_LORA_BIN;
  const fs::path bad = t.path() / "bad";
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--preset tiny --targets conv1d", "conv1d LoRA is not supported"},
           {"--preset tiny --targets q_proj", "'q_proj' matches no module"},
           {"--preset tiny --dtype int8", "--dtype must be"},
           {"--preset tiny --format gguf", "--format must be"},
           {"--preset tiny --rank-pattern in_proj", "--rank-pattern: 'in_proj' is not NAME=VALUE"},
           {"--preset tiny --layers 0,x", "--layers: bad index 'x'"},
           {"--preset nope", "nope"},
           {"", "exactly one of --base DIR and --preset NAME"},
           {"--preset tiny --bogus", "--bogus"}}) {
    text = RunCommand(absl::StrCat(bin, " --out ", bad.string(), " ", flags), &status);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << flags << ": " << text;
    EXPECT_THAT(text, HasSubstr(message)) << flags;
  }
}

}  // namespace
}  // namespace mamba::engine
