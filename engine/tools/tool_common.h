// Flags and set-up shared by the offline tools: engine options, sampling options, model loading.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/sampling.h"
#include "engine/tools/demo_model.h"

namespace mamba::engine::tools {

struct EngineFlags {
  std::string model_dir = DemoModelDir();
  std::string device = "auto";
  std::string dtype = "auto";
  int64_t int8_group_size = 0;
  int threads = 0;
  int slots = 16;
  int64_t max_step_tokens = 2048;
  std::string log_level = "info";
};

void AddEngineFlags(CLI::App& app, EngineFlags* f);
void AddSamplingFlags(CLI::App& app, SamplingParams* p);

// Sets the log level, opens the checkpoint and creates the backend.
absl::StatusOr<std::unique_ptr<Backend>> LoadBackend(const EngineFlags& f, bool profile = false);

// "1,2,3" -> ids.
absl::StatusOr<std::vector<TokenId>> ParseIdList(const std::string& s);

}  // namespace mamba::engine::tools
