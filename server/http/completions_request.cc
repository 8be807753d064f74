// Parsing and validation of a /v1/completions body into a CompletionSpec.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/request_validation.h"
#include "engine/status_macros.h"
#include "server/http/completions.h"
#include "server/http/sessions.h"

namespace mamba::server::http {
namespace {

constexpr size_t kMaxPrompts = 1024;
constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();

// prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...]. With a session the prompt is
// the new text of a turn: one prompt, which may be "" or []. Texts get the tokenizer's special
// tokens (vLLM's add_special_tokens, default true) unless the turn continues a session.
absl::Status ParsePrompts(const Json& body, const HandlerContext& ctx, bool session,
                          std::vector<Prompt>* out) {
  bool special = !session;
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "add_special_tokens", &special));
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null())
    return engine::InvalidField("prompt", "'prompt' is required");
  const Json& p = *it;
  if (p.is_string()) {
    out->emplace_back();
    return TokenizePrompt(ctx, p.get<std::string>(), special, &out->back());
  }
  const char* kShape =
      "'prompt' must be a string, an array of strings, an array of token ids "
      "or an array of arrays of token ids";
  if (!p.is_array()) return engine::InvalidField("prompt", kShape);
  if (p.empty() && session) {
    out->emplace_back();  // no new token: the turn continues from the session alone
    return absl::OkStatus();
  }
  if (p.empty()) return engine::InvalidField("prompt", "'prompt' is empty");
  if (p.front().is_number()) {
    out->emplace_back();
    return ReadTokenIds(p, "prompt", &out->back().ids);
  }
  if (p.size() > kMaxPrompts) {
    return engine::InvalidField("prompt",
                                absl::StrCat("at most ", kMaxPrompts, " prompts per request"));
  }
  const bool strings = p.front().is_string();
  for (size_t i = 0; i < p.size(); ++i) {
    const Json& e = p[i];
    out->emplace_back();
    if (strings && e.is_string()) {
      MAMBA_RETURN_IF_ERROR(TokenizePrompt(ctx, e.get<std::string>(), special, &out->back()));
    } else if (!strings && e.is_array()) {
      MAMBA_RETURN_IF_ERROR(ReadTokenIds(e, absl::StrCat("prompt[", i, "]"), &out->back().ids));
    } else {
      return engine::InvalidField("prompt", kShape);
    }
  }
  return absl::OkStatus();
}

// Features we do not implement are refused rather than silently ignored.
absl::Status RefuseUnsupported(const Json& body) {
  if (auto it = body.find("suffix"); it != body.end() && !it->is_null()) {
    return engine::InvalidField("suffix", "'suffix' is not supported");
  }
  return absl::OkStatus();
}

// logit_bias: {"<token id>": bias, ...}; the count, ids and ranges are SamplingParams::Validate's.
absl::Status ReadLogitBias(const Json& body, std::vector<engine::LogitBias>* out) {
  auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) {
    return engine::InvalidField("logit_bias",
                                "'logit_bias' must be an object mapping token ids to biases");
  }
  if (it->size() > engine::kMaxLogitBias) {
    return engine::InvalidField(
        "logit_bias",
        absl::StrCat("'logit_bias' has ", it->size(), " entries; at most ", engine::kMaxLogitBias));
  }
  for (const auto& [key, value] : it->items()) {
    int64_t id = -1;
    const bool digits = !key.empty() && key.size() <= 10 &&
                        key.find_first_not_of("0123456789") == std::string::npos;
    if (digits) id = std::stoll(key);
    if (!digits || id > kIntMax) {
      return engine::InvalidField(
          "logit_bias", absl::StrCat("'logit_bias' keys must be token ids, got \"", key, "\""));
    }
    if (!value.is_number()) {
      return engine::InvalidField(
          "logit_bias", absl::StrCat("'logit_bias' values must be numbers (token ", key, ")"));
    }
    out->push_back({static_cast<engine::TokenId>(id), value.get<float>()});
  }
  return absl::OkStatus();
}

// Wire fields to engine fields; their ranges are Engine::Validate's to check. Unset fields
// take the model's defaults, then OpenAI's (max_tokens 16, temperature 1).
absl::Status ParseSampling(const Json& body, const engine::GenerationDefaults& defaults,
                           engine::SamplingParams* p) {
  p->max_new_tokens = 16;
  *p = defaults.Apply(*p);
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "max_tokens", kIntMin, kIntMax, &p->max_new_tokens));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "temperature", &p->temperature));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "top_p", &p->top_p));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "presence_penalty", &p->presence_penalty));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "frequency_penalty", &p->frequency_penalty));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "min_p", &p->min_p));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "repetition_penalty", &p->repetition_penalty));
  int32_t top_k = p->top_k;  // vLLM's -1 means "off", like our 0
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "top_k", kIntMin, kIntMax, &top_k));
  p->top_k = top_k == -1 ? 0 : top_k;
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "min_tokens", kIntMin, kIntMax, &p->min_new_tokens));
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "ignore_eos", &p->ignore_eos));
  MAMBA_RETURN_IF_ERROR(ReadLogitBias(body, &p->logit_bias));
  MAMBA_RETURN_IF_ERROR(ReadUint64(body, "seed", &p->seed));
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    MAMBA_RETURN_IF_ERROR(ReadTokenIds(*it, "stop_token_ids", &p->stop_token_ids));
  }
  return absl::OkStatus();
}

