// PEFT LoRA adapters (engine/lora/lora_adapter.h): the loader against the random writer's files
// (values, dtypes, file formats, scale, rank/alpha patterns, target matching, model families)
// and one test per refusal. The writer and the mamba-make-lora tool: lora_writer_test.cc.
#include "engine/lora/lora_adapter.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/lora/lora_writer.h"
#include "engine/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/lora/lora_test_support.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using ::mamba::engine::testing::Load;
using ::mamba::engine::testing::MustLoad;
using ::mamba::engine::testing::Options;
using ::mamba::engine::testing::Preset;
using ::mamba::engine::testing::Write;
using ::mamba::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ojson = nlohmann::ordered_json;

std::string ErrorOf(const fs::path& dir, const ModelConfig& c, int64_t max_rank = 64) {
  auto a = Load(dir, c, max_rank);
  EXPECT_FALSE(a.ok());
  return a.ok() ? "" : std::string(a.status().message());
}

void EditConfig(const fs::path& dir, const std::function<void(ojson&)>& edit) {
  std::ifstream in(dir / "adapter_config.json");
  ojson j = ojson::parse(in);
  in.close();
  edit(j);
  std::ofstream(dir / "adapter_config.json") << j.dump(2);
}

// A safetensors adapter's tensors, copied out of the mapping so that they can be edited and
// written back.
struct OwnedTensor {
  std::string name;
  kernels::DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

std::vector<OwnedTensor> ReadTensors(const fs::path& dir) {
  auto f = SafetensorsFile::Open(dir / "adapter_model.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  std::vector<OwnedTensor> out;
  for (const TensorInfo& t : (*f)->tensors()) {
    out.push_back({t.name, t.dtype, t.shape, {t.data, t.data + t.nbytes}});
  }
  return out;
}

void WriteTensors(const fs::path& dir, const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorToWrite> views;
  for (const OwnedTensor& t : tensors) views.push_back({t.name, t.dtype, t.shape, t.bytes});
  ASSERT_TRUE(WriteSafetensors(dir / "adapter_model.safetensors", views).ok());
}

// A tensor of the adapter's file in fp32, read without the loader.
std::vector<float> FileTensor(const fs::path& dir, const std::string& name) {
  for (const OwnedTensor& t : ReadTensors(dir)) {
    if (t.name != name) continue;
    std::vector<float> v(t.bytes.size() / kernels::SizeOf(t.dtype));
    kernels::ConvertToF32(t.bytes.data(), t.dtype, v.data(), static_cast<int64_t>(v.size()));
    return v;
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

const std::string kIn0 = "base_model.model.backbone.layers.0.mixer.in_proj";

TEST(LoraAdapterTest, RoundTripKeepsEveryFp32ValueAndShape) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c));
  auto a = MustLoad(dir, c);
  ASSERT_NE(a, nullptr);
  EXPECT_THAT(a->targets(), ElementsAre(LoraTarget::kInProj, LoraTarget::kXProj,
                                        LoraTarget::kOutProj, LoraTarget::kEmbeddings));
  EXPECT_EQ(a->num_layers(), c.num_hidden_layers);
  EXPECT_EQ(a->max_rank(), 8);
  EXPECT_EQ(a->lm_head(), nullptr);
  int64_t bytes = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    EXPECT_EQ(a->layer_module(l, LoraTarget::kDtProj), nullptr);
    for (LoraTarget target : {LoraTarget::kInProj, LoraTarget::kXProj, LoraTarget::kOutProj}) {
      const LoraModule* m = a->layer_module(l, target);
      ASSERT_NE(m, nullptr) << Name(target);
      const std::string key =
          absl::StrCat("base_model.model.backbone.layers.", l, ".mixer.", Name(target));
      EXPECT_EQ(m->a, FileTensor(dir, key + ".lora_A.weight")) << key;
      EXPECT_EQ(m->b, FileTensor(dir, key + ".lora_B.weight")) << key;
      EXPECT_EQ(m->rank, 8);
      EXPECT_EQ(m->alpha, 16);
      EXPECT_EQ(m->scale, 2.0f);
      bytes += static_cast<int64_t>(4 * (m->a.size() + m->b.size()));
    }
  }
  const LoraModule* in = a->layer_module(0, LoraTarget::kInProj);
  EXPECT_EQ(in->in, c.hidden_size);
  EXPECT_EQ(in->out, 2 * c.intermediate_size);
  const LoraModule* x = a->layer_module(0, LoraTarget::kXProj);
  EXPECT_EQ(x->in, c.intermediate_size);
  EXPECT_EQ(x->out, c.time_step_rank + 2 * c.state_size);
  const LoraModule* out = a->layer_module(1, LoraTarget::kOutProj);
  EXPECT_EQ(out->in, c.intermediate_size);
  EXPECT_EQ(out->out, c.hidden_size);
  const LoraModule* e = a->embeddings();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->in, c.vocab_size);
  EXPECT_EQ(e->out, c.hidden_size);
  EXPECT_EQ(e->a, FileTensor(dir, "base_model.model.backbone.embeddings.lora_embedding_A"));
  EXPECT_EQ(e->b, FileTensor(dir, "base_model.model.backbone.embeddings.lora_embedding_B"));
  bytes += static_cast<int64_t>(4 * (e->a.size() + e->b.size()));
  EXPECT_EQ(a->bytes(), bytes);
  EXPECT_EQ(a->fingerprint().size(), 32u);
  EXPECT_EQ(a->path(), dir);
  EXPECT_EQ(a->layer_module(2, LoraTarget::kInProj), nullptr);
  // The writer's B is not PEFT's zero initialisation.
  EXPECT_TRUE(std::any_of(in->b.begin(), in->b.end(), [](float v) { return v != 0; }));
}

