// What a front end submits to the Engine and what it gets back: a request (prompt ids, sampling,
// stop strings, n, deadline) and a sink that receives each completion's tokens and its end.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampling.h"
#include "engine/types.h"

namespace mamba::engine {

struct ServedAdapter;

using Clock = std::chrono::steady_clock;

struct Request {
  std::vector<TokenId> prompt;  // at least one token, all < vocab_size
  SamplingParams params;
  std::vector<std::string> stop_strings;  // generation ends at the first match; text excludes it
  int n = 1;  // completions of this prompt (prefilled once, state copied)
  std::optional<Clock::time_point> deadline;  // unfinished by then -> kDeadline
  bool skip_special_tokens = true;            // in the streamed text
  // Continue this session (engine/serving/session_store.h): `prompt` is then only the new
  // tokens (may be empty when the session holds some), and the turn is saved into the session.
  std::string session_id;
  // Prompt log-probs: -1 off; k >= 0 reports each prompt token's log-prob (the raw model's, as
  // for generated tokens) and its k best alternatives in one PromptEvent. Every position reported
  // is computed: such a request is not served from the state cache (a session turn still resumes
  // from its session's state; see PromptEvent). With it, params.max_new_tokens may be 0: score
  // the prompt without generating.
  int32_t prompt_logprobs = -1;
  // The LoRA adapter to run under (engine/lora/adapter_registry.h: the front end finds it by
  // name); null: the base model. Held until the request ends, so unloading it meanwhile is safe.
  // State-cache entries and sessions are keyed by it: a state computed under one adapter is
  // never resumed under another or the base model.
  std::shared_ptr<const ServedAdapter> adapter;
};

enum class Finish {
  kStop,       // eos, a stop token id or a stop string
  kLength,     // max_new_tokens
  kCancelled,  // the client went away or cancelled
  kDeadline,   // the request's deadline passed
  kError,      // an engine failure; status says what
};
const char* Name(Finish f);

struct TokenEvent {
  int index = 0;       // which of the n completions
  SampledToken token;  // id, log-prob and alternatives (when asked)
  std::string text;    // newly final text (stop strings cut; may be empty)
};

// The prompt's log-probs (Request::prompt_logprobs), sent once before the first token of any
// completion. tokens[i] is the token at position `first + i` of the prompt the engine ran (a
// session turn's: the session's tokens, then the new ones), given every token before it; the
// entries run to the prompt's end, so they align with the END of the prompt a client sent. The
// first token of a sequence has none (first >= 1); a session turn reports exactly its new
// tokens (the first one given the session, from the logits the session keeps or by feeding its
// last token again).
struct PromptEvent {
  int64_t first = 1;
  std::vector<SampledToken> tokens;  // id = the prompt token; logprob; rank; top (k best)
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // this completion's generated tokens
  int64_t cached_tokens = 0;      // prompt tokens restored from the state cache (not computed)
};

struct FinishEvent {
  int index = 0;
  Finish reason = Finish::kLength;
  absl::Status status;                // OK unless kCancelled / kDeadline / kError
  std::string text;                   // final text still held back (flushed), if any
  std::string matched_stop;           // the stop string that ended it, if one did
  std::optional<TokenId> stop_token;  // the eos / stop id that ended it, if one did
  Usage usage;
  double queue_seconds = 0;    // submit -> first scheduled
  double ttft_seconds = 0;     // submit -> first token (0 if none)
  double e2e_seconds = 0;      // submit -> finish
  int64_t session_tokens = 0;  // tokens the request's session holds after it (0: no session)
  std::string adapter;         // the LoRA adapter's name (Request::adapter); empty: the base model
};

// Receives a request's events on the engine's scheduler thread, in order, per completion index:
// [OnPrompt] then OnToken* then exactly one OnFinish. Implementations must not block (queue and
// return); a slow client is the front end's to bound, by cancelling.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void OnToken(const TokenEvent& event) = 0;
  virtual void OnFinish(const FinishEvent& event) = 0;
  // Only for requests with prompt_logprobs >= 0: once, before any OnToken / OnFinish of a
  // completion that ran (a request ended before its prompt finished never sends it).
  virtual void OnPrompt(const PromptEvent& event) { (void)event; }
};

}  // namespace mamba::engine