// Prompt log-probs: `echo` with `logprobs` (OpenAI) and vLLM's `prompt_logprobs` ask for them;
// max_tokens 0 only scores the prompt, so it needs one of echo / prompt_logprobs. Call after
// echo, logprobs and max_tokens are read.
absl::Status ParsePromptLogprobs(const Json& body, CompletionSpec* out) {
  if (auto it = body.find("prompt_logprobs"); it != body.end() && !it->is_null()) {
    int32_t k = 0;
    MAMBA_RETURN_IF_ERROR(ReadInt(body, "prompt_logprobs", kIntMin, kIntMax, &k));
    if (k < 0 || k > engine::kMaxTopLogprobs) {
      return engine::InvalidField(
          "prompt_logprobs",
          absl::StrCat("'prompt_logprobs' must be in [0, ", engine::kMaxTopLogprobs, "], got ", k));
    }
    out->prompt_logprobs = k;
  }
  engine::Request& r = out->request;
  r.prompt_logprobs = -1;
  if (out->echo && out->logprobs) r.prompt_logprobs = *out->logprobs;
  if (out->prompt_logprobs) r.prompt_logprobs = std::max(r.prompt_logprobs, *out->prompt_logprobs);
  if (r.params.max_new_tokens == 0) {
    if (!out->echo && !out->prompt_logprobs) {
      return engine::InvalidField(
          "max_tokens",
          "'max_tokens' 0 generates nothing: it scores the prompt, and needs 'echo': true (with "
          "'logprobs' for the prompt's log-probs) or 'prompt_logprobs'");
    }
    r.prompt_logprobs = std::max(r.prompt_logprobs, 0);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseCompletionRequest(const Json& body, const HandlerContext& ctx,
                                    CompletionSpec* out) {
  std::string model;
  MAMBA_RETURN_IF_ERROR(ReadString(body, "model", &model));
  std::optional<ModelSelection> served = SelectModel(*ctx.state, model);
  if (!served) {
    return engine::WithField(absl::NotFoundError(absl::StrCat(
                                 "the model '", model, "' does not exist; this server serves '",
                                 absl::StrJoin(ModelIds(*ctx.state), "', '"), "'")),
                             "model", "model_not_found");
  }
  out->model = served->name;
  std::string user;  // accepted and ignored (OpenAI's end-user id for abuse monitoring)
  MAMBA_RETURN_IF_ERROR(ReadString(body, "user", &user));

  engine::Request& r = out->request;
  r.adapter = std::move(served->adapter);  // null: the base model
  MAMBA_RETURN_IF_ERROR(ReadSessionId(body, &r.session_id));
  const bool session = !r.session_id.empty();
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "n", kIntMin, kIntMax, &r.n));
  MAMBA_RETURN_IF_ERROR(RefuseUnsupported(body));
  if (session && r.n != 1) {
    return engine::InvalidField("n", "a session continues one conversation: n must be 1");
  }
  out->n = r.n;
  int32_t best_of = r.n;
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "best_of", kIntMin, kIntMax, &best_of));
  MAMBA_RETURN_IF_ERROR(ParseSampling(body, ctx.state->generation_defaults, &r.params));
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "skip_special_tokens", &r.skip_special_tokens));
  std::vector<std::string> stops;
  MAMBA_RETURN_IF_ERROR(ReadStringList(body, "stop", &stops));
  for (std::string& s : stops) {
    if (!s.empty()) r.stop_strings.push_back(std::move(s));  // "" could never match
  }
  float timeout = 0;
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "timeout", &timeout));
  if (timeout < 0) return engine::InvalidField("timeout", "'timeout' must be >= 0 seconds");
  r.deadline = Deadline(ctx.options, timeout);

  MAMBA_RETURN_IF_ERROR(ReadBool(body, "stream", &out->stream));
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      return engine::InvalidField("stream_options", "'stream_options' must be an object");
    }
    MAMBA_RETURN_IF_ERROR(ReadBool(*it, "include_usage", &out->include_usage));
  }
  if (best_of < r.n) {
    return engine::InvalidField("best_of",
                                absl::StrCat("'best_of' must be >= n (", r.n, "), got ", best_of));
  }
  if (best_of > r.n) {
    // best_of completions run (as n); the n with the highest cumulative log-prob are returned.
    if (out->stream) {
      return engine::InvalidField("best_of", "'best_of' > n cannot be streamed");
    }
    if (session) {
      return engine::InvalidField("best_of", "a session continues one conversation: no best_of");
    }
    r.n = best_of;
    r.params.logprobs = true;  // the ranking needs each token's log-prob
  }
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "echo", &out->echo));
  if (auto it = body.find("logprobs"); it != body.end() && !it->is_null()) {
    // Some clients send `logprobs: true`; treat it as "the chosen token only".
    if (it->is_boolean()) {
      if (it->get<bool>()) out->logprobs = 0;
    } else {
      int32_t k = 0;
      MAMBA_RETURN_IF_ERROR(ReadInt(body, "logprobs", kIntMin, kIntMax, &k));
      out->logprobs = k;
    }
  }
  if (out->logprobs) {
    r.params.logprobs = true;
    r.params.top_logprobs = *out->logprobs;
  }
  MAMBA_RETURN_IF_ERROR(ParsePromptLogprobs(body, out));

  MAMBA_RETURN_IF_ERROR(ParsePrompts(body, ctx, session, &out->prompts));
  if (session && out->prompts.size() != 1) {
    return engine::InvalidField("prompt", "with 'session_id', 'prompt' must be a single prompt");
  }
  // Every prompt's request passes the engine's validator before any is submitted.
  if (const engine::Engine* e = ctx.state->engine) {
    engine::Request each = r;
    for (const Prompt& p : out->prompts) {
      each.prompt = p.ids;
      MAMBA_RETURN_IF_ERROR(e->Validate(each));
    }
  }
  return absl::OkStatus();
}

}  // namespace mamba::server::http
