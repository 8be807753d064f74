// mamba-make-checkpoint: writes a seeded random-weight Mamba checkpoint in the HF layout.
#include <cstdio>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "engine/checkpoint_writer.h"

int main(int argc, char** argv) {
  using namespace mamba::engine;
  CLI::App app{"Write a seeded random-weight Mamba checkpoint (HF layout)"};
  std::string out, preset = "tiny", dtype = "float32", tokenizer, format = "safetensors";
  RandomCheckpointOptions o;
  int64_t layers = 0, d_model = 0, vocab = 0, d_state = 0, d_conv = 0, dt_rank = 0, expand = 0,
          d_inner = 0;
  double eps = 0;
  bool no_conv_bias = false, residual_16bit = false;
  app.add_option("--out", out, "Output directory")->required();
  app.add_option("--preset", preset, absl::StrJoin(PresetNames(), " | "))->capture_default_str();
  app.add_option("--dtype", dtype, "float32 | bfloat16 | float16")->capture_default_str();
  app.add_option("--seed", o.seed)->capture_default_str();
  app.add_option("--shards", o.shards, "Number of weight file shards")->capture_default_str();
  app.add_option("--format", format, "safetensors | bin (pytorch_model.bin as torch.save writes)")
      ->capture_default_str();
  app.add_option("--layers", layers, "Override the preset's layer count");
  app.add_option("--d-model", d_model, "Override hidden_size (d_inner = 2x)");
  app.add_option("--vocab", vocab, "Override vocab_size");
  app.add_option("--d-state", d_state, "Override state_size");
  app.add_option("--d-conv", d_conv, "Override conv_kernel");
  app.add_option("--dt-rank", dt_rank, "Override time_step_rank");
  app.add_option("--expand", expand, "Override expand (d_inner = expand x d_model)");
  app.add_option("--d-inner", d_inner, "Override intermediate_size (written explicitly)");
  app.add_option("--layer-norm-epsilon", eps, "Override layer_norm_epsilon");
  app.add_flag("--no-conv-bias", no_conv_bias, "use_conv_bias = false (no conv1d.bias tensors)");
  app.add_flag("--no-residual-in-fp32", residual_16bit, "residual_in_fp32 = false in config.json");
  app.add_flag("--untied-head", o.untied_head, "Write a separate lm_head.weight");
  app.add_flag("--use-bias", o.config.use_bias, "in_proj/out_proj biases");
  app.add_flag("--mamba-ssm-layout", o.mamba_ssm_layout, "Original mamba_ssm config and names");
  app.add_flag("--perturb", o.perturb_constants, "Randomise norms, D and biases");
  app.add_option("--tokenizer", tokenizer, "tokenizer.json to copy into the directory");
  CLI11_PARSE(app, argc, argv);

  const bool use_bias = o.config.use_bias;
  auto config = PresetConfig(preset);
  if (!config.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  o.config = *config;
  o.config.use_bias = use_bias;
  if (!o.config.tie_word_embeddings) o.untied_head = true;  // the preset's (falcon-mamba-7b)
  if (layers) o.config.num_hidden_layers = layers;
  if (d_model) {
    o.config.hidden_size = d_model;
    o.config.intermediate_size = 2 * d_model;
    o.config.time_step_rank = (d_model + 15) / 16;
  }
  if (vocab) o.config.vocab_size = vocab;
  if (d_state) o.config.state_size = d_state;
  if (d_conv) o.config.conv_kernel = d_conv;
  if (dt_rank) o.config.time_step_rank = dt_rank;
  if (expand) o.config.intermediate_size = expand * o.config.hidden_size;
  if (d_inner) o.config.intermediate_size = d_inner;
  if (eps > 0) o.config.layer_norm_epsilon = eps;
  if (no_conv_bias) o.config.use_conv_bias = false;
  if (residual_16bit) o.config.residual_in_fp32 = false;

  if (format == "bin") {
    o.format = mamba::engine::CheckpointFormat::kPytorchBin;
  } else if (format != "safetensors") {
    std::fprintf(stderr, "error: --format must be safetensors or bin\n");
    return 2;
  }
  const auto stored = mamba::kernels::FloatDTypeFromName(dtype);
  if (!stored) {
    std::fprintf(stderr, "error: --dtype must be float32, bfloat16 or float16\n");
    return 2;
  }
  o.dtype = *stored;
  o.tokenizer_json = tokenizer;
  if (absl::Status s = WriteRandomCheckpoint(o, out); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("wrote %s (%lld parameters, %s)\n", out.c_str(),
              static_cast<long long>(o.config.NumParameters(o.untied_head)), dtype.c_str());
  return 0;
}
