// Offline generation: runs many requests through a Backend with continuous batching (each step
// mixes prompt chunks of new requests with decode tokens of running ones), on the calling
// thread, through the same batching loop and scheduler as the serving Engine
// (engine/serving/batch_loop.h). Used by mamba-generate and the tests.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/sampling.h"

namespace mamba::engine {

struct GenerationRequest {
  std::vector<TokenId> prompt;  // at least one token
  SamplingParams params;
  int64_t arrival_step = 0;  // not admitted before this step (to test arrival orders)
};

enum class FinishReason { kStop, kLength };
const char* Name(FinishReason r);

struct GenerationResult {
  std::vector<SampledToken> tokens;
  FinishReason finish = FinishReason::kLength;
};

struct GenerateOptions {
  int64_t prefill_chunk = 0;  // max prompt tokens per request per step; 0 = whole prompt
  int64_t max_step_tokens = int64_t{1} << 40;  // token budget of one step (default: unbounded)
  uint64_t seed = 0;                           // fallback seed for request i without one: seed + i
  DecodePath decode_path = DecodePath::kAuto;  // how decode rows run (engine/backend.h)
  // Called after every sampled token: (request index, token).
  std::function<void(size_t, const SampledToken&)> on_token;
};

absl::StatusOr<std::vector<GenerationResult>> Generate(Backend& backend,
                                                       std::span<const GenerationRequest> requests,
                                                       const GenerateOptions& options = {});

}  // namespace mamba::engine
