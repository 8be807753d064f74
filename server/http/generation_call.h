// The shared machinery of an HTTP call that runs engine requests: submitting with sinks that
// hop each event onto the connection's strand (the engine thread never blocks or formats),
// cancelling every request when the client goes away or falls too far behind, and turning
// Submit refusals into HTTP errors. The OpenAI and TGI handlers derive from it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/http/api_error.h"
#include "server/http/exchange.h"
#include "server/http/json_util.h"
#include "server/serving_state.h"

namespace mamba::server {
class Metrics;
}

namespace mamba::server::http {

// What every handler may use; outlives the server's I/O threads.
struct HandlerContext {
  ServingState* state = nullptr;
  Metrics* metrics = nullptr;
  FrontEndOptions options;
};

// A prompt as the client gave it: ids always, the text when it came as text.
struct Prompt {
  std::vector<engine::TokenId> ids;
  std::optional<std::string> text;
};

// The deadline of a request: the server's request_timeout_ms and a per-request `timeout` in
// seconds (0 = none), whichever ends first.
std::optional<engine::Clock::time_point> Deadline(const FrontEndOptions& options, double timeout_s);

// Text of one token for logprobs and TGI token lists (the token's bytes lossily decoded; a
// special token's content). Empty for ids without a token.
std::string TokenText(const engine::Tokenizer* tokenizer, engine::TokenId id);

// Encodes a text prompt, inside the tokenizer's post-processor template when `special` (HF's
// add_special_tokens): FailedPrecondition without a tokenizer, InvalidArgument ("prompt") when
// the text cannot be tokenized. Its length (and emptiness) is Engine::Validate's to check.
absl::Status TokenizePrompt(const HandlerContext& ctx, const std::string& text, bool special,
                            Prompt* out);

// An engine that accepts requests, or Unavailable while starting or draining.
absl::StatusOr<engine::Engine*> ServingEngine(const HandlerContext& ctx);

// One server-sent event carrying `j`: "data: <json>\n\n".
std::string Sse(const OrderedJson& j);

// best_of's ranking (OpenAI, vLLM, TGI): the indexes of the completions' cumulative log-probs
// (of their generated tokens) from the highest to the lowest, ties in index order.
std::vector<size_t> BestFirst(std::span<const double> cumulative_logprobs);

class GenerationCall : public std::enable_shared_from_this<GenerationCall> {
 public:
  // `style`: the API family whose error shape the call answers in.
  GenerationCall(const HandlerContext& ctx, std::shared_ptr<Exchange> exchange, ApiStyle style);
  virtual ~GenerationCall() = default;

 protected:
  // Submits one engine request whose events arrive at OnToken / OnFinish with `prompt_index`,
  // on the strand. On refusal returns the error (nothing was submitted for it). The first
  // successful Submit registers the client-gone hook.
  std::optional<ApiError> Submit(engine::Engine* engine, engine::Request request, int prompt_index);
  // Cancels every submitted request (idempotent per request; the engine ignores finished ids).
  void CancelAll();
  // Ends the exchange with an error response and cancels whatever was submitted.
  void Fail(const ApiError& error);
  // The error a completion that ended badly (kCancelled / kDeadline / kError) is reported as.
  ApiError FinishError(const absl::Status& status) const;
  // Writes stream bytes; when the client is too slow or gone, cancels everything, aborts the
  // connection and returns false.
  bool WriteOrCancel(std::string data);

  virtual void OnToken(int prompt_index, const engine::TokenEvent& event) = 0;
  virtual void OnFinish(int prompt_index, const engine::FinishEvent& event) = 0;
  // The prompt's log-probs (requests with prompt_logprobs >= 0), before any token of it.
  virtual void OnPrompt(int prompt_index, const engine::PromptEvent& event) {
    (void)prompt_index;
    (void)event;
  }

  const HandlerContext& ctx_;
  std::shared_ptr<Exchange> exchange_;
  ApiStyle style_;
  engine::Engine* engine_ = nullptr;
  bool done_ = false;  // the response is complete or abandoned: later events are ignored

 private:
  class Sink;
  std::vector<engine::RequestId> submitted_;
};

}  // namespace mamba::server::http
