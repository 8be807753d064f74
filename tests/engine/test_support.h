// Shared test helpers: temporary directories, tiny random checkpoints, tolerance checks.
#pragma once

#include <filesystem>
#include <span>
#include <string>

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

// |got - want| <= atol + rtol * |want| elementwise; NaN never passes. Returns the worst excess
// description via gtest failures (at most a few reported).
::testing::AssertionResult AllClose(std::span<const float> got, std::span<const double> want,
                                    double atol, double rtol);

}  // namespace mamba::engine::testing
