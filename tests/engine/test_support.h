// Shared test helpers: temporary directories, tiny random checkpoints, tolerance checks.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_writer.h"
#include "gtest/gtest.h"

namespace mamba::engine::testing {

// The repository root (MAMBA_SOURCE_DIR, set by ctest; else the current directory).
std::filesystem::path SourceDir();

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

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
};

// Writes the variant's checkpoint (seed 42, perturbed constants) under dir and opens it.
absl::StatusOr<std::shared_ptr<const Checkpoint>> OpenVariantModel(const TempDir& dir,
                                                                   const BackendVariant& v);

// `n` token ids in [0, vocab), from `seed`.
std::vector<TokenId> RandomPrompt(int64_t n, int64_t vocab, uint64_t seed);

// Backend::Decode with braced lists (std::span has no initializer_list constructor in C++20).
absl::Status Dec(Backend& b, std::vector<SlotId> slots, std::vector<TokenId> tokens, Logits* l);

// |got - want| <= atol + rtol * |want| elementwise; NaN never passes. Returns the worst excess
// description via gtest failures (at most a few reported).
::testing::AssertionResult AllClose(std::span<const float> got, std::span<const double> want,
                                    double atol, double rtol);

}  // namespace mamba::engine::testing
