// Parsing and validation of a /v1/completions body into a CompletionSpec.
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "server/http/completions.h"

namespace mamba::server::http {
namespace {

constexpr size_t kMaxPrompts = 1024;
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();

// prompt: "text" | ["text", ...] | [id, ...] | [[id, ...], ...].
absl::Status ParsePrompts(const Json& body, const HandlerContext& ctx, std::vector<Prompt>* out) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return absl::InvalidArgumentError("'prompt' is required");
  const Json& p = *it;
  if (p.is_string()) {
    out->emplace_back();
    return TokenizePrompt(ctx, p.get<std::string>(), &out->back());
  }
  const char* kShape =
      "'prompt' must be a string, an array of strings, an array of token ids "
      "or an array of arrays of token ids";
  if (!p.is_array()) return absl::InvalidArgumentError(kShape);
  if (p.empty()) return absl::InvalidArgumentError("'prompt' is empty");
  if (p.front().is_number()) {
    out->emplace_back();
    MAMBA_RETURN_IF_ERROR(ReadTokenIds(p, "prompt", &out->back().ids));
    return CheckPromptLength(ctx, out->back());
  }
  if (p.size() > kMaxPrompts) {
    return absl::OutOfRangeError(absl::StrCat("at most ", kMaxPrompts, " prompts per request"));
  }
  const bool strings = p.front().is_string();
  for (size_t i = 0; i < p.size(); ++i) {
    const Json& e = p[i];
    out->emplace_back();
    if (strings && e.is_string()) {
      MAMBA_RETURN_IF_ERROR(TokenizePrompt(ctx, e.get<std::string>(), &out->back()));
    } else if (!strings && e.is_array()) {
      MAMBA_RETURN_IF_ERROR(ReadTokenIds(e, absl::StrCat("prompt[", i, "]"), &out->back().ids));
      MAMBA_RETURN_IF_ERROR(CheckPromptLength(ctx, out->back()));
    } else {
      return absl::InvalidArgumentError(kShape);
    }
  }
  return absl::OkStatus();
}

// Features we do not implement are refused rather than silently ignored.
absl::Status RefuseUnsupported(const Json& body, int32_t n) {
  if (auto it = body.find("suffix"); it != body.end() && !it->is_null()) {
    return absl::InvalidArgumentError("'suffix' is not supported");
  }
  if (auto it = body.find("logit_bias");
      it != body.end() && !it->is_null() && !(it->is_object() && it->empty())) {
    return absl::InvalidArgumentError("'logit_bias' is not supported");
  }
  int32_t best_of = n;
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "best_of", 1, kIntMax, &best_of));
  if (best_of != n) return absl::InvalidArgumentError("'best_of' other than n is not supported");
  return absl::OkStatus();
}

absl::Status ParseSampling(const Json& body, engine::SamplingParams* p) {
  p->max_new_tokens = 16;
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "max_tokens", 1, kIntMax, &p->max_new_tokens));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "temperature", &p->temperature));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "top_p", &p->top_p));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "presence_penalty", &p->presence_penalty));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "frequency_penalty", &p->frequency_penalty));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "min_p", &p->min_p));
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "repetition_penalty", &p->repetition_penalty));
  int32_t top_k = 0;  // vLLM's -1 means "off", like our 0
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "top_k", -1, kIntMax, &top_k));
  p->top_k = std::max(top_k, 0);
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "min_tokens", 0, kIntMax, &p->min_new_tokens));
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "ignore_eos", &p->ignore_eos));
  MAMBA_RETURN_IF_ERROR(ReadUint64(body, "seed", &p->seed));
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    MAMBA_RETURN_IF_ERROR(ReadTokenIds(*it, "stop_token_ids", &p->stop_token_ids));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseCompletionRequest(const Json& body, const HandlerContext& ctx,
                                    CompletionSpec* out) {
  std::string model;
  MAMBA_RETURN_IF_ERROR(ReadString(body, "model", &model));
  if (!model.empty() && model != ctx.state->model_name) {
    return absl::NotFoundError(absl::StrCat("the model '", model,
                                            "' does not exist; this server serves '",
                                            ctx.state->model_name, "'"));
  }
  std::string user;
  MAMBA_RETURN_IF_ERROR(ReadString(body, "user", &user));

  engine::Request& r = out->request;
  MAMBA_RETURN_IF_ERROR(ReadInt(body, "n", 1, kIntMax, &r.n));
  MAMBA_RETURN_IF_ERROR(RefuseUnsupported(body, r.n));
  MAMBA_RETURN_IF_ERROR(ParseSampling(body, &r.params));
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "skip_special_tokens", &r.skip_special_tokens));
  std::vector<std::string> stops;
  MAMBA_RETURN_IF_ERROR(ReadStringList(body, "stop", &stops));
  for (std::string& s : stops) {
    if (!s.empty()) r.stop_strings.push_back(std::move(s));  // "" could never match
  }
  if (!r.stop_strings.empty() && !ctx.state->tokenizer) {
    return absl::InvalidArgumentError("'stop' needs a tokenizer; none is loaded");
  }
  float timeout = 0;
  MAMBA_RETURN_IF_ERROR(ReadFloat(body, "timeout", &timeout));
  if (timeout < 0) return absl::OutOfRangeError("'timeout' must be >= 0 seconds");
  r.deadline = Deadline(ctx.options, timeout);

  MAMBA_RETURN_IF_ERROR(ReadBool(body, "stream", &out->stream));
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return absl::InvalidArgumentError("'stream_options' must be an object");
    MAMBA_RETURN_IF_ERROR(ReadBool(*it, "include_usage", &out->include_usage));
  }
  MAMBA_RETURN_IF_ERROR(ReadBool(body, "echo", &out->echo));
  if (auto it = body.find("logprobs"); it != body.end() && !it->is_null()) {
    // Some clients send `logprobs: true`; treat it as "the chosen token only".
    if (it->is_boolean()) {
      if (it->get<bool>()) out->logprobs = 0;
    } else {
      int32_t k = 0;
      MAMBA_RETURN_IF_ERROR(ReadInt(body, "logprobs", 0, engine::kMaxTopLogprobs, &k));
      out->logprobs = k;
    }
  }
  if (out->logprobs) {
    r.params.logprobs = true;
    r.params.top_logprobs = *out->logprobs;
  }

  // Ranges the engine would refuse, checked here so no prompt of several is submitted.
  if (const engine::Engine* e = ctx.state->engine) {
    const int64_t vocab = e->backend().config().vocab_size;
    if (absl::Status s = r.params.Validate(vocab); !s.ok())
      return absl::OutOfRangeError(s.message());
    if (r.params.max_new_tokens > e->options().max_new_tokens_limit) {
      return absl::OutOfRangeError(absl::StrCat("'max_tokens' must be at most ",
                                                e->options().max_new_tokens_limit, ", got ",
                                                r.params.max_new_tokens));
    }
    if (r.n > e->backend().num_slots()) {
      return absl::OutOfRangeError(
          absl::StrCat("'n' must be at most ", e->backend().num_slots(), ", got ", r.n));
    }
  }
  return ParsePrompts(body, ctx, &out->prompts);
}

}  // namespace mamba::server::http