TEST(LoraAdapterTest, HalfPrecisionFilesAreConvertedToFp32) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  auto f32 = MustLoad(Write(t, "f32", Options(c)), c);
  for (kernels::DType dtype : {kernels::DType::kBF16, kernels::DType::kF16}) {
    RandomLoraOptions o = Options(c);
    o.dtype = dtype;
    auto half = MustLoad(Write(t, kernels::Name(dtype), o), c);
    ASSERT_NE(half, nullptr);
    for (const auto& [got, want] : {std::pair{half->layer_module(1, LoraTarget::kXProj),
                                              f32->layer_module(1, LoraTarget::kXProj)},
                                    std::pair{half->embeddings(), f32->embeddings()}}) {
      ASSERT_EQ(got->b.size(), want->b.size());
      for (size_t i = 0; i < want->b.size(); ++i) {
        const float rounded = dtype == kernels::DType::kBF16
                                  ? kernels::Bf16ToF32(kernels::F32ToBf16(want->b[i]))
                                  : kernels::F16ToF32(kernels::F32ToF16(want->b[i]));
        ASSERT_EQ(got->b[i], rounded) << kernels::Name(dtype) << " element " << i;
      }
    }
    EXPECT_NE(half->fingerprint(), f32->fingerprint());
  }
}

TEST(LoraAdapterTest, PytorchBinGivesTheSameAdapter) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c);
  o.dtype = kernels::DType::kBF16;
  auto st = MustLoad(Write(t, "st", o), c);
  o.format = LoraFileFormat::kPytorchBin;
  const fs::path bin = Write(t, "bin", o);
  EXPECT_TRUE(fs::exists(bin / "adapter_model.bin"));
  EXPECT_FALSE(fs::exists(bin / "adapter_model.safetensors"));
  auto b = MustLoad(bin, c);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->fingerprint(), st->fingerprint());
  EXPECT_EQ(b->embeddings()->a, st->embeddings()->a);
  EXPECT_EQ(b->layer_module(0, LoraTarget::kOutProj)->b,
            st->layer_module(0, LoraTarget::kOutProj)->b);
}

TEST(LoraAdapterTest, ScaleIsAlphaOverRankOrOverSqrtRankWithRslora) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c, {"in_proj"});
  o.rank = 4;
  o.alpha = 8;
  auto plain = MustLoad(Write(t, "plain", o), c);
  EXPECT_EQ(plain->layer_module(0, LoraTarget::kInProj)->scale, 2.0f);
  o.use_rslora = true;
  auto rs = MustLoad(Write(t, "rs", o), c);
  EXPECT_EQ(rs->layer_module(0, LoraTarget::kInProj)->scale, 4.0f);
  EXPECT_NE(rs->fingerprint(), plain->fingerprint());  // same tensors, another scale
  o.rank = 8;
  o.alpha = 5;
  auto odd = MustLoad(Write(t, "odd", o), c);
  EXPECT_EQ(odd->layer_module(1, LoraTarget::kInProj)->scale,
            static_cast<float>(5 / std::sqrt(8.0)));
}

