#include "engine/generate.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace mamba::engine {
namespace {

struct Running {
  size_t index;
  SlotId slot;
  int64_t consumed = 0;  // prompt tokens already in the state
  std::unique_ptr<Sampler> sampler;
  TokenId last = 0;
};

}  // namespace

const char* Name(FinishReason r) { return r == FinishReason::kStop ? "stop" : "length"; }

absl::StatusOr<std::vector<GenerationResult>> Generate(Backend& backend,
                                                       std::span<const GenerationRequest> requests,
                                                       const GenerateOptions& options) {
  const ModelConfig& cfg = backend.config();
  std::vector<TokenId> eos(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end());
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].prompt.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": empty prompt"));
    }
    if (absl::Status s = requests[i].params.Validate(cfg.vocab_size); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": ", s.message()));
    }
  }
  std::vector<GenerationResult> results(requests.size());
  std::deque<size_t> waiting;
  for (size_t i = 0; i < requests.size(); ++i) waiting.push_back(i);
  std::vector<SlotId> free_slots;
  for (int s = backend.num_slots() - 1; s >= 0; --s) free_slots.push_back(SlotId(s));
  std::vector<Running> running;
  Logits logits;
  for (int64_t step = 0; !waiting.empty() || !running.empty(); ++step) {
    // Admit in arrival order (FCFS) while slots are free.
    while (!waiting.empty() && !free_slots.empty() &&
           requests[waiting.front()].arrival_step <= step) {
      const size_t i = waiting.front();
      waiting.pop_front();
      Running r{i, free_slots.back(), 0, nullptr, 0};
      free_slots.pop_back();
      r.sampler =
          std::make_unique<Sampler>(requests[i].params, eos, requests[i].prompt, options.seed + i);
      running.push_back(std::move(r));
    }
    if (running.empty()) continue;
    std::vector<ChunkInput> chunks;
    for (Running& r : running) {
      const auto& prompt = requests[r.index].prompt;
      const auto left = static_cast<int64_t>(prompt.size()) - r.consumed;
      if (left > 0) {
        const int64_t take =
            options.prefill_chunk > 0 ? std::min(left, options.prefill_chunk) : left;
        chunks.push_back(ChunkInput{r.slot,
                                    std::span<const TokenId>(prompt).subspan(r.consumed, take),
                                    r.consumed == 0, take == left});
        r.consumed += take;
      } else {
        chunks.push_back(ChunkInput{r.slot, std::span<const TokenId>(&r.last, 1), false, true});
      }
    }
    MAMBA_RETURN_IF_ERROR(backend.Prefill(chunks, &logits));
    int64_t row = 0;
    std::vector<Running> still;
    for (size_t k = 0; k < running.size(); ++k) {
      Running& r = running[k];
      if (!chunks[k].want_logits) {
        still.push_back(std::move(r));
        continue;
      }
      SampledToken tok = r.sampler->Sample(logits.Row(row++));
      if (options.on_token) options.on_token(r.index, tok);
      r.last = tok.id;
      results[r.index].tokens.push_back(std::move(tok));
      const Sampler::Finish f = r.sampler->CheckFinish(r.last);
      if (f == Sampler::Finish::kNone) {
        still.push_back(std::move(r));
      } else {
        results[r.index].finish =
            f == Sampler::Finish::kStop ? FinishReason::kStop : FinishReason::kLength;
        free_slots.push_back(r.slot);
      }
    }
    running = std::move(still);
  }
  return results;
}

}  // namespace mamba::engine
