#include "tests/engine/single_request.h"

#include "engine/status_macros.h"

namespace mamba::engine::testing {

absl::StatusOr<std::vector<SampledToken>> SingleRequest(Backend& backend,
                                                        std::span<const TokenId> prompt,
                                                        const SamplingParams& params,
                                                        uint64_t fallback_seed) {
  const ModelConfig& cfg = backend.config();
  Sampler sampler(params, {cfg.eos_token_ids.begin(), cfg.eos_token_ids.end()}, prompt,
                  fallback_seed);
  Logits logits;
  const ChunkInput whole{SlotId(0), prompt, /*start=*/true, /*want_logits=*/true};
  MAMBA_RETURN_IF_ERROR(backend.Prefill({&whole, 1}, &logits));
  std::vector<SampledToken> out;
  while (true) {
    out.push_back(sampler.Sample(logits.Row(0)));
    if (sampler.CheckFinish(out.back().id) != Sampler::Finish::kNone) return out;
    const SlotId slot(0);
    const TokenId last = out.back().id;
    MAMBA_RETURN_IF_ERROR(backend.Decode({&slot, 1}, {&last, 1}, &logits));
  }
}

}  // namespace mamba::engine::testing
