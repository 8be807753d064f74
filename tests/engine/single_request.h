// The tests' independent oracle for anything that batches: one request alone on a backend,
// its prompt prefilled in one chunk and then decoded one token per Backend::Decode call, with
// its own Sampler. No scheduler, no batching loop.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/sampling.h"

namespace mamba::engine::testing {

// Generates until the sampler says stop or length; uses slot 0. `fallback_seed` as the engine
// passes it (the batching loop gives completion i of a request fallback_seed + i).
absl::StatusOr<std::vector<SampledToken>> SingleRequest(Backend& backend,
                                                        std::span<const TokenId> prompt,
                                                        const SamplingParams& params,
                                                        uint64_t fallback_seed);

}  // namespace mamba::engine::testing
