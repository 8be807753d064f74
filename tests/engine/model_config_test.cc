#include "engine/model_config.h"

#include <fstream>

#include "engine/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine {
namespace {

using nlohmann::json;

TEST(ModelConfig, ParsesHfConfigOfMamba130m) {
  // config.json of state-spaces/mamba-130m-hf (fields that matter).
  json j = json::parse(R"({
    "architectures": ["MambaForCausalLM"], "bos_token_id": 0, "conv_kernel": 4, "eos_token_id": 0,
    "expand": 2, "hidden_act": "silu", "hidden_size": 768, "initializer_range": 0.1,
    "intermediate_size": 1536, "layer_norm_epsilon": 1e-05, "model_type": "mamba",
    "n_layer": 24, "num_hidden_layers": 24, "pad_token_id": 0, "rescale_prenorm_residual": false,
    "residual_in_fp32": true, "state_size": 16, "time_step_floor": 0.0001,
    "time_step_init_scheme": "random", "time_step_max": 0.1, "time_step_min": 0.001,
    "time_step_rank": 48, "time_step_scale": 1.0, "torch_dtype": "float32", "use_bias": false,
    "use_cache": true, "use_conv_bias": true, "vocab_size": 50280})");
  auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->intermediate_size, 1536);
  EXPECT_EQ(c->num_hidden_layers, 24);
  EXPECT_EQ(c->time_step_rank, 48);
  EXPECT_EQ(c->vocab_size, 50280);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{0});
  EXPECT_EQ(c->StateBytesPerSequence(), 24 * 1536 * (3 + 16) * 4);  // ~2.8 MB
}

TEST(ModelConfig, AutoRankExplicitIntermediateAndEosList) {
  auto c = ModelConfig::FromJson(json::parse(
      R"({"hidden_size": 100, "time_step_rank": "auto", "expand": 3, "intermediate_size": 250,
          "eos_token_id": [0, 5], "vocab_size": 64, "state_size": 8, "num_hidden_layers": 1})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->time_step_rank, 7);  // ceil(100 / 16)
  EXPECT_EQ(c->intermediate_size, 250);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{0, 5}));
}

TEST(ModelConfig, ParsesOriginalMambaSsmLayout) {
  auto c = ModelConfig::FromJson(json::parse(
      R"({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {"d_state": 8},
          "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
          "pad_vocab_size_multiple": 8, "tie_embeddings": true})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source_format, "mamba_ssm");
  EXPECT_EQ(c->vocab_size, 50280);  // padded to a multiple of 8
  EXPECT_EQ(c->intermediate_size, 1536);
  EXPECT_EQ(c->state_size, 8);
  EXPECT_EQ(c->time_step_rank, 48);
  EXPECT_TRUE(c->use_conv_bias);
}

TEST(ModelConfig, RejectsBadFieldsNamingThem) {
  struct Case {
    const char* json;
    const char* needle;
  } cases[] = {
      {R"({"hidden_size": "big"})", "hidden_size"},
      {R"({"hidden_size": -4})", "hidden_size"},
      {R"({"state_size": 0})", "state_size"},
      {R"({"conv_kernel": 9})", "conv_kernel"},
      {R"({"hidden_act": "gelu"})", "gelu"},
      {R"({"model_type": "mamba3"})", "mamba3"},
      {R"({"use_bias": 1})", "use_bias"},
      {R"({"time_step_rank": "huge"})", "time_step_rank"},
      {R"({"eos_token_id": 99999999})", "eos_token_id"},
      {R"({"d_model": 64, "ssm_cfg": {"layer": "Mamba3"}})", "Mamba3"},
      {R"([1, 2])", "object"},
      // expand * hidden overflows int64 before any range check (UB; UBSan stage catches it).
      {R"({"hidden_size": 5966666666666666662})", "overflows"},
      {R"({"d_model": 5966666666666666662, "ssm_cfg": {"expand": 4}})", "overflows"},
  };
  for (const Case& k : cases) {
    auto c = ModelConfig::FromJson(json::parse(k.json));
    ASSERT_FALSE(c.ok()) << k.json;
    EXPECT_NE(std::string(c.status().message()).find(k.needle), std::string::npos)
        << k.json << " -> " << c.status();
  }
}

TEST(ModelConfig, PresetsHaveTheRealShapes) {
  auto c = PresetConfig("2.8b");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->num_hidden_layers, 64);
  EXPECT_EQ(c->time_step_rank, 160);
  EXPECT_FALSE(PresetConfig("7b").ok());
  auto m = PresetConfig("130m");
  ASSERT_TRUE(m.ok());
  // ~129M parameters with the tied head, as published.
  EXPECT_NEAR(static_cast<double>(m->NumParameters(false)), 129.1e6, 0.5e6);
}

