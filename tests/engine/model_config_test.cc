#include "engine/model_config.h"

#include "gtest/gtest.h"

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
      {R"({"model_type": "mamba2"})", "mamba2"},
      {R"({"use_bias": 1})", "use_bias"},
      {R"({"time_step_rank": "huge"})", "time_step_rank"},
      {R"({"eos_token_id": 99999999})", "eos_token_id"},
      {R"({"d_model": 64, "ssm_cfg": {"layer": "Mamba2"}})", "Mamba2"},
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
