// OpenAI's legacy completions endpoint, POST /v1/completions: the request parsed into engine
// requests (one per prompt, each with n completions), answered at once or as SSE chunks.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "server/http/exchange.h"
#include "server/http/generation_call.h"
#include "server/http/json_util.h"

namespace mamba::server::http {

struct CompletionSpec {
  std::vector<Prompt> prompts;  // choices are indexed prompt_index * n + i
  std::string model;            // the name answers report (SelectModel: a served or adapter name)
  engine::Request request;      // everything but the prompt; request.n completions run
  int32_t n = 1;                // completions returned per prompt: request.n, or fewer (best_of)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;
  std::optional<int> logprobs;  // OpenAI `logprobs`: alternatives per token, when set
  // vLLM's `prompt_logprobs`: alternatives per prompt token, answered in
  // choices[i].prompt_logprobs (the first token null), when set.
  std::optional<int> prompt_logprobs;
};

// Fields (OpenAI): model (a LoRA adapter's name runs under that adapter; any other name the base
// model unless ServingState::strict_model_name or adapters_loaded), prompt (string |
// [string] | [int] | [[int]]), max_tokens (16), temperature, top_p, n, best_of (>= n: best_of
// run, the n with the highest cumulative log-prob returned; not with stream), logit_bias
// ({"<id>": bias in [-100, 100]}, at most 300), stream, stream_options.include_usage, stop,
// seed, logprobs, echo, presence_penalty, frequency_penalty, user (ignored); extensions:
// top_k (-1 or 0 = off), min_p, repetition_penalty, min_tokens, ignore_eos,
// skip_special_tokens, stop_token_ids, timeout (seconds), session_id (continue that session: the
// prompt is then one prompt, the turn's new text, possibly empty; n must be 1), prompt_logprobs
// (vLLM). `echo` with `logprobs` reports the prompt tokens' log-probs (computed: the first token's
// null, as OpenAI did); `max_tokens` 0 scores the prompt without generating and needs `echo` or
// `prompt_logprobs` (lm-evaluation-harness's loglikelihood requests). Unknown fields are
// ignored; suffix is refused when given. Ranges and limits are checked by
// Engine::Validate, on each prompt's request, before anything is submitted; errors name the field
// (api_error.h).
absl::Status ParseCompletionRequest(const Json& body, const HandlerContext& ctx,
                                    CompletionSpec* out);

void HandleCompletions(const HandlerContext& ctx, const HttpRequest& request,
                       std::shared_ptr<Exchange> exchange);

// "cmpl-" / "gen-" + 24 random hex digits.
std::string RandomId(std::string_view prefix);

}  // namespace mamba::server::http