TEST(LoraAdapterTest, RankAndAlphaPatternsTakeTheFirstMatchingKeyInFileOrder) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c);
  // "proj" must not match x_proj: the key must follow a dot ("(.*\.)?(K)$").
  o.rank_pattern = {{"layers.1.mixer.in_proj", 4}, {"in_proj", 2}, {"proj", 3}};
  o.alpha_pattern = {{"mixer.x_proj", 4}, {"x_proj", 32}};
  auto a = MustLoad(Write(t, "a", o), c);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->layer_module(1, LoraTarget::kInProj)->rank, 4);
  EXPECT_EQ(a->layer_module(1, LoraTarget::kInProj)->scale, 4.0f);  // 16 / 4
  EXPECT_EQ(a->layer_module(0, LoraTarget::kInProj)->rank, 2);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kXProj)->rank, 8);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kXProj)->alpha, 4);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kXProj)->scale, 0.5f);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kOutProj)->rank, 8);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kOutProj)->alpha, 16);
  EXPECT_EQ(a->embeddings()->rank, 8);
  EXPECT_EQ(a->max_rank(), 8);

  o.rank_pattern = {{"in_proj", 2}, {"layers.1.mixer.in_proj", 4}};  // now "in_proj" wins
  o.alpha_pattern = {{"x_proj", 32}, {"mixer.x_proj", 4}};
  auto b = MustLoad(Write(t, "b", o), c);
  EXPECT_EQ(b->layer_module(1, LoraTarget::kInProj)->rank, 2);
  EXPECT_EQ(b->layer_module(0, LoraTarget::kXProj)->alpha, 32);
  // The file's own order decides, not a sorted one: swap the keys in a loaded file.
  const fs::path dir = Write(t, "c", o);
  EditConfig(dir, [](ojson& j) { j["alpha_pattern"] = {{"mixer.x_proj", 4}, {"x_proj", 32}}; });
  EXPECT_EQ(MustLoad(dir, c)->layer_module(0, LoraTarget::kXProj)->alpha, 4);
}

TEST(LoraAdapterTest, RegexTargetModulesMatchTheWholeKey) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c, {"in_proj"}));
  const std::string fp = MustLoad(dir, c)->fingerprint();
  EditConfig(dir,
             [](ojson& j) { j["target_modules"] = R"(backbone\.layers\.\d+\.mixer\.in_proj)"; });
  auto a = MustLoad(dir, c);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->fingerprint(), fp);
  // A full match: "in_proj" alone as a regex matches no key.
  EditConfig(dir, [](ojson& j) { j["target_modules"] = "in_proj"; });
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("regex 'in_proj' matches no module"));
  // Only layer 1 targeted: layer 0's tensors are extra.
  EditConfig(dir, [](ojson& j) { j["target_modules"] = R"(.*\.1\.mixer\.in_proj)"; });
  EXPECT_THAT(ErrorOf(dir, c),
              HasSubstr("unexpected tensor 'base_model.model.backbone.layers.0.mixer.in_proj"));
  EditConfig(dir, [](ojson& j) { j["target_modules"] = ".*conv1d"; });
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("conv1d LoRA is not supported"));
  EditConfig(dir, [](ojson& j) { j["target_modules"] = "(in_proj"; });
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("not a valid regular expression"));
}

