// The engine tests' helpers: tiny random checkpoints and their variants, prompts; the temp dir,
// source dir and allclose of tests/support/ under their engine::testing names.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_writer.h"
#include "gtest/gtest.h"
#include "tests/support/all_close.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine::testing {

using ::mamba::testing::AllClose;
using ::mamba::testing::SourceDir;
using ::mamba::testing::TempDir;
using ::mamba::testing::Tolerance;

// A small config used across tests: d_model 32, 2 layers, vocab 96.
ModelConfig SmallConfig();

// Writes a random checkpoint (perturbed constants) to dir/name and returns its path.
std::filesystem::path WriteModel(const TempDir& dir, const std::string& name,
                                 const RandomCheckpointOptions& options);

// One random-checkpoint configuration of the backend tests (CPU and CUDA engines): stored and
// compute dtype, the optional tensors and layouts, and the shapes.
struct BackendVariant {
  const char* name;
  kernels::DType stored = kernels::DType::kF32;
  ComputeDType compute = ComputeDType::kAuto;
  bool use_bias = false, no_conv_bias = false, untied = false, mamba_ssm = false;
  int shards = 1;
  int64_t hidden = 32, d_state = 16, dt_rank = 4, conv = 4, layers = 2;
  bool falcon = false;  // model_type falcon_mamba (mixer RMS norms, eps 1e-4 to see it honoured)
  // model_type mamba2 when head_dim > 0: heads = (2 * hidden - mlp) / head_dim in n_groups groups;
  // mlp > 0 (mamba_ssm's d_ssm < d_inner) needs the mamba_ssm layout; dt limits when max > 0.
  int64_t head_dim = 0, n_groups = 1, mlp = 0;
  double dt_min = 0.0, dt_max = 0.0;
  int64_t int8_group_size = 0;  // with compute int8: inputs per scale (0: per row)
};

// Writes the variant's checkpoint (seed 42, perturbed constants) under dir and opens it.
absl::StatusOr<std::shared_ptr<const Checkpoint>> OpenVariantModel(const TempDir& dir,
                                                                   const BackendVariant& v);

// `n` token ids in [0, vocab), from `seed`.
std::vector<TokenId> RandomPrompt(int64_t n, int64_t vocab, uint64_t seed);

// Backend::Decode with braced lists (std::span has no initializer_list constructor in C++20).
absl::Status Dec(Backend& b, std::vector<SlotId> slots, std::vector<TokenId> tokens, Logits* l);

}  // namespace mamba::engine::testing