TEST(ModelConfig, JsonRoundTrip) {
  auto c = PresetConfig("370m");
  ASSERT_TRUE(c.ok());
  auto back = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), c->ToJson());
}

TEST(ModelConfig, ParsesFalconMamba7bConfig) {
  // config.json of tiiuae/falcon-mamba-7b (the fields that matter): intermediate_size is given
  // beside an expand that would disagree with it (HF keeps the given size).
  json j = json::parse(R"({
    "architectures": ["FalconMambaForCausalLM"], "model_type": "falcon_mamba",
    "bos_token_id": 0, "eos_token_id": 11, "pad_token_id": 11, "conv_kernel": 4, "expand": 16,
    "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 8192,
    "layer_norm_epsilon": 1e-05, "mixer_rms_eps": 1e-06, "num_hidden_layers": 64,
    "residual_in_fp32": true, "state_size": 16, "tie_word_embeddings": false,
    "time_step_rank": 256, "use_bias": false, "use_conv_bias": true, "vocab_size": 65024})");
  auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, ModelType::kFalconMamba);
  EXPECT_TRUE(c->mixer_rms_norm());
  EXPECT_DOUBLE_EQ(c->mixer_rms_eps, 1e-6);
  EXPECT_EQ(c->intermediate_size, 8192);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_ids, std::vector<int64_t>{11});
  // The preset has the same shape: 7.27 B weights with the untied head, as published.
  auto p = PresetConfig("falcon-mamba-7b");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->hidden_size, c->hidden_size);
  EXPECT_EQ(p->intermediate_size, c->intermediate_size);
  EXPECT_EQ(p->time_step_rank, c->time_step_rank);
  EXPECT_EQ(p->num_hidden_layers, c->num_hidden_layers);
  EXPECT_EQ(p->vocab_size, c->vocab_size);
  EXPECT_TRUE(p->mixer_rms_norm());
  EXPECT_FALSE(p->tie_word_embeddings);
  EXPECT_NEAR(static_cast<double>(p->NumParameters(true)), 7.27e9, 0.01e9);
  // Round trip keeps the family and its eps; Mamba configs say nothing of it.
  auto back = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), c->ToJson());
  EXPECT_EQ(c->ToJson()["architectures"][0], "FalconMambaForCausalLM");
  EXPECT_FALSE(PresetConfig("130m")->ToJson().contains("mixer_rms_eps"));
  // A bad mixer_rms_eps is refused (it is read for either family).
  j["mixer_rms_eps"] = -1;
  EXPECT_FALSE(ModelConfig::FromJson(j).ok());
  j["mixer_rms_eps"] = "small";
  EXPECT_FALSE(ModelConfig::FromJson(j).ok());
  // An unknown family lists the supported ones.
  auto bad = ModelConfig::FromJson(json::parse(R"({"model_type": "jamba"})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("mamba, falcon_mamba"), std::string::npos)
      << bad.status();
}

}  // namespace
}  // namespace mamba::engine

namespace mamba::engine {
namespace {

using nlohmann::json;

// config.json of mistralai/Mamba-Codestral-7B-v0.1 (the fields that matter), with the bare
// Infinity Python's json module writes: read through ReadJsonFile as from a model directory.
TEST(ModelConfig, ParsesMambaCodestralConfig) {
  testing::TempDir dir;
  const auto path = dir.path() / "config.json";
  std::ofstream(path) << R"({
    "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "bos_token_id": 1,
    "eos_token_id": 2, "pad_token_id": 0, "chunk_size": 256, "conv_kernel": 4, "expand": 2,
    "head_dim": 64, "hidden_act": "silu", "hidden_size": 4096, "layer_norm_epsilon": 1e-05,
    "n_groups": 8, "num_heads": 128, "num_hidden_layers": 64, "residual_in_fp32": true,
    "rms_norm": true, "state_size": 128, "tie_word_embeddings": false, "time_step_floor": 0.0001,
    "time_step_limit": [0.0, Infinity], "time_step_max": 0.1, "time_step_min": 0.001,
    "time_step_rank": 256, "use_bias": false, "use_conv_bias": true, "vocab_size": 32768})";
  auto j = ReadJsonFile(path);
  ASSERT_TRUE(j.ok()) << j.status();
  auto c = ModelConfig::FromJson(*j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->is_mamba2());
  EXPECT_EQ(c->intermediate_size, 8192);
  EXPECT_EQ(c->num_heads, 128);
  EXPECT_EQ(c->n_groups, 8);
  EXPECT_EQ(c->conv_dim(), 8192 + 2 * 8 * 128);
  EXPECT_EQ(c->in_proj_size(), 18560);   // the published in_proj.weight is [18560, 4096]
  EXPECT_EQ(c->time_step_max_limit, 0);  // Infinity: no limit
  // 268 MB of SSM state per sequence (128 x 64 x 128 fp32 x 64 layers) + the conv state.
  EXPECT_EQ(c->StateBytesPerSequence(), 64 * (3 * 10240 + 128 * 64 * 128) * 4);
  auto p = PresetConfig("codestral-7b");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToJson(), c->ToJson());
  EXPECT_NEAR(static_cast<double>(p->NumParameters(true)), 7.29e9, 0.01e9);
  auto back = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), c->ToJson());
  // transformers 5 spells infinity {"__float__": "Infinity"}.
  (*j)["time_step_limit"] = json::parse(R"([0.0, {"__float__": "Infinity"}])");
  ASSERT_TRUE(ModelConfig::FromJson(*j).ok());
}

