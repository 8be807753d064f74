// Hugging Face TGI's streaming endpoint, POST /generate_stream: {"inputs", "parameters"} in,
// server-sent events out, one per token ({"token": {id, text, logprob, special}}), the last
// with "generated_text" and "details" (finish_reason, generated_tokens, input_length).
#pragma once

#include "client/generation.h"
#include "client/http_api.h"

namespace mamba::client {

// TGI takes text only; parameters: max_new_tokens, do_sample (false for temperature 0),
// temperature (> 0), top_k, top_p (< 1), repetition_penalty, frequency_penalty, seed, stop,
// top_n_tokens, details; extensions sent only when set: min_new_tokens, ignore_eos, and our
// server's top-level session_id (the final event then carries "session").
absl::StatusOr<Json> TgiBody(const GenerateSpec& spec);

class TgiGenerator : public Generator {
 public:
  TgiGenerator(const Endpoint& endpoint, std::string api_key, HttpClientOptions options = {})
      : api_(endpoint, std::move(api_key), std::move(options)) {}
  absl::StatusOr<GenerateResult> Stream(const GenerateSpec& spec, const EventCallback& on_event,
                                        CancelToken* cancel) override;
  const char* api_name() const override { return "tgi"; }
  HttpApi& api() { return api_; }

 private:
  HttpApi api_;
};

}  // namespace mamba::client
