// Quantized (int8) checkpoints (issue 17): WriteInt8Checkpoint / mamba-quantize write them, and
// Checkpoint::Open + the CPU engine compute exactly what quantizing at load computes (bitwise
// logits, dtype auto vs --dtype int8 on the original); malformed ones are refused by name.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend_factory.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_quantizer.h"
#include "engine/checkpoint_writer.h"
#include "engine/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/reference_model.h"
#include "tests/engine/test_support.h"
#include "tests/support/server_process.h"

namespace mamba::engine {
namespace {

using ::mamba::testing::RunCommand;

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AnyOf;
using testing::BackendVariant;
using testing::Dec;
using ::testing::HasSubstr;
using testing::OpenVariantModel;
using testing::RandomPrompt;
using testing::SmallConfig;
using testing::TempDir;
using testing::WriteModel;
using DType = kernels::DType;

std::unique_ptr<Backend> MakeCpu(std::shared_ptr<const Checkpoint> ck, ComputeDType dtype,
                                 int64_t group) {
  BackendOptions bo;
  bo.device = "cpu";
  bo.dtype = dtype;
  bo.num_slots = 2;
  bo.max_step_tokens = 64;
  bo.int8_group_size = group;
  auto b = CreateBackend(std::move(ck), bo);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// Logits of a prefill (every position) and then `steps` greedy decode steps, concatenated.
std::vector<float> RunLogits(Backend& b, int steps) {
  const auto prompt = RandomPrompt(13, b.config().vocab_size, 3);
  ChunkInput c{SlotId(1), prompt, true, true};
  c.all_logits = true;
  Logits l;
  EXPECT_TRUE(b.Prefill({&c, 1}, &l).ok());
  std::vector<float> out = l.data;
  for (int s = 0; s < steps && !l.data.empty(); ++s) {
    const float* last = l.data.data() + (l.rows - 1) * l.vocab;
    const TokenId next = static_cast<TokenId>(std::max_element(last, last + l.vocab) - last);
    EXPECT_TRUE(Dec(b, {SlotId(1)}, {next}, &l).ok());
    out.insert(out.end(), l.data.begin(), l.data.end());
  }
  return out;
}

struct Case {
  const char* name;
  BackendVariant variant;
  int64_t group;
};

std::vector<Case> Cases() {
  std::vector<Case> out;
  for (int64_t g : {0, 64}) {
    BackendVariant tied{"mamba1-tied"};
    tied.hidden = 128;
    BackendVariant untied{"mamba1-untied-bf16"};
    untied.hidden = 128, untied.untied = true, untied.stored = DType::kBF16, untied.use_bias = true;
    BackendVariant falcon{"falcon"};
    falcon.hidden = 128, falcon.falcon = true, falcon.untied = true;
    BackendVariant m2{"mamba2"};
    m2.hidden = 128, m2.head_dim = 32, m2.n_groups = 2, m2.stored = DType::kF16;
    BackendVariant m2ssm{"mamba2-ssm-bin"};
    m2ssm.hidden = 64, m2ssm.head_dim = 16, m2ssm.mlp = 32, m2ssm.mamba_ssm = true;
    BackendVariant odd{"mamba1-odd-k"};  // dt_rank 5, d_inner 2 x 34: k not a multiple of 4
    odd.hidden = 34, odd.dt_rank = 5;
    for (const BackendVariant& v : {tied, untied, falcon, m2, m2ssm, odd}) {
      out.push_back({v.name, v, g});
    }
  }
  return out;
}

class QuantizedCheckpointTest : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizedCheckpointTest, LoadsAndComputesWhatInt8AtLoadComputes) {
  const Case& c = GetParam();
  TempDir dir;
  auto orig = OpenVariantModel(dir, c.variant);
  ASSERT_TRUE(orig.ok()) << orig.status();
  QuantizeCheckpointOptions qo;
  qo.group_size = c.group;
  auto r = WriteInt8Checkpoint(**orig, dir.path() / "q", qo);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->shards, 1);
  EXPECT_LT(r->bytes_after, r->bytes_before);
  auto q = Checkpoint::Open(dir.path() / "q");
  ASSERT_TRUE(q.ok()) << q.status();
  const Checkpoint& ck = **q;
  EXPECT_TRUE(ck.quantization().int8);
  EXPECT_EQ(ck.quantization().group_size, c.group);
  EXPECT_EQ(ck.weight_dtype(), DType::kI8);
  EXPECT_EQ(ck.embedding().dtype, (*orig)->embedding().dtype) << "the embedding stays float";
  ASSERT_NE(ck.lm_head(), nullptr);
  EXPECT_EQ(ck.lm_head()->dtype, DType::kI8);
  ASSERT_NE(ck.lm_head_scale(), nullptr);
  EXPECT_EQ(ck.config().tie_word_embeddings, (*orig)->config().tie_word_embeddings);
  const bool m2 = ck.config().is_mamba2();
  for (int64_t i = 0; i < ck.config().num_hidden_layers; ++i) {
    const LayerTensors& L = ck.layer(i);
    EXPECT_EQ(L.in_proj->dtype, DType::kI8);
    EXPECT_NE(L.in_proj_scale, nullptr);
    EXPECT_NE(L.out_proj_scale, nullptr);
    EXPECT_EQ(L.x_proj_scale != nullptr, !m2);
    EXPECT_EQ(L.dt_proj_scale != nullptr, !m2);
    EXPECT_EQ(L.conv->dtype, (*orig)->layer(i).conv->dtype);
  }
  EXPECT_NE(ck.fingerprint(), (*orig)->fingerprint());
  // The same grouping the engine would use at load: the same logits, bit for bit.
  auto want = MakeCpu(*orig, ComputeDType::kInt8, c.group);
  auto got = MakeCpu(*q, ComputeDType::kAuto, 0);
  ASSERT_TRUE(want && got);
  EXPECT_EQ(got->compute_dtype(), DType::kI8);
  const std::vector<float> a = RunLogits(*want, 4), b = RunLogits(*got, 4);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  // The comparison sees the grouping: every variant has a matrix that the other group size
  // (0 vs 64) quantizes differently.
  auto regrouped = MakeCpu(*orig, ComputeDType::kInt8, c.group == 0 ? 64 : 0);
  ASSERT_TRUE(regrouped);
  const std::vector<float> d = RunLogits(*regrouped, 0);
  ASSERT_LE(d.size(), b.size());
  EXPECT_NE(0, std::memcmp(d.data(), b.data(), d.size() * sizeof(float)));
  // A group size asked for that differs from the checkpoint's is ignored (with a warning).
  auto other = MakeCpu(*q, ComputeDType::kInt8, 32);
  ASSERT_TRUE(other);
  const std::vector<float> o = RunLogits(*other, 1);
  ASSERT_LE(o.size(), b.size());
  EXPECT_EQ(0, std::memcmp(o.data(), b.data(), o.size() * sizeof(float)));
  // Computed in float32, the quantized model (dequantized weights) is close to the int8 run.
  auto f32 = MakeCpu(*q, ComputeDType::kFloat32, 0);
  ASSERT_TRUE(f32);
  EXPECT_EQ(f32->compute_dtype(), DType::kF32);
  const std::vector<float> f = RunLogits(*f32, 0);
  double worst = 0, mag = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    ASSERT_TRUE(std::isfinite(f[i]));
    worst = std::max(worst, static_cast<double>(std::fabs(f[i] - b[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(b[i])));
  }
  EXPECT_LT(worst, 0.05 * mag + 1e-3) << "float32 on the dequantized weights vs int8";
  // The float64 reference reads the stored int8 values too: it matches the int8 run with the
  // activations quantized as the engine does (at int8's tolerance: see TolerancesFor), and the
  // float32 run with them as they are.
  testing::ReferenceOptions int8_options;
  int8_options.int8 = true;
  int8_options.int8_group_size = c.group;
  testing::ReferenceModel ref_int8(ck, int8_options);
  testing::ReferenceModel ref_float(ck);
  const auto prompt = RandomPrompt(13, ck.config().vocab_size, 3);
  const auto V = static_cast<size_t>(ck.config().vocab_size);
  ASSERT_GE(f.size(), prompt.size() * V);
  for (size_t t = 0; t < prompt.size(); ++t) {
    const std::vector<double> want_int8 = ref_int8.Forward({&prompt[t], 1});
    const std::vector<double> want_float = ref_float.Forward({&prompt[t], 1});
    EXPECT_TRUE(testing::AllClose({b.data() + t * V, V}, want_int8, 5e-3, 5e-3)) << "int8, " << t;
    EXPECT_TRUE(testing::AllClose({f.data() + t * V, V}, want_float, 2e-4, 1e-3)) << "fp32, " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizedCheckpointTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string n = std::string(info.param.name) + "_g" +
                                           std::to_string(info.param.group);
                           for (char& ch : n) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// A quantized model directory to break: the small config, tied, per-row scales.
fs::path WriteQuantized(const TempDir& dir, int64_t group = 0) {
  RandomCheckpointOptions o;
  o.config = SmallConfig();
  o.seed = 9;
  const fs::path m = WriteModel(dir, "orig", o);
  auto ck = Checkpoint::Open(m);
  EXPECT_TRUE(ck.ok()) << ck.status();
  QuantizeCheckpointOptions qo;
  qo.group_size = group;
  auto r = WriteInt8Checkpoint(**ck, dir.path() / "q", qo);
  EXPECT_TRUE(r.ok()) << r.status();
  return dir.path() / "q";
}

// Rewrites model.safetensors with `edit` applied to its tensors (names, shapes, bytes).
void EditTensors(const fs::path& m,
                 const std::function<void(std::vector<TensorToWrite>&,
                                          std::vector<std::vector<std::byte>>&)>& edit) {
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<std::byte>> keep;
  {
    auto f = SafetensorsFile::Open(m / "model.safetensors");
    ASSERT_TRUE(f.ok()) << f.status();
    keep.reserve(256);
    for (const TensorInfo& t : (*f)->tensors()) {
      keep.emplace_back(t.data, t.data + t.nbytes);
      tensors.push_back({t.name, t.dtype, t.shape, keep.back()});
    }
  }
  edit(tensors, keep);
  ASSERT_TRUE(WriteSafetensors(m / "model.tmp", tensors).ok());
  fs::rename(m / "model.tmp", m / "model.safetensors");
}

void EditConfig(const fs::path& m, const std::function<void(json&)>& edit) {
  auto j = ReadJsonFile(m / "config.json");
  ASSERT_TRUE(j.ok());
  edit(*j);
  ASSERT_TRUE(WriteJsonFile(m / "config.json", *j).ok());
}

std::string OpenError(const fs::path& m) {
  auto ck = Checkpoint::Open(m);
  EXPECT_FALSE(ck.ok());
  return ck.ok() ? "" : std::string(ck.status().message());
}

TEST(QuantizedCheckpointRefusals, MissingScale) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  EditTensors(m, [](auto& t, auto&) {
    std::erase_if(t, [](const TensorToWrite& x) {
      return x.name == "backbone.layers.1.mixer.x_proj.weight_scale";
    });
  });
  EXPECT_THAT(OpenError(m),
              HasSubstr("missing tensor 'backbone.layers.1.mixer.x_proj.weight_scale' "
                        "[36, 1] (the scales of int8"));
}

TEST(QuantizedCheckpointRefusals, WrongScaleShape) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  EditConfig(m, [](json& j) { j["quantization_config"]["group_size"] = 16; });
  EXPECT_THAT(OpenError(m),
              HasSubstr("model.safetensors: tensor 'lm_head.weight_scale' is float32 [96, 1]; the "
                        "scales of 'lm_head.weight' with group_size 16 are float32 [96, 2]"));
}

TEST(QuantizedCheckpointRefusals, Int8TensorOutsideTheListedModules) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  // out_proj no longer listed: its I8 matrix is not allowed (and the float config is not int8).
  EditConfig(m, [](json& j) {
    j["quantization_config"]["modules"] = {"in_proj", "x_proj", "dt_proj", "lm_head"};
  });
  const std::string err = OpenError(m);
  EXPECT_THAT(err, HasSubstr("model.safetensors: tensor 'backbone.layers."));
  EXPECT_THAT(err, HasSubstr("out_proj.weight"));
  EXPECT_THAT(err, AnyOf(HasSubstr("is not a matrix of the modules quantization_config lists"),
                         HasSubstr("unexpected tensor")));
  // An I8 tensor in a checkpoint without quantization_config.
  EditConfig(m, [](json& j) { j.erase("quantization_config"); });
  EXPECT_THAT(OpenError(m),
              HasSubstr("is int8 but config.json has no 'mambaserve_int8' quantization_config"));
}

TEST(QuantizedCheckpointRefusals, ListedModuleStoredAsFloat) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  EditTensors(m, [](auto& t, auto& keep) {
    for (TensorToWrite& x : t) {
      if (x.name != "backbone.layers.0.mixer.dt_proj.weight") continue;
      keep.emplace_back(x.bytes.size() * 4);
      x.dtype = DType::kF32;
      x.bytes = keep.back();
    }
  });
  EXPECT_THAT(OpenError(m), HasSubstr("model.safetensors: tensor "
                                      "'backbone.layers.0.mixer.dt_proj.weight' is float32 but "
                                      "config.json's quantization_config lists 'dt_proj' as int8"));
}

