// Hugging Face text-generation-inference's API: POST /generate (one JSON answer) and
// POST /generate_stream (SSE token events), with TGI's `details` and `top_tokens` shapes.
#pragma once

#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "server/http/exchange.h"
#include "server/http/generation_call.h"
#include "server/http/json_util.h"

namespace mamba::server::http {

struct TgiSpec {
  Prompt prompt;
  engine::Request request;  // everything but the prompt
  bool details = false;
  bool decoder_input_details = false;  // prefill tokens with their log-probs in details
  bool return_full_text = false;
  int32_t top_n_tokens = 0;
  bool sampling = false;  // do_sample: the seed is reported only then
  int32_t best_of = 1;    // sequences run (request.n); the best answers, the others in details
};

// {"inputs": str, "parameters": {max_new_tokens (100), do_sample (false = greedy whatever the
// temperature), temperature, top_k, top_p, repetition_penalty, frequency_penalty, stop, seed,
// details, decoder_input_details, top_n_tokens, return_full_text, best_of, adapter_id (a loaded
// LoRA adapter's name, 404 when none has it; absent or "": the base model); extensions: timeout
// (seconds), ignore_eos}, "session_id" (extension: continue that session; "inputs" is then the
// turn's new text, possibly "")}. A sampled request
// without a seed gets a random one, reported in details as TGI does. best_of (1 to the engine's
// slots, as n) runs that many sequences and answers the one with the highest sum of log-probs;
// as TGI, it needs sampling (do_sample, or temperature, top_k, top_p or typical_p given) and no
// stream; unlike TGI, a seed is allowed (sequence i uses seed + i); not with a session.
absl::Status ParseTgiRequest(const Json& body, const HandlerContext& ctx, TgiSpec* out);

// POST /generate (stream false), /generate_stream (true), or / (nullopt: the body's "stream",
// default false, chooses, as TGI's compat route). A stream refuses decoder_input_details and
// best_of > 1 (422, as TGI). With best_of > 1 and details, details.best_of_sequences holds the
// other sequences (generated_text, finish_reason, generated_tokens, seed, prefill, tokens,
// [top_tokens]) in the order they ran.
void HandleTgiGenerate(const HandlerContext& ctx, const HttpRequest& request,
                       std::shared_ptr<Exchange> exchange, std::optional<bool> stream);

// GET /info in TGI's shape: model_id, model_dtype ("torch.float32"), model_device_type,
// max_concurrent_requests (slots + queue), max_input_tokens (and 1.x's max_input_length),
// max_total_tokens (prompt limit + max_new_tokens limit), max_batch_total_tokens (the step
// budget), max_best_of (the slots), max_stop_sequences, version; TGI's other keys null or
// absent.
OrderedJson TgiInfo(const HandlerContext& ctx);

}  // namespace mamba::server::http