TEST(LoraAdapterTest, LayersToTransformFiltersLayersAndDropsTheEmbeddings) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c, {"in_proj", "embeddings"});
  o.layers_to_transform = {1};
  const fs::path dir = Write(t, "a", o);
  auto a = MustLoad(dir, c);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kInProj), nullptr);
  EXPECT_NE(a->layer_module(1, LoraTarget::kInProj), nullptr);
  EXPECT_EQ(a->embeddings(), nullptr);  // PEFT: a module outside the layers is not selected
  EXPECT_THAT(a->targets(), ElementsAre(LoraTarget::kInProj));
  // An integer instead of a list, and layers_pattern "layers" (this model's), mean the same.
  EditConfig(dir, [](ojson& j) {
    j["layers_to_transform"] = 1;
    j["layers_pattern"] = "layers";
  });
  EXPECT_EQ(MustLoad(dir, c)->fingerprint(), a->fingerprint());
  // A full key in target_modules is taken whatever the layers (PEFT's exact-name branch).
  EditConfig(dir, [](ojson& j) {
    j["target_modules"] = {"backbone.layers.1.mixer.in_proj"};
    j["layers_to_transform"] = 0;
  });
  EXPECT_EQ(MustLoad(dir, c)->fingerprint(), a->fingerprint());
  // exclude_modules takes layer 0 out instead.
  EditConfig(dir, [](ojson& j) {
    j["target_modules"] = {"in_proj"};
    j["layers_to_transform"] = nullptr;
    j["exclude_modules"] = {"backbone.layers.0.mixer.in_proj"};
  });
  EXPECT_EQ(MustLoad(dir, c)->fingerprint(), a->fingerprint());
  EditConfig(dir, [](ojson& j) {
    j.erase("exclude_modules");
    j["layers_to_transform"] = {0, 5};
  });
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("layers_to_transform: 5 is not a layer index"));
  EditConfig(dir, [](ojson& j) {
    j["layers_to_transform"] = {1};
    j["layers_pattern"] = "h";
  });
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("layers_pattern"));
}

TEST(LoraAdapterTest, Mamba2HasInProjOutProjAndEmbeddingsOnly) {
  TempDir t;
  const ModelConfig c = Preset("mamba2-tiny");
  ASSERT_TRUE(c.is_mamba2());
  auto a = MustLoad(Write(t, "a", Options(c, {"in_proj", "out_proj", "embeddings"})), c);
  ASSERT_NE(a, nullptr);
  const LoraModule* in = a->layer_module(1, LoraTarget::kInProj);
  EXPECT_EQ(in->in, c.hidden_size);
  EXPECT_EQ(in->out, c.in_proj_size());
  const LoraModule* out = a->layer_module(1, LoraTarget::kOutProj);
  EXPECT_EQ(out->in, c.intermediate_size);
  EXPECT_EQ(out->out, c.hidden_size);
  EXPECT_EQ(a->layer_module(0, LoraTarget::kXProj), nullptr);
  for (const char* missing : {"x_proj", "dt_proj"}) {
    absl::Status s = WriteRandomLoraAdapter(Options(c, {"in_proj", missing}), t.path() / missing);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(absl::StrCat("target module '", missing,
                                       "' matches no module of this model (Mamba-2")));
  }
  // The gated norm is a norm.
  const fs::path dir = Write(t, "n", Options(c, {"in_proj"}));
  EditConfig(dir, [](ojson& j) { j["target_modules"] = {"in_proj", "mixer.norm"}; });
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("backbone.layers.0.mixer.norm, which is a norm layer"));
}

TEST(LoraAdapterTest, FalconMambaTakesEveryLinearAndAnUntiedHead) {
  TempDir t;
  const ModelConfig c = Preset("falcon-tiny");
  ASSERT_TRUE(c.mixer_rms_norm());
  auto a = MustLoad(
      Write(t, "a", Options(c, {"in_proj", "x_proj", "dt_proj", "out_proj", "lm_head"})), c);
  ASSERT_NE(a, nullptr);
  EXPECT_THAT(a->targets(),
              ElementsAre(LoraTarget::kInProj, LoraTarget::kXProj, LoraTarget::kDtProj,
                          LoraTarget::kOutProj, LoraTarget::kLmHead));
  const LoraModule* dt = a->layer_module(0, LoraTarget::kDtProj);
  EXPECT_EQ(dt->in, c.time_step_rank);
  EXPECT_EQ(dt->out, c.intermediate_size);
  const LoraModule* head = a->lm_head();
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->in, c.hidden_size);
  EXPECT_EQ(head->out, c.vocab_size);
}