TEST(QuantizedCheckpointRefusals, OtherQuantMethods) {
  for (const char* method : {"gptq", "awq", "bitsandbytes", "compressed-tensors", "fp8"}) {
    TempDir dir;
    const fs::path m = WriteQuantized(dir);
    EditConfig(m, [&](json& j) {
      j["quantization_config"] = {{"quant_method", method}, {"bits", 4}};
    });
    EXPECT_THAT(OpenError(m),
                HasSubstr(std::string("config.json: quantization_config.quant_method '") + method +
                          "' is not supported"));
  }
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  EditConfig(m, [](json& j) { j["quantization_config"].erase("quant_method"); });
  EXPECT_THAT(OpenError(m), HasSubstr("quantization_config has no quant_method"));
  EditConfig(m, [](json& j) {
    j["quantization_config"] = {
        {"quant_method", "mambaserve_int8"}, {"bits", 4}, {"modules", {"in_proj"}}};
  });
  EXPECT_THAT(OpenError(m), HasSubstr("quantization_config.bits is 4"));
  EditConfig(m, [](json& j) {
    j["quantization_config"] = {{"quant_method", "mambaserve_int8"}, {"modules", {"conv1d"}}};
  });
  EXPECT_THAT(OpenError(m), HasSubstr("quantization_config.modules: 'conv1d' is unknown"));
  EditConfig(m, [](json& j) {
    j["quantization_config"] = {
        {"quant_method", "mambaserve_int8"}, {"group_size", 6}, {"modules", {"in_proj"}}};
  });
  EXPECT_THAT(OpenError(m), HasSubstr("quantization_config.group_size is 6"));
}

