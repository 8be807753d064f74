// OpenAI's legacy completions endpoint, POST /v1/completions: the request body for a spec, and
// OpenAiGenerator, which streams it as server-sent events ("data: {chunk}" ... "data: [DONE]")
// with stream_options.include_usage so that the final chunk carries the server's token counts.
#pragma once

#include "client/generation.h"
#include "client/http_api.h"

namespace mamba::client {

// Fields: model (when set), prompt (string or int array), max_tokens, temperature, top_p, n,
// seed, stop, logprobs (the top_logprobs count; 0 for the chosen token only), presence_penalty,
// frequency_penalty, stream; extensions understood by our server and vLLM: top_k, min_p,
// repetition_penalty, min_tokens, ignore_eos (only sent when set); our server's session_id (the
// prompt is then the new input only; the chunks that finish a choice carry "session").
Json CompletionBody(const GenerateSpec& spec, bool stream);

class OpenAiGenerator : public Generator {
 public:
  OpenAiGenerator(const Endpoint& endpoint, std::string api_key, HttpClientOptions options = {})
      : api_(endpoint, std::move(api_key), std::move(options)) {}
  // A chunk counts as carrying tokens when it has non-empty text or no finish_reason (a token
  // that completes no character); logprobs.tokens, when present, gives the exact count.
  absl::StatusOr<GenerateResult> Stream(const GenerateSpec& spec, const EventCallback& on_event,
                                        CancelToken* cancel) override;
  const char* api_name() const override { return "openai"; }
  // The non-streamed call: the server's JSON answer.
  absl::StatusOr<Json> Complete(const GenerateSpec& spec);

  HttpApi& api() { return api_; }

 private:
  HttpApi api_;
};

}  // namespace mamba::client