// PEFT saves a targeted lm_head's base weight too (save_embedding_layers="auto"): a copy of the
// base model's, ignored; at another shape (a resized vocabulary) it is refused.
TEST(LoraAdapterTest, PeftsCopyOfATargetedHeadIsIgnored) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c, {"in_proj", "lm_head"}));
  const std::string fp = MustLoad(dir, c)->fingerprint();
  std::vector<OwnedTensor> tensors = ReadTensors(dir);
  const std::string name = "base_model.model.lm_head.base_layer.weight";
  tensors.push_back(
      {name,
       kernels::DType::kF32,
       {c.vocab_size, c.hidden_size},
       std::vector<std::byte>(static_cast<size_t>(4 * c.vocab_size * c.hidden_size))});
  WriteTensors(dir, tensors);
  auto a = MustLoad(dir, c);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->fingerprint(), fp);
  EXPECT_EQ(a->lm_head()->out, c.vocab_size);
  tensors.back().shape = {c.vocab_size + 8, c.hidden_size};
  tensors.back().bytes.resize(static_cast<size_t>(4 * (c.vocab_size + 8) * c.hidden_size));
  WriteTensors(dir, tensors);
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr(absl::StrCat("tensor '", name,
                                                      "' has shape [520, 64], "
                                                      "not the base model's [512, 64]: an adapter "
                                                      "with a resized vocabulary")));
  // Only for a targeted module: without lm_head in target_modules the copy is extra.
  const fs::path other = Write(t, "b", Options(c, {"in_proj"}));
  tensors = ReadTensors(other);
  tensors.push_back(
      {name,
       kernels::DType::kF32,
       {c.vocab_size, c.hidden_size},
       std::vector<std::byte>(static_cast<size_t>(4 * c.vocab_size * c.hidden_size))});
  WriteTensors(other, tensors);
  EXPECT_THAT(ErrorOf(other, c), HasSubstr(absl::StrCat("unexpected tensor '", name, "'")));
}

TEST(LoraAdapterTest, FingerprintFollowsValuesAndConfig) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c);
  const std::string fp = MustLoad(Write(t, "a", o), c)->fingerprint();
  EXPECT_EQ(MustLoad(Write(t, "same", o), c)->fingerprint(), fp);
  o.seed = 8;
  EXPECT_NE(MustLoad(Write(t, "seed", o), c)->fingerprint(), fp);
  o.seed = 7;
  const fs::path dir = Write(t, "alpha", o);
  EditConfig(dir, [](ojson& j) { j["lora_alpha"] = 17; });
  EXPECT_NE(MustLoad(dir, c)->fingerprint(), fp);
}

// ---- Refusals: each names its cause.

TEST(LoraAdapterRefusalTest, MissingDirectoryConfigOrWeights) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  auto none = Load(t.path() / "nope", c);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no such adapter directory"));
  const fs::path dir = Write(t, "a", Options(c));
  fs::remove(dir / "adapter_model.safetensors");
  auto no_weights = Load(dir, c);
  EXPECT_EQ(no_weights.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_weights.status().message()),
              HasSubstr("no adapter_model.safetensors or adapter_model.bin"));
  fs::remove(dir / "adapter_config.json");
  auto no_config = Load(dir, c);
  EXPECT_EQ(no_config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_config.status().message()), HasSubstr("adapter_config.json"));
}

TEST(LoraAdapterRefusalTest, ErrorsNameTheAdapterAndTheFile) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c));
  EditConfig(dir, [](ojson& j) { j["use_dora"] = true; });
  auto a = Load(dir, c, 64, "sql-tuned");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a.status().message()),
              StartsWith(absl::StrCat(
                  "adapter 'sql-tuned': ", (dir / "adapter_config.json").string(), ": use_dora")));
  std::ofstream(dir / "adapter_config.json") << "{not json";
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("adapter_config.json: invalid JSON"));
}

TEST(LoraAdapterRefusalTest, CorruptSafetensors) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c));
  fs::resize_file(dir / "adapter_model.safetensors", 100);  // header says more
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("adapter_model.safetensors"));
  std::ofstream(dir / "adapter_model.safetensors") << "garbage";
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("adapter_model.safetensors"));
}

TEST(LoraAdapterRefusalTest, MissingTensor) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c));
  std::vector<OwnedTensor> tensors = ReadTensors(dir);
  std::erase_if(tensors, [](const OwnedTensor& x) { return x.name == kIn0 + ".lora_B.weight"; });
  WriteTensors(dir, tensors);
  const std::string e = ErrorOf(dir, c);
  EXPECT_THAT(e, HasSubstr(absl::StrCat("missing tensor '", kIn0, ".lora_B.weight'")));
  EXPECT_THAT(e, HasSubstr("adapter_model.safetensors"));
}

