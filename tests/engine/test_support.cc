#include "tests/engine/test_support.h"

#include <random>

namespace mamba::engine::testing {

namespace fs = std::filesystem;

ModelConfig SmallConfig() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.vocab_size = 96;
  c.state_size = 16;
  c.time_step_rank = 4;
  c.conv_kernel = 4;
  return c;
}

fs::path WriteModel(const TempDir& dir, const std::string& name,
                    const RandomCheckpointOptions& options) {
  const fs::path p = dir.path() / name;
  absl::Status s = WriteRandomCheckpoint(options, p);
  EXPECT_TRUE(s.ok()) << s;
  return p;
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> OpenVariantModel(const TempDir& dir,
                                                                   const BackendVariant& v) {
  RandomCheckpointOptions o;
  o.config = SmallConfig();
  o.config.hidden_size = v.hidden;
  o.config.intermediate_size = 2 * v.hidden;
  o.config.state_size = v.d_state;
  o.config.time_step_rank = v.dt_rank;
  o.config.conv_kernel = v.conv;
  o.config.num_hidden_layers = v.layers;
  o.config.use_bias = v.use_bias;
  o.config.use_conv_bias = !v.no_conv_bias;
  if (v.falcon) {
    o.config.model_type = ModelType::kFalconMamba;
    o.config.mixer_rms_eps = 1e-4;
  }
  if (v.head_dim > 0) {
    ModelConfig& c = o.config;
    c.model_type = ModelType::kMamba2;
    c.intermediate_size = 2 * v.hidden - v.mlp;
    c.mlp_size = v.mlp;
    c.head_dim = v.head_dim;
    c.num_heads = c.intermediate_size / v.head_dim;
    c.n_groups = v.n_groups;
    c.time_step_min_limit = v.dt_min;
    c.time_step_max_limit = v.dt_max;
  }
  o.dtype = v.stored;
  o.untied_head = v.untied;
  o.mamba_ssm_layout = v.mamba_ssm;
  o.shards = v.shards;
  o.perturb_constants = true;
  o.seed = 42;
  return Checkpoint::Open(WriteModel(dir, "m", o));
}

std::vector<TokenId> RandomPrompt(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TokenId> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<TokenId>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

absl::Status Dec(Backend& b, std::vector<SlotId> slots, std::vector<TokenId> tokens, Logits* l) {
  return b.Decode(slots, tokens, l);
}

}  // namespace mamba::engine::testing
