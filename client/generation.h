// What every client API has in common: a generation request (prompt + sampling and stopping
// options), the events of a streamed answer, and its result. The gRPC, OpenAI-completions and
// TGI clients all implement Generator, so the CLI and the load generator treat them alike.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cancel.h"

namespace mamba::client {

// Text, or token ids (sent as ids where the API allows it: gRPC token_ids, OpenAI int array).
struct PromptInput {
  std::string text;
  std::vector<int32_t> ids;
  bool use_ids = false;
  static PromptInput Text(std::string t) { return {std::move(t), {}, false}; }
  static PromptInput Ids(std::vector<int32_t> ids) { return {"", std::move(ids), true}; }
};

// Unset options are left to the server's defaults.
struct SamplingOptions {
  std::optional<int> max_tokens;
  std::optional<int> min_tokens;
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<float> presence_penalty;
  std::optional<float> frequency_penalty;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool logprobs = false;
  int top_logprobs = 0;  // > 0 implies logprobs
  bool ignore_eos = false;
  int n = 1;
};

struct GenerateSpec {
  PromptInput prompt;
  SamplingOptions sampling;
  std::string model;          // OpenAI "model" (empty: not sent; our server then uses its own)
  double timeout_s = 0;       // whole call, 0 = none
  bool include_usage = true;  // OpenAI stream_options.include_usage
  // A server-side session (OpenAI and TGI bodies' "session_id", gRPC GenerateRequest.session_id):
  // the prompt is then only the new input, appended to what the session holds. Empty: none.
  std::string session_id;
  // A LoRA adapter loaded on the server (gRPC GenerateRequest.adapter, OpenAI "model" (in place
  // of `model`), TGI parameters.adapter_id). Empty: the base model.
  std::string adapter;
};

struct Alternative {
  int32_t id = -1;  // -1 when the API gives only text (OpenAI)
  std::string text;
  float logprob = 0;
};

// One streamed message. `tokens` counts the generated tokens it carries (0 for a message that
// only ends a completion or only carries held-back text).
struct StreamEvent {
  int index = 0;     // which completion (n > 1)
  std::string text;  // newly final text (may be empty)
  int tokens = 0;
  std::vector<int32_t> token_ids;        // when the API gives them (gRPC, TGI)
  std::vector<std::string> token_texts;  // per token, with logprobs (bytes may split a character)
  std::vector<float> logprobs;           // per token, when asked for
  std::vector<std::vector<Alternative>> top_logprobs;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total_tokens = 0;
};

// The session a request ran on, as the server reports it after the request: its id and the
// tokens it now holds (every prompt and generated token of its turns).
struct SessionReport {
  std::string id;
  int64_t tokens = 0;
};

struct CompletionResult {
  int index = 0;
  std::string text;
  std::vector<int32_t> token_ids;  // streamed ids, when the API gives them
  std::string finish_reason;       // "stop", "length", "cancelled", ... as the API names it
  int64_t streamed_tokens = 0;     // sum of StreamEvent::tokens for this index
  std::optional<Usage> usage;      // the server's, per completion (gRPC)
  std::optional<double> queue_s;   // the server's queue time, when it reports one (gRPC)
  std::optional<double> server_ttft_s;
};

struct GenerateResult {
  std::vector<CompletionResult> completions;  // by index
  std::optional<Usage> usage;                 // the server's, for the whole request
  bool server_counted_output = false;         // the generated-token count came from the server
  // The server's "session" object (gRPC: the id sent and Usage.session_tokens), when there was one.
  std::optional<SessionReport> session;

  // Generated tokens: the server's usage when present, else the streamed count.
  int64_t OutputTokens() const;
  // Prompt tokens as the server counted them, when it said.
  std::optional<int64_t> PromptTokens() const;
};

using EventCallback = std::function<void(const StreamEvent&)>;

// One generation API over one connection (HTTP) or channel (gRPC). Not thread-safe: one call at
// a time; make one per thread.
class Generator {
 public:
  virtual ~Generator() = default;
  // Streams the answer: `on_event` runs on the calling thread for each message as soon as it is
  // parsed. The error of a failed call says what failed ("HTTP 429: ...", "gRPC
  // RESOURCE_EXHAUSTED: ...") and carries a kind (errors.h). Completions that ended early
  // (cancelled, deadline) are errors too.
  virtual absl::StatusOr<GenerateResult> Stream(const GenerateSpec& spec,
                                                const EventCallback& on_event,
                                                CancelToken* cancel) = 0;
  // "grpc", "openai" or "tgi".
  virtual const char* api_name() const = 0;
};

}  // namespace mamba::client