TEST(LoraAdapterRefusalTest, ExtraTensor) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c, {"in_proj"}));
  std::vector<OwnedTensor> tensors = ReadTensors(dir);
  OwnedTensor extra = tensors[0];
  extra.name = "base_model.model.backbone.layers.0.mixer.x_proj.lora_A.weight";
  tensors.push_back(extra);
  WriteTensors(dir, tensors);
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr(absl::StrCat("unexpected tensor '", extra.name, "'")));
}

TEST(LoraAdapterRefusalTest, ShapeThatDoesNotFitTheBaseModel) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  ModelConfig narrow = c;
  narrow.hidden_size = 32;
  narrow.intermediate_size = 64;
  const fs::path dir = Write(t, "a", Options(narrow, {"in_proj"}));
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr(absl::StrCat("tensor '", kIn0,
                                                      ".lora_A.weight' has shape [8, 32], "
                                                      "expected [8, 64]")));
  // A rank in the file other than the configured one.
  const fs::path r = Write(t, "r", Options(c, {"in_proj"}));
  EditConfig(r, [](ojson& j) { j["r"] = 4; });
  EXPECT_THAT(ErrorOf(r, c), HasSubstr("has shape [8, 64], expected [4, 64] (rank 4"));
}

TEST(LoraAdapterRefusalTest, RankAboveMaxLoraRank) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  RandomLoraOptions o = Options(c);
  o.rank_pattern = {{"x_proj", 16}};
  const fs::path dir = Write(t, "a", o);
  EXPECT_THAT(ErrorOf(dir, c, 8),
              HasSubstr("rank 16 of backbone.layers.0.mixer.x_proj (rank_pattern 'x_proj') "
                        "exceeds --max-lora-rank 8"));
  EXPECT_THAT(ErrorOf(dir, c, 4),
              HasSubstr("rank 8 of backbone.embeddings (r) exceeds --max-lora-rank 4"));
  EXPECT_NE(MustLoad(dir, c), nullptr);
}

TEST(LoraAdapterRefusalTest, NonFiniteValue) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c));
  std::vector<OwnedTensor> tensors = ReadTensors(dir);
  for (OwnedTensor& x : tensors) {
    if (x.name != kIn0 + ".lora_A.weight") continue;
    const float nan = std::nanf("");
    std::memcpy(x.bytes.data() + 4 * 5, &nan, 4);
  }
  WriteTensors(dir, tensors);
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr(absl::StrCat("tensor '", kIn0,
                                                      ".lora_A.weight' holds a non-finite value "
                                                      "(nan) at element 5")));
}

TEST(LoraAdapterRefusalTest, IntegerTensor) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c, {"in_proj"}));
  std::vector<OwnedTensor> tensors = ReadTensors(dir);
  tensors[0].dtype = kernels::DType::kI8;
  tensors[0].bytes.resize(tensors[0].bytes.size() / 4);
  WriteTensors(dir, tensors);
  EXPECT_THAT(ErrorOf(dir, c), HasSubstr("has dtype int8"));
}

// adapter_config.json edits each refused with a message naming the field.
struct ConfigCase {
  const char* name;
  std::function<void(ojson&)> edit;
  const char* message;
};

