// A float64 re-statement of HF MambaForCausalLM's slow path (and FalconMambaForCausalLM's: the
// mixer RMS norms on dt, B and C; and Mamba2ForCausalLM's torch_forward decode step), token by
// token, written independently of the engine's kernels: the reference every engine path is
// compared with.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/types.h"

namespace mamba::engine::testing {

// Where the engine under test deliberately computes something other than the checkpoint's float
// model, the reference follows it.
struct ReferenceOptions {
  // int8 weights (--dtype int8): in_proj, x_proj, dt_proj, out_proj and the LM head quantized as
  // the engine quantizes them (kernels/cpu/int8_gemm.h: symmetric, one scale per row or per group
  // of `int8_group_size` inputs) and used dequantized; with `int8_activations` the input of each
  // of those products is quantized per row as well (the CPU engine's integer kernels), else used
  // as is (a weight-only kernel).
  bool int8 = false;
  int64_t int8_group_size = 0;
  bool int8_activations = true;
  bool int8_dt_proj = true;  // false: dt_proj stays float (neither engine does this any more)
  // A PEFT LoRA adapter directory, applied as PEFT's unmerged forward does (read here from the
  // files with this file's own reading of adapter_config.json, not through LoraAdapter); empty:
  // none. Its input is never quantized (the engines run LoRA in fp32).
  std::filesystem::path lora_dir;
};

class ReferenceModel {
 public:
  explicit ReferenceModel(const Checkpoint& checkpoint, const ReferenceOptions& options = {});

  // Feeds tokens after the current state; returns the logits after the last one.
  std::vector<double> Forward(std::span<const TokenId> tokens);
  void Reset();
  const ModelConfig& config() const { return c_; }

 private:
  struct Lora {  // y += scale * B (A x)
    size_t rank = 0;
    double scale = 0;
    std::vector<double> a, b;  // [rank, in], [out, rank]
    void AddTo(const std::vector<double>& x, std::vector<double>& y) const;
  };
  struct Layer {
    std::vector<double> norm, in_proj, in_bias, conv, conv_bias, x_proj, dt_proj, dt_bias, a_log, d,
        out_proj, out_bias, gated_norm;
    std::vector<double> conv_state;    // [conv channels, d_conv]: last d_conv inputs, oldest first
    std::vector<double> ssm_state;     // [d_inner, d_state]; Mamba-2 [heads, head_dim, d_state]
    std::map<std::string, Lora> lora;  // by module name: in_proj, x_proj, dt_proj, out_proj
  };
  void ReadLora(const std::filesystem::path& dir);
  // `y` plus the layer's LoRA update of module `name` for input `x` (y unchanged without one).
  static void AddLora(const Layer& L, const char* name, const std::vector<double>& x,
                      std::vector<double>& y);
  std::vector<double> Step(TokenId token);
  // W x (+ b) for the large matrices (the ones --dtype int8 quantizes).
  std::vector<double> Project(const std::vector<double>& w, const std::vector<double>& b,
                              const std::vector<double>& x, size_t n) const;
  // One layer's mixer output for the normalised input `u`.
  std::vector<double> Mamba1Mixer(Layer& L, const std::vector<double>& u);
  std::vector<double> Mamba2Mixer(Layer& L, const std::vector<double>& u);

  ModelConfig c_;
  ReferenceOptions options_;
  std::vector<double> embedding_, norm_f_, lm_head_;
  std::optional<Lora> lora_embeddings_, lora_head_;  // embeddings: a [rank, vocab], b [d, rank]
  std::vector<Layer> layers_;
};

// The reference's greedy continuation of `prompt` (from a reset state), up to `n` tokens, ending
// early before the first step whose best logit leads the runner-up by less than `min_margin` (too
// close to call for an engine in fp32): the tokens an engine's greedy decoding must reproduce.
std::vector<TokenId> ReferenceGreedy(ReferenceModel& ref, std::span<const TokenId> prompt, size_t n,
                                     double min_margin = 1e-3);

}  // namespace mamba::engine::testing