// state-spaces/mamba2-130m's config.json (mamba_ssm's own format; ssm_cfg defaults apply).
TEST(ModelConfig, ParsesMambaSsmMamba2Config) {
  json j = json::parse(R"({"d_model": 768, "d_intermediate": 0, "n_layer": 24,
    "vocab_size": 50277, "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {},
    "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
    "pad_vocab_size_multiple": 16, "tie_embeddings": true})");
  auto c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->is_mamba2());
  EXPECT_EQ(c->vocab_size, 50288);
  EXPECT_EQ(c->state_size, 128);
  EXPECT_EQ(c->num_heads, 24);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->source_format, "mamba_ssm");
  auto p = PresetConfig("mamba2-130m");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToJson(), c->ToJson());
  EXPECT_NEAR(static_cast<double>(p->NumParameters(false)), 129.0e6, 0.5e6);
  // d_ssm < d_inner: an MLP split of the rest.
  j["ssm_cfg"]["d_ssm"] = 1024;
  c = ModelConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->intermediate_size, 1024);
  EXPECT_EQ(c->mlp_size, 512);
  EXPECT_EQ(c->num_heads, 16);
  EXPECT_EQ(c->in_proj_size(), 2 * 512 + 1024 + (1024 + 256) + 16);
}

// Each contradiction or unsupported variant is refused, naming the field.
TEST(ModelConfig, RefusesInconsistentMamba2Configs) {
  const json base = PresetConfig("mamba2-130m")->ToJson();
  auto refused = [&](const json& patch, const std::string& field, bool mamba_ssm = false) {
    json j = mamba_ssm ? json::parse(R"({"d_model": 768, "n_layer": 2, "vocab_size": 512,
                                         "ssm_cfg": {"layer": "Mamba2"}})")
                       : base;
    j.merge_patch(patch);
    auto c = ModelConfig::FromJson(j);
    if (c.ok()) return ::testing::AssertionFailure() << patch.dump() << " was accepted";
    if (std::string(c.status().message()).find(field) == std::string::npos) {
      return ::testing::AssertionFailure() << c.status() << " does not name " << field;
    }
    return ::testing::AssertionSuccess();
  };
  EXPECT_TRUE(refused({{"num_heads", 20}}, "num_heads"));
  EXPECT_TRUE(refused({{"head_dim", 48}}, "head_dim"));
  EXPECT_TRUE(refused({{"n_groups", 5}}, "n_groups"));
  EXPECT_TRUE(refused({{"rms_norm", false}}, "rms_norm"));
  EXPECT_TRUE(refused({{"time_step_limit", {0.5, 0.1}}}, "time_step_limit"));
  EXPECT_TRUE(refused({{"time_step_limit", {0.0}}}, "time_step_limit"));
  EXPECT_TRUE(refused({{"time_step_limit", {0.0, "big"}}}, "time_step_limit"));
  EXPECT_TRUE(refused({{"ssm_cfg", {{"norm_before_gate", true}}}}, "norm_before_gate", true));
  EXPECT_TRUE(refused({{"ssm_cfg", {{"D_has_hdim", true}}}}, "D_has_hdim", true));
  EXPECT_TRUE(refused({{"ssm_cfg", {{"rmsnorm", false}}}}, "rmsnorm", true));
  EXPECT_TRUE(refused({{"ssm_cfg", {{"d_ssm", 2048}}}}, "d_ssm", true));
  EXPECT_TRUE(refused({{"ssm_cfg", {{"layer", "Mamba3"}}}}, "Mamba2", true));
  EXPECT_TRUE(refused({{"attn_layer_idx", {1}}}, "attn_layer_idx", true));
  EXPECT_TRUE(refused({{"d_intermediate", 4096}}, "d_intermediate", true));
}

}  // namespace
}  // namespace mamba::engine