TEST(QuantizedCheckpointRefusals, NegativeOrNanScale) {
  for (float bad : {-0.5f, std::nanf(""), INFINITY}) {
    TempDir dir;
    const fs::path m = WriteQuantized(dir, 16);
    EditTensors(m, [&](auto& t, auto& keep) {
      for (TensorToWrite& x : t) {
        if (x.name != "backbone.layers.0.mixer.in_proj.weight_scale") continue;
        keep.emplace_back(x.bytes.begin(), x.bytes.end());
        std::memcpy(keep.back().data() + 4 * 3, &bad, 4);  // row 1, group 1 of [128, 2]
        x.bytes = keep.back();
      }
    });
    EXPECT_THAT(OpenError(m),
                HasSubstr("tensor 'backbone.layers.0.mixer.in_proj.weight_scale' holds"));
    EXPECT_THAT(OpenError(m), HasSubstr("at [1, 1] (scales must be finite and >= 0)"));
  }
}

// The fingerprint (what exported states are checked against) covers the scales: another scale
// is another model.
TEST(QuantizedCheckpointRefusals, ScalesAreInTheFingerprint) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  auto before = Checkpoint::Open(m);
  ASSERT_TRUE(before.ok()) << before.status();
  const std::string fp = (*before)->fingerprint();
  before->reset();
  EditTensors(m, [&](auto& t, auto& keep) {
    for (TensorToWrite& x : t) {
      if (x.name != "backbone.layers.1.mixer.dt_proj.weight_scale") continue;
      keep.emplace_back(x.bytes.begin(), x.bytes.end());
      const float v = 0.125f;
      std::memcpy(keep.back().data() + 4 * 7, &v, 4);
      x.bytes = keep.back();
    }
  });
  auto after = Checkpoint::Open(m);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_NE((*after)->fingerprint(), fp);
}

