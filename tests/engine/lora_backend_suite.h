// LoRA adapters on every backend (issue 15): the backend suite's devices and model variants run
// under random PEFT adapters, against the float64 reference applying PEFT's unmerged forward, and
// against themselves (a step mixing adapters and the base model, any chunking). A device's test
// binary instantiates LoraBackendTest with LoraCases(device), as it does BackendTest.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/lora/lora_adapter.h"
#include "engine/lora/lora_writer.h"
#include "tests/engine/backend_suite.h"

namespace mamba::engine::testing {

// One adapter configuration on one model variant.
struct LoraVariant {
  std::string name;
  BackendVariant model;
  std::vector<std::string> targets;
  int64_t rank = 8;
  double alpha = 16;
  bool rslora = false;
  kernels::DType dtype = kernels::DType::kF32;  // the adapter's stored dtype
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::vector<int64_t> layers;  // layers_to_transform (empty: all)
  LoraFileFormat format = LoraFileFormat::kSafetensors;
  double b_std = -1;  // RandomLoraOptions::b_std (< 0: the writer's choice)
};

std::vector<LoraVariant> LoraVariants();

struct LoraCase {
  BackendDevice device;
  LoraVariant variant;
};
std::vector<LoraCase> LoraCases(const BackendDevice& device);
void PrintTo(const LoraCase& c, std::ostream* os);
std::string LoraCaseName(const ::testing::TestParamInfo<LoraCase>& info);

class LoraBackendTest : public ::testing::TestWithParam<LoraCase> {
 protected:
  void SetUp() override;
  std::unique_ptr<Backend> MakeBackend(int slots, int64_t step_tokens);
  // Writes the variant's adapter with `seed` (and other targets when given) and loads it into
  // `backend`; the directory is returned through `dir` when asked.
  std::shared_ptr<const AdapterWeights> Adapter(Backend& backend, uint64_t seed,
                                                std::vector<std::string> targets = {},
                                                std::filesystem::path* dir = nullptr);
  ::testing::AssertionResult Same(const Backend& b, std::span<const float> x,
                                  std::span<const float> y) const;
  int64_t vocab() const { return checkpoint_->config().vocab_size; }

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  ReferenceOptions reference_options_;  // the variant's int8 scheme; no adapter
  BackendTolerances tol_;
  std::vector<std::shared_ptr<const LoraAdapter>> hosts_;  // kept for the test's length
};

}  // namespace mamba::engine::testing
