#include "client/openai_api.h"

#include "absl/strings/str_cat.h"
#include "client/errors.h"
#include "client/sse.h"

namespace mamba::client {
namespace {

// Parses one chunk's choices into events and completion state. Returns an error message for an
// error chunk.
std::optional<std::string> ApplyChunk(const Json& chunk, GenerateResult* result,
                                      const EventCallback& on_event) {
  if (auto e = chunk.find("error"); e != chunk.end() && !e->is_null()) {
    return ErrorMessageFromBody(chunk.dump());
  }
  if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
    Usage usage;
    usage.prompt_tokens = u->value("prompt_tokens", int64_t{0});
    usage.completion_tokens = u->value("completion_tokens", int64_t{0});
    usage.total_tokens = u->value("total_tokens", usage.prompt_tokens + usage.completion_tokens);
    result->usage = usage;
    result->server_counted_output = true;
  }
  if (std::optional<SessionReport> session = SessionOf(chunk)) result->session = *session;
  auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array()) return std::nullopt;
  for (const Json& choice : *choices) {
    if (!choice.is_object()) continue;
    const int index = choice.value("index", 0);
    if (index < 0 || index > 4096) continue;
    if (static_cast<size_t>(index) >= result->completions.size()) {
      const size_t old = result->completions.size();
      result->completions.resize(index + 1);
      for (size_t i = old; i < result->completions.size(); ++i)
        result->completions[i].index = static_cast<int>(i);
    }
    CompletionResult& c = result->completions[index];
    StreamEvent event;
    event.index = index;
    if (auto t = choice.find("text"); t != choice.end() && t->is_string())
      event.text = t->get<std::string>();
    auto finish = choice.find("finish_reason");
    const bool finished = finish != choice.end() && finish->is_string();
    event.tokens = (!event.text.empty() || !finished) ? 1 : 0;
    if (auto lp = choice.find("logprobs"); lp != choice.end() && lp->is_object()) {
      auto tokens = lp->find("tokens");
      if (tokens != lp->end() && tokens->is_array()) {
        event.tokens = static_cast<int>(tokens->size());
        for (const Json& t : *tokens)
          event.token_texts.push_back(t.is_string() ? t.get<std::string>() : "");
      }
      auto values = lp->find("token_logprobs");
      if (values != lp->end() && values->is_array()) {
        for (const Json& v : *values)
          event.logprobs.push_back(v.is_number() ? v.get<float>() : 0.0f);
      }
      auto tops = lp->find("top_logprobs");
      if (tops != lp->end() && tops->is_array()) {
        for (const Json& pos : *tops) {
          std::vector<Alternative> alts;
          if (pos.is_object()) {
            for (auto it = pos.begin(); it != pos.end(); ++it) {
              alts.push_back(
                  {-1, it.key(), it.value().is_number() ? it.value().get<float>() : 0.0f});
            }
          }
          event.top_logprobs.push_back(std::move(alts));
        }
      }
    }
    c.text += event.text;
    c.streamed_tokens += event.tokens;
    if (finished) c.finish_reason = finish->get<std::string>();
    if (on_event && (event.tokens > 0 || !event.text.empty())) on_event(event);
  }
  return std::nullopt;
}

}  // namespace

Json CompletionBody(const GenerateSpec& spec, bool stream) {
  Json body = Json::object();
  if (!spec.model.empty()) body["model"] = spec.model;
  if (!spec.adapter.empty()) body["model"] = spec.adapter;  // vLLM's convention
  if (spec.prompt.use_ids) {
    body["prompt"] = spec.prompt.ids;
  } else {
    body["prompt"] = spec.prompt.text;
  }
  const SamplingOptions& s = spec.sampling;
  if (s.max_tokens) body["max_tokens"] = *s.max_tokens;
  if (s.temperature) body["temperature"] = *s.temperature;
  if (s.top_p) body["top_p"] = *s.top_p;
  if (s.n != 1) body["n"] = s.n;
  if (s.seed) body["seed"] = *s.seed;
  if (!s.stop.empty()) body["stop"] = s.stop;
  if (s.logprobs || s.top_logprobs > 0) body["logprobs"] = s.top_logprobs;
  if (s.presence_penalty) body["presence_penalty"] = *s.presence_penalty;
  if (s.frequency_penalty) body["frequency_penalty"] = *s.frequency_penalty;
  if (s.top_k) body["top_k"] = *s.top_k;
  if (s.min_p) body["min_p"] = *s.min_p;
  if (s.repetition_penalty) body["repetition_penalty"] = *s.repetition_penalty;
  if (s.min_tokens) body["min_tokens"] = *s.min_tokens;
  if (s.ignore_eos) body["ignore_eos"] = true;
  if (!spec.session_id.empty()) body["session_id"] = spec.session_id;
  if (stream) {
    body["stream"] = true;
    if (spec.include_usage) body["stream_options"] = {{"include_usage", true}};
  }
  return body;
}

absl::StatusOr<GenerateResult> OpenAiGenerator::Stream(const GenerateSpec& spec,
                                                       const EventCallback& on_event,
                                                       CancelToken* cancel) {
  HttpCall call =
      api_.MakeCall("POST", "/v1/completions", CompletionBody(spec, true).dump(), spec.timeout_s);
  call.headers.push_back({"Accept", "text/event-stream"});
  call.cancel = cancel;
  GenerateResult result;
  result.completions.resize(std::max(spec.sampling.n, 1));
  for (size_t i = 0; i < result.completions.size(); ++i)
    result.completions[i].index = static_cast<int>(i);
  SseParser parser;
  bool done = false;
  std::optional<std::string> stream_error;
  auto on_sse = [&](const SseEvent& e) {
    if (e.data == "[DONE]") {
      done = true;
      return true;
    }
    Json chunk = Json::parse(e.data, nullptr, /*allow_exceptions=*/false);
    if (chunk.is_discarded() || !chunk.is_object()) {
      stream_error = absl::StrCat("an event is not a JSON object: ", e.data.substr(0, 200));
      return false;
    }
    stream_error = ApplyChunk(chunk, &result, on_event);
    return !stream_error.has_value();
  };
  call.on_body = [&](std::string_view bytes) { return parser.Feed(bytes, on_sse); };
  absl::StatusOr<HttpResult> r = api_.Send(call);
  if (!r.ok()) return r.status();
  if (r->status / 100 != 2) return HttpError(r->status, ErrorMessageFromBody(r->body));
  if (!stream_error) parser.Finish(on_sse);
  if (stream_error) {
    return WithKind(absl::InternalError(absl::StrCat("error in the stream: ", *stream_error)),
                    "stream_error");
  }
  for (const CompletionResult& c : result.completions) {
    if (c.finish_reason.empty()) {
      return WithKind(
          absl::DataLossError(absl::StrCat("the stream ended before completion ", c.index,
                                           " finished", done ? "" : " (no [DONE])")),
          "incomplete");
    }
  }
  return result;
}

absl::StatusOr<Json> OpenAiGenerator::Complete(const GenerateSpec& spec) {
  Json body = CompletionBody(spec, false);
  return api_.JsonCall("POST", "/v1/completions", &body, spec.timeout_s);
}

}  // namespace mamba::client