TEST(LoraAdapterRefusalTest, ConfigFields) {
  TempDir t;
  const ModelConfig c = Preset("tiny");
  const fs::path dir = Write(t, "a", Options(c));
  const std::vector<ConfigCase> cases = {
      {"dora", [](ojson& j) { j["use_dora"] = true; },
       "use_dora is true: DoRA adapters are not supported"},
      {"bias", [](ojson& j) { j["bias"] = "all"; }, "bias is \"all\": only \"none\""},
      {"bias_lora_only", [](ojson& j) { j["bias"] = "lora_only"; }, "bias is \"lora_only\""},
      {"modules_to_save", [](ojson& j) { j["modules_to_save"] = {"lm_head"}; },
       "modules_to_save is [\"lm_head\"]: not supported"},
      {"peft_type", [](ojson& j) { j["peft_type"] = "PREFIX_TUNING"; },
       "peft_type is \"PREFIX_TUNING\": only LORA"},
      {"no_peft_type", [](ojson& j) { j.erase("peft_type"); }, "peft_type is missing"},
      {"conv1d",
       [](ojson& j) {
         j["target_modules"] = {"in_proj", "conv1d"};
       },
       "selects backbone.layers.0.mixer.conv1d, which is a depthwise conv1d: conv1d LoRA is not "
       "supported"},
      {"unknown",
       [](ojson& j) {
         j["target_modules"] = {"in_proj", "q_proj"};
       },
       "target module 'q_proj' matches no module of this model"},
      {"norm_f", [](ojson& j) { j["target_modules"] = {"norm_f"}; },
       "selects backbone.norm_f, which is a norm layer"},
      {"activation",
       [](ojson& j) {
         j["target_modules"] = {"in_proj", "act"};
       },
       "selects backbone.layers.0.mixer.act, which is an activation function"},
      {"trainable_tokens",
       [](ojson& j) {
         j["trainable_token_indices"] = {1, 2};
       },
       "trainable_token_indices is [1,2]: not supported"},
      {"container", [](ojson& j) { j["target_modules"] = {"mixer"}; },
       "which is a container of modules"},
      {"no_targets", [](ojson& j) { j.erase("target_modules"); }, "target_modules is missing"},
      {"targets_type", [](ojson& j) { j["target_modules"] = 3; },
       "target_modules must be a list of names or a regex string"},
      {"lora_bias", [](ojson& j) { j["lora_bias"] = true; }, "lora_bias is true"},
      {"replication",
       [](ojson& j) {
         j["layer_replication"] = {{0, 1}};
       },
       "layer_replication is [[0,1]]: not supported"},
      {"rank_zero", [](ojson& j) { j["r"] = 0; }, "r must be a positive integer"},
      {"alpha_type", [](ojson& j) { j["lora_alpha"] = "x"; }, "lora_alpha must be a number"},
      {"alpha_huge", [](ojson& j) { j["lora_alpha"] = 1e300; }, "gives the scale"},
      {"rank_pattern_huge",
       [](ojson& j) {
         j["rank_pattern"] = {{"in_proj", INT64_MAX}};
       },
       "rank 9223372036854775807 of backbone.layers.0.mixer.in_proj (rank_pattern 'in_proj') "
       "exceeds --max-lora-rank 64"},
      {"rslora_type", [](ojson& j) { j["use_rslora"] = 1; }, "use_rslora must be true or false"},
      {"dora_type", [](ojson& j) { j["use_dora"] = "no"; }, "use_dora must be true or false"},
      {"fan_type", [](ojson& j) { j["fan_in_fan_out"] = "yes"; },
       "fan_in_fan_out must be true or false"},
      {"rank_pattern_value",
       [](ojson& j) {
         j["rank_pattern"] = {{"in_proj", 0}};
       },
       "rank_pattern['in_proj'] must be a positive integer"},
      {"alpha_pattern_value",
       [](ojson& j) {
         j["alpha_pattern"] = {{"in_proj", "x"}};
       },
       "alpha_pattern['in_proj'] must be a number"},
      {"pattern_type",
       [](ojson& j) {
         j["rank_pattern"] = {1, 2};
       },
       "rank_pattern must be an object"},
      {"pattern_regex",
       [](ojson& j) {
         j["rank_pattern"] = {{"in_proj(", 2}};
       },
       "rank_pattern key 'in_proj(' is not a valid regular expression"},
      {"layers_type", [](ojson& j) { j["layers_to_transform"] = "0"; },
       "layers_to_transform: \"0\" is not a layer index"},
      {"top_level", [](ojson& j) { j = ojson::array(); }, "the top level must be an object"},
      {"nothing_left", [](ojson& j) { j["exclude_modules"] = ".*"; }, "selects no module"},
  };
  for (const ConfigCase& k : cases) {
    const fs::path d = t.path() / k.name;
    fs::create_directories(d);
    fs::copy(dir, d, fs::copy_options::recursive);
    EditConfig(d, k.edit);
    EXPECT_THAT(ErrorOf(d, c), HasSubstr(k.message)) << k.name;
  }
  // fan_in_fan_out true is accepted (PEFT ignores it for nn.Linear, with a warning).
  EditConfig(dir, [](ojson& j) { j["fan_in_fan_out"] = true; });
  EXPECT_NE(MustLoad(dir, c), nullptr);
}

}  // namespace
}  // namespace mamba::engine