TEST(QuantizedCheckpointRefusals, MinusOneTwentyEightIsRefusedAtLoad) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  EditTensors(m, [&](auto& t, auto& keep) {
    for (TensorToWrite& x : t) {
      if (x.name != "backbone.layers.1.mixer.out_proj.weight") continue;
      keep.emplace_back(x.bytes.begin(), x.bytes.end());
      keep.back()[5] = std::byte{0x80};
      x.bytes = keep.back();
    }
  });
  auto ck = Checkpoint::Open(m);
  ASSERT_TRUE(ck.ok()) << ck.status();
  BackendOptions bo;
  bo.device = "cpu";
  bo.num_slots = 1;
  auto b = CreateBackend(*ck, bo);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(
      std::string(b.status().message()),
      HasSubstr("tensor 'backbone.layers.1.mixer.out_proj.weight': int8 value -128 at [0, 5]"));
}

TEST(QuantizedCheckpointRefusals, CorruptFileFailsCleanly) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  const auto size = fs::file_size(m / "model.safetensors");
  fs::resize_file(m / "model.safetensors", size - 100);
  EXPECT_THAT(OpenError(m), HasSubstr("model.safetensors"));
  // A header claiming an I8 tensor larger than its bytes.
  TempDir dir2;
  const fs::path m2 = WriteQuantized(dir2);
  EditTensors(m2, [](auto& t, auto&) {
    for (TensorToWrite& x : t) {
      if (x.name == "lm_head.weight") x.shape = {96, 33};
    }
  });
  EXPECT_THAT(OpenError(m2), HasSubstr("lm_head.weight"));
}

