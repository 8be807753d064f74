#include "engine/generate.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/serving/batch_loop.h"
#include "engine/status_macros.h"

namespace mamba::engine {
namespace {

// Collects one request's tokens and end from the loop's events (all on this thread).
class ResultSink : public RequestSink {
 public:
  ResultSink(GenerationResult* result, size_t index, const GenerateOptions& options)
      : result_(result), index_(index), options_(options) {}
  void OnToken(const TokenEvent& e) override {
    if (options_.on_token) options_.on_token(index_, e.token);
    result_->tokens.push_back(e.token);
  }
  void OnFinish(const FinishEvent& e) override {
    result_->finish = e.reason == Finish::kStop ? FinishReason::kStop : FinishReason::kLength;
    if (e.reason != Finish::kStop && e.reason != Finish::kLength) status_ = e.status;
  }
  const absl::Status& status() const { return status_; }

 private:
  GenerationResult* result_;
  size_t index_;
  const GenerateOptions& options_;
  absl::Status status_;
};

}  // namespace

const char* Name(FinishReason r) { return r == FinishReason::kStop ? "stop" : "length"; }

absl::StatusOr<std::vector<GenerationResult>> Generate(Backend& backend,
                                                       std::span<const GenerationRequest> requests,
                                                       const GenerateOptions& options) {
  const ModelConfig& cfg = backend.config();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].prompt.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": empty prompt"));
    }
    for (TokenId t : requests[i].prompt) {
      if (t < 0 || t >= cfg.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("request ", i, ": token id ", t,
                                                       " is outside the vocabulary [0, ",
                                                       cfg.vocab_size, ")"));
      }
    }
    if (absl::Status s = requests[i].params.Validate(cfg.vocab_size); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("request ", i, ": ", s.message()));
    }
  }
  if (options.max_step_tokens < 1) {
    return absl::InvalidArgumentError("max_step_tokens must be positive");
  }
  SchedulerOptions so;
  so.max_step_tokens = options.max_step_tokens;
  so.prefill_chunk = options.prefill_chunk;
  BatchLoop loop(backend, nullptr, so, nullptr);
  loop.set_decode_path(options.decode_path);
  std::vector<GenerationResult> results(requests.size());
  std::vector<std::shared_ptr<ResultSink>> sinks;
  // Requests enter the loop at their arrival step, in order (the loop admits FCFS).
  size_t next = 0;
  for (int64_t step = 0; next < requests.size() || !loop.Idle(); ++step) {
    while (next < requests.size() && requests[next].arrival_step <= step) {
      auto live = std::make_unique<LiveRequest>();
      live->view.id = RequestId(next + 1);
      live->req.prompt = requests[next].prompt;
      live->req.params = requests[next].params;
      live->fallback_seed = options.seed + next;
      live->submitted = Clock::now();
      sinks.push_back(std::make_shared<ResultSink>(&results[next], next, options));
      live->sink = sinks.back();
      loop.Enqueue(std::move(live));
      ++next;
    }
    loop.Step();
  }
  for (const auto& sink : sinks) MAMBA_RETURN_IF_ERROR(sink->status());
  return results;
}

}  // namespace mamba::engine
