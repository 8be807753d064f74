#include "client/tgi_api.h"

#include "absl/strings/str_cat.h"
#include "client/errors.h"
#include "client/sse.h"

namespace mamba::client {

absl::StatusOr<Json> TgiBody(const GenerateSpec& spec) {
  if (spec.prompt.use_ids) {
    return absl::InvalidArgumentError("the TGI API takes text prompts, not token ids");
  }
  if (spec.sampling.n != 1)
    return absl::InvalidArgumentError("the TGI API generates one completion (n = 1)");
  const SamplingOptions& s = spec.sampling;
  Json p = Json::object();
  if (s.max_tokens) p["max_new_tokens"] = *s.max_tokens;
  // Greedy is do_sample false with no warper: TGI samples whenever temperature, top_k or top_p
  // is set, so a greedy request sends none of them.
  const bool greedy = s.temperature && *s.temperature < 1e-5f;
  if (s.temperature) {
    p["do_sample"] = !greedy;
    if (!greedy) p["temperature"] = *s.temperature;
  }
  if (!greedy && s.top_k && *s.top_k > 0) p["top_k"] = *s.top_k;
  if (!greedy && s.top_p && *s.top_p < 1.0f) p["top_p"] = *s.top_p;
  if (s.repetition_penalty) p["repetition_penalty"] = *s.repetition_penalty;
  if (s.frequency_penalty) p["frequency_penalty"] = *s.frequency_penalty;
  if (s.seed) p["seed"] = *s.seed;
  if (!s.stop.empty()) p["stop"] = s.stop;
  if (s.top_logprobs > 0) p["top_n_tokens"] = s.top_logprobs;
  if (s.min_tokens) p["min_new_tokens"] = *s.min_tokens;
  if (s.ignore_eos) p["ignore_eos"] = true;
  if (!spec.adapter.empty()) p["adapter_id"] = spec.adapter;
  p["details"] = true;
  Json body = {{"inputs", spec.prompt.text}, {"parameters", p}};
  if (!spec.session_id.empty()) body["session_id"] = spec.session_id;
  return body;
}

absl::StatusOr<GenerateResult> TgiGenerator::Stream(const GenerateSpec& spec,
                                                    const EventCallback& on_event,
                                                    CancelToken* cancel) {
  absl::StatusOr<Json> body = TgiBody(spec);
  if (!body.ok()) return body.status();
  HttpCall call = api_.MakeCall("POST", "/generate_stream", body->dump(), spec.timeout_s);
  call.headers.push_back({"Accept", "text/event-stream"});
  call.cancel = cancel;
  GenerateResult result;
  result.completions.resize(1);
  CompletionResult& c = result.completions[0];
  SseParser parser;
  std::optional<std::string> stream_error;
  bool finished = false;
  std::optional<int64_t> generated, input_length;
  auto on_sse = [&](const SseEvent& e) {
    Json ev = Json::parse(e.data, nullptr, /*allow_exceptions=*/false);
    if (ev.is_discarded() || !ev.is_object()) {
      stream_error = absl::StrCat("an event is not a JSON object: ", e.data.substr(0, 200));
      return false;
    }
    if (auto err = ev.find("error"); err != ev.end() && !err->is_null()) {
      stream_error = ErrorMessageFromBody(e.data);
      return false;
    }
    if (std::optional<SessionReport> session = SessionOf(ev)) result.session = *session;
    StreamEvent event;
    if (auto t = ev.find("token"); t != ev.end() && t->is_object()) {
      event.tokens = 1;
      event.token_ids.push_back(t->value("id", -1));
      if (auto text = t->find("text"); text != t->end() && text->is_string()) {
        const bool special = t->value("special", false);
        if (!special) event.text = text->get<std::string>();
      }
      if (auto lp = t->find("logprob"); lp != t->end() && lp->is_number()) {
        event.logprobs.push_back(lp->get<float>());
        event.token_texts.push_back(t->value("text", std::string()));
      }
    }
    if (auto tops = ev.find("top_tokens"); tops != ev.end() && tops->is_array()) {
      std::vector<Alternative> alts;
      for (const Json& a : *tops) {
        if (!a.is_object()) continue;
        alts.push_back(
            {a.value("id", -1), a.value("text", std::string()),
             a.contains("logprob") && a["logprob"].is_number() ? a["logprob"].get<float>() : 0.0f});
      }
      event.top_logprobs.push_back(std::move(alts));
    }
    c.text += event.text;
    c.streamed_tokens += event.tokens;
    if (!event.token_ids.empty()) c.token_ids.push_back(event.token_ids.front());
    if (auto d = ev.find("details"); d != ev.end() && d->is_object()) {
      finished = true;
      c.finish_reason = d->value("finish_reason", std::string("unknown"));
      if (auto g = d->find("generated_tokens"); g != d->end() && g->is_number_integer()) {
        generated = g->get<int64_t>();
      }
      if (auto in = d->find("input_length"); in != d->end() && in->is_number_integer()) {
        input_length = in->get<int64_t>();
      }
    } else if (auto g = ev.find("generated_text"); g != ev.end() && g->is_string()) {
      finished = true;  // a final event without details
      if (c.finish_reason.empty()) c.finish_reason = "unknown";
    }
    if (on_event && (event.tokens > 0 || !event.text.empty())) on_event(event);
    return true;
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
  if (!finished) {
    return WithKind(absl::DataLossError("the stream ended without a final event"), "incomplete");
  }
  result.server_counted_output = generated.has_value();
  if (generated && input_length) {
    result.usage = Usage{*input_length, *generated, *input_length + *generated};
  } else if (generated) {
    c.streamed_tokens = *generated;  // older TGI: no input_length; the prompt stays unknown
  }
  return result;
}

}  // namespace mamba::client