TEST(QuantizedCheckpointTool, RefusesQuantizedInputAndNonEmptyOutput) {
  TempDir dir;
  const fs::path m = WriteQuantized(dir);
  auto ck = Checkpoint::Open(m);
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto r = WriteInt8Checkpoint(**ck, dir.path() / "qq");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("is already quantized"));
  auto orig = Checkpoint::Open(dir.path() / "orig");
  ASSERT_TRUE(orig.ok());
  r = WriteInt8Checkpoint(**orig, m);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not an empty directory"));
  QuantizeCheckpointOptions qo;
  qo.group_size = 6;
  r = WriteInt8Checkpoint(**orig, dir.path() / "g6", qo);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("multiple of 4, got 6"));
  // A failure part way (here: the input's config.json gone after opening, so the small files are
  // copied and then the config cannot be read) leaves the output directory empty, so that a rerun
  // is not refused.
  std::ofstream(dir.path() / "orig" / "generation_config.json") << "{}";
  fs::remove(dir.path() / "orig" / "config.json");
  r = WriteInt8Checkpoint(**orig, dir.path() / "partial");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("config.json"));
  ASSERT_TRUE(fs::is_directory(dir.path() / "partial"));
  EXPECT_TRUE(fs::is_empty(dir.path() / "partial"));
}

// The installed tool end to end: a sharded pytorch_model.bin input with tokenizer and generation
// config, written sharded, loads and computes as --dtype int8 on the input does.
TEST(QuantizedCheckpointTool, EndToEnd) {
  TempDir dir;
  RandomCheckpointOptions o;
  o.config = SmallConfig();
  o.seed = 11;
  o.format = CheckpointFormat::kPytorchBin;
  o.shards = 2;
  o.tokenizer_json = testing::SourceDir() / "models/gpt-neox-20b/tokenizer.json";
  if (!fs::exists(o.tokenizer_json)) o.tokenizer_json.clear();
  const fs::path in = WriteModel(dir, "in", o);
  { std::ofstream(in / "generation_config.json") << R"({"eos_token_id": 0})"; }
  const fs::path out = dir.path() / "out";
  int status = 0;
  const std::string text =
      RunCommand(std::string(MAMBA_QUANTIZE_BIN) + " --model " + in.string() + " --out " +
                     out.string() + " --group-size 32 --max-shard-bytes 20000",
                 &status);
  ASSERT_EQ(status, 0) << text;
  EXPECT_THAT(text, HasSubstr("matrices int8 (group size 32)"));
  EXPECT_THAT(text, HasSubstr("MB ->"));
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(out / "model-00001-of-00002.safetensors") ||
              fs::exists(out / "model-00001-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(out / "generation_config.json"));
  EXPECT_EQ(fs::exists(out / "tokenizer.json"), !o.tokenizer_json.empty());
  EXPECT_FALSE(fs::exists(out / "pytorch_model.bin.index.json"));
  auto cfg = ReadJsonFile(out / "config.json");
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ((*cfg)["quantization_config"],
            json({{"quant_method", "mambaserve_int8"},
                  {"bits", 8},
                  {"symmetric", true},
                  {"group_size", 32},
                  {"modules", {"in_proj", "x_proj", "dt_proj", "out_proj", "lm_head"}}}));
  EXPECT_EQ((*cfg)["torch_dtype"], "float32");
  auto orig = Checkpoint::Open(in);
  auto q = Checkpoint::Open(out);
  ASSERT_TRUE(orig.ok()) << orig.status();
  ASSERT_TRUE(q.ok()) << q.status();
  auto want = MakeCpu(*orig, ComputeDType::kInt8, 32);
  auto got = MakeCpu(*q, ComputeDType::kAuto, 0);
  ASSERT_TRUE(want && got);
  const std::vector<float> a = RunLogits(*want, 3), b = RunLogits(*got, 3);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  // Quantizing the quantized output is refused.
  const std::string again =
      RunCommand(std::string(MAMBA_QUANTIZE_BIN) + " --model " + out.string() + " --out " +
                     (dir.path() / "again").string(),
                 &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(again, HasSubstr("is already quantized"));
}

}  // namespace
}  // namespace mamba::engine
