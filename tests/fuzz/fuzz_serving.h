// The serving state the request fuzzers run against: the real gpt-neox tokenizer, and a real
// Engine over the tests' fake backend (tests/engine/fake_backend.h) with the demo model's
// config.json that refuses every Submit after validating it (it is draining), so request handling
// runs end to end without compute kernels.
#pragma once

#include <string>

#include "server/serving_state.h"

namespace mamba::fuzz {

// Limits small enough that fuzz inputs reach them (max_prompt_tokens) and that match the tests.
inline constexpr int kFuzzSlots = 4;
inline constexpr int64_t kFuzzMaxPromptTokens = 512;
inline constexpr int32_t kFuzzMaxNewTokensLimit = 4096;

// Built once per process from $MAMBA_SOURCE_DIR (default "."); aborts if a file is missing.
// health is kServing. Never destroyed (the engine thread idles for the process's life).
server::ServingState& FuzzServingState();

// $MAMBA_SOURCE_DIR + "/" + relative.
std::string SourcePath(const std::string& relative);

}  // namespace mamba::fuzz
