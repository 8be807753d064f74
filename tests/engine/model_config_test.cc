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

}  // namespace
}  // namespace mamba::engine
