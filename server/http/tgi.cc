#include "server/http/tgi.h"

#include <algorithm>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"
#include "engine/status_macros.h"
#include "kernels/dtype.h"
#include "server/http/sessions.h"

namespace mamba::server::http {
namespace {

constexpr int32_t kIntMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kIntMax = std::numeric_limits<int32_t>::max();
constexpr int32_t kDefaultMaxNewTokens = 100;  // TGI's default

// Wire fields to engine fields; their ranges are Engine::Validate's to check, except TGI's own
// rule that a given temperature is positive.
absl::Status ParseParameters(const Json& p, const engine::GenerationDefaults& defaults,
                             int32_t max_best_of, TgiSpec* out) {
  auto given = [&](const char* key) { return p.contains(key) && !p[key].is_null(); };
  engine::SamplingParams& sp = out->request.params;
  sp.max_new_tokens = defaults.max_new_tokens.value_or(kDefaultMaxNewTokens);
  if (defaults.repetition_penalty) sp.repetition_penalty = *defaults.repetition_penalty;
  MAMBA_RETURN_IF_ERROR(ReadInt(p, "max_new_tokens", kIntMin, kIntMax, &sp.max_new_tokens));
  MAMBA_RETURN_IF_ERROR(ReadBool(p, "do_sample", &out->sampling));
  MAMBA_RETURN_IF_ERROR(ReadFloat(p, "temperature", &sp.temperature));
  MAMBA_RETURN_IF_ERROR(ReadInt(p, "top_k", kIntMin, kIntMax, &sp.top_k));
  MAMBA_RETURN_IF_ERROR(ReadFloat(p, "top_p", &sp.top_p));
  MAMBA_RETURN_IF_ERROR(ReadFloat(p, "repetition_penalty", &sp.repetition_penalty));
  MAMBA_RETURN_IF_ERROR(ReadFloat(p, "frequency_penalty", &sp.frequency_penalty));
  MAMBA_RETURN_IF_ERROR(ReadUint64(p, "seed", &sp.seed));
  MAMBA_RETURN_IF_ERROR(ReadBool(p, "ignore_eos", &sp.ignore_eos));  // extension
  MAMBA_RETURN_IF_ERROR(ReadStringList(p, "stop", &out->request.stop_strings));
  std::erase_if(out->request.stop_strings, [](const std::string& s) { return s.empty(); });
  MAMBA_RETURN_IF_ERROR(ReadBool(p, "details", &out->details));
  MAMBA_RETURN_IF_ERROR(ReadBool(p, "decoder_input_details", &out->decoder_input_details));
  MAMBA_RETURN_IF_ERROR(ReadBool(p, "return_full_text", &out->return_full_text));
  MAMBA_RETURN_IF_ERROR(ReadInt(p, "top_n_tokens", kIntMin, kIntMax, &out->top_n_tokens));
  MAMBA_RETURN_IF_ERROR(ReadInt(p, "best_of", 1, max_best_of, &out->best_of));
  if (sp.temperature <= 0 && given("temperature")) {
    return engine::InvalidField("temperature", "'temperature' must be strictly positive");
  }
  // As TGI: a warper (temperature other than 1, top_k, top_p below 1) samples even without
  // do_sample; with none of them and do_sample false (the default), decoding is greedy.
  const bool warpers = sp.temperature != 1.0f || sp.top_k > 0 || sp.top_p < 1.0f;
  out->sampling = out->sampling || warpers;
  if (out->best_of > 1) {
    // As TGI: best_of needs sampling, do_sample or a warper given (a neutral one included).
    if (!out->sampling && !given("temperature") && !given("top_k") && !given("top_p") &&
        !given("typical_p")) {
      return engine::InvalidField("best_of", "you must use sampling when 'best_of' is > 1");
    }
    if (!out->request.session_id.empty()) {
      return engine::InvalidField("best_of", "a session continues one conversation: no best_of");
    }
    // A neutral warper given (temperature 1, top_p 1) passes TGI's check; best_of then samples
    // too, or its sequences would be the same greedy one repeated (found by the request fuzzer).
    out->sampling = true;
    out->request.n = out->best_of;  // the engine's n completions; the call picks the best
  }
  if (out->sampling) {
    // The model's defaults for what the request leaves unset (HF generate with do_sample).
    if (defaults.temperature && !given("temperature")) sp.temperature = *defaults.temperature;
    if (defaults.top_k && !given("top_k")) sp.top_k = *defaults.top_k;
    if (defaults.top_p && !given("top_p")) sp.top_p = *defaults.top_p;
    if (defaults.min_p) sp.min_p = *defaults.min_p;
  }
  if (!out->sampling) {
    sp.temperature = 0;  // greedy
    sp.seed.reset();
  } else if (!sp.seed) {
    sp.seed = std::random_device{}() * uint64_t{0x9E3779B97F4A7C15} ^ std::random_device{}();
  }
  // Prefill log-probs are computed when asked (the first token's null, as in TGI).
  if (out->decoder_input_details) out->request.prompt_logprobs = 0;
  // Every TGI token carries its log-prob (and best_of ranks the sequences by their sum).
  sp.logprobs = true;
  sp.top_logprobs = out->top_n_tokens;
  return absl::OkStatus();
}

class TgiCall : public GenerationCall {
 public:
  TgiCall(const HandlerContext& ctx, std::shared_ptr<Exchange> exchange, TgiSpec spec, bool stream)
      : GenerationCall(ctx, std::move(exchange), ApiStyle::kTgi),
        spec_(std::move(spec)),
        stream_(stream) {
    seqs_.resize(static_cast<size_t>(spec_.request.n));
  }

  void Run(engine::Engine* engine) {
    const auto& eos = engine->backend().config().eos_token_ids;
    eos_.assign(eos.begin(), eos.end());
    engine::Request r = spec_.request;
    r.prompt = spec_.prompt.ids;
    if (std::optional<ApiError> e = Submit(engine, std::move(r), 0)) return Fail(*e);
    if (stream_) exchange_->StartStream();
  }

 private:
  // One of the best_of sequences (the engine's n completions; a stream has one).
  struct Sequence {
    std::string text;                               // generated so far
    OrderedJson tokens = OrderedJson::array();      // unary: details.tokens
    OrderedJson top_tokens = OrderedJson::array();  // unary: details.top_tokens
    double cumulative_logprob = 0;                  // best_of ranks the sequences by it
    OrderedJson details;  // once finished: finish_reason, generated_tokens, seed
  };

  OrderedJson Token(engine::TokenId id, float logprob, std::string text) const {
    const engine::Tokenizer* tok = ctx_.state->tokenizer;
    return {{"id", id},
            {"text", std::move(text)},
            {"logprob", logprob},
            {"special", tok != nullptr && tok->IsSpecial(id)}};
  }

  OrderedJson TopTokens(const engine::SampledToken& t) const {
    OrderedJson top = OrderedJson::array();
    for (const engine::TokenLogprob& alt : t.top) {
      top.push_back(Token(alt.id, alt.logprob, TokenText(ctx_.state->tokenizer, alt.id)));
    }
    return top;
  }

  // A token's text: the engine's text delta (so a stream's texts add up to the answer); for a
  // special token, which adds no text, its content, with "special": true as in TGI.
  std::string TextOf(const engine::TokenEvent& ev) const {
    const engine::Tokenizer* tok = ctx_.state->tokenizer;
    if (ev.text.empty() && tok && tok->IsSpecial(ev.token.id)) return TokenText(tok, ev.token.id);
    return ev.text;
  }

  void OnToken(int, const engine::TokenEvent& ev) override {
    Sequence& s = seqs_[static_cast<size_t>(ev.index)];
    s.text += ev.text;
    s.cumulative_logprob += ev.token.logprob;
    if (!stream_) {
      s.tokens.push_back(Token(ev.token.id, ev.token.logprob, TextOf(ev)));
      if (spec_.top_n_tokens > 0) s.top_tokens.push_back(TopTokens(ev.token));
      return;
    }
    // Held back one event: the last token's event carries the answer and the details.
    if (held_ && !WriteOrCancel(Sse(StreamEvent(*held_, nullptr)))) return;
    held_ = ev;
    held_->text = TextOf(ev);
  }

  OrderedJson StreamEvent(const engine::TokenEvent& ev, const OrderedJson* final_details) {
    OrderedJson j = {{"index", ++index_}, {"token", Token(ev.token.id, ev.token.logprob, ev.text)}};
    if (spec_.top_n_tokens > 0) j["top_tokens"] = TopTokens(ev.token);
    j["generated_text"] = final_details ? OrderedJson(FullText(seqs_[0])) : OrderedJson(nullptr);
    j["details"] = final_details && spec_.details ? *final_details : OrderedJson(nullptr);
    if (final_details && !Session().empty()) {
      j["session"] = SessionSummaryJson(Session(), session_tokens_);
    }
    return j;
  }

  std::string FullText(const Sequence& s) const {
    return spec_.return_full_text && spec_.prompt.text ? *spec_.prompt.text + s.text : s.text;
  }

  const char* FinishReason(const engine::FinishEvent& ev) const {
    if (ev.reason == engine::Finish::kLength) return "length";
    if (ev.stop_token && std::find(eos_.begin(), eos_.end(), *ev.stop_token) != eos_.end()) {
      return "eos_token";
    }
    return "stop_sequence";
  }

  void OnFinish(int, const engine::FinishEvent& ev) override {
    const bool ok = ev.reason == engine::Finish::kStop || ev.reason == engine::Finish::kLength;
    if (!ok) {
      if (!stream_) return Fail(FinishError(ev.status));
      done_ = true;
      if (WriteOrCancel(Sse(ErrorBody(FinishError(ev.status))))) exchange_->EndStream();
      return;
    }
    if (ev.index == 0) session_tokens_ = ev.session_tokens;
    Sequence& s = seqs_[static_cast<size_t>(ev.index)];
    // TGI's answer includes the stop sequence that ended it; the engine's text stops before.
    const std::string tail = ev.text + ev.matched_stop;
    s.text += tail;
    // The engine runs completion i with seed + i.
    std::optional<uint64_t> seed = spec_.request.params.seed;
    if (seed) *seed += static_cast<uint64_t>(ev.index);
    s.details = {{"finish_reason", FinishReason(ev)},
                 {"generated_tokens", ev.usage.completion_tokens},
                 {"seed", seed ? OrderedJson(*seed) : OrderedJson(nullptr)}};
    if (stream_) {
      done_ = true;
      if (!held_) {  // no token at all (cannot happen for a finished request, but be safe)
        held_ = engine::TokenEvent{0, engine::SampledToken{0, 0.0f, {}}, ""};
      }
      held_->text += tail;
      if (WriteOrCancel(Sse(StreamEvent(*held_, &s.details)))) exchange_->EndStream();
      return;
    }
    if (!s.tokens.empty() && !tail.empty()) {
      (*s.tokens.rbegin())["text"] = (*s.tokens.rbegin())["text"].get<std::string>() + tail;
    }
    if (++finished_ == seqs_.size()) Respond();
  }

  // The unary answer: the sequence with the highest sum of log-probs (the only one without
  // best_of); with details, the others in details.best_of_sequences in the order they ran, as
  // TGI.
  void Respond() {
    done_ = true;
    std::vector<double> scores;
    for (const Sequence& s : seqs_) scores.push_back(s.cumulative_logprob);
    const size_t best = BestFirst(scores)[0];
    OrderedJson j = {{"generated_text", FullText(seqs_[best])}};
    if (spec_.details) {
      OrderedJson details = Details(best);
      if (seqs_.size() > 1) {
        OrderedJson others = OrderedJson::array();
        for (size_t i = 0; i < seqs_.size(); ++i) {
          if (i == best) continue;
          OrderedJson other = {{"generated_text", FullText(seqs_[i])}};
          other.update(Details(i));
          others.push_back(std::move(other));
        }
        details["best_of_sequences"] = std::move(others);
      }
      j["details"] = std::move(details);
    }
    if (!Session().empty()) j["session"] = SessionSummaryJson(Session(), session_tokens_);
    exchange_->Respond({200, "application/json", Dump(j), {}});
  }

  // Sequence i's details (its tokens moved out): finish_reason, generated_tokens, seed, prefill,
  // tokens, [top_tokens].
  OrderedJson Details(size_t i) {
    OrderedJson d = seqs_[i].details;
    d["prefill"] = Prefill();
    d["tokens"] = std::move(seqs_[i].tokens);
    if (spec_.top_n_tokens > 0) d["top_tokens"] = std::move(seqs_[i].top_tokens);
    return d;
  }

  const std::string& Session() const { return spec_.request.session_id; }

  void OnPrompt(int, const engine::PromptEvent& ev) override { prompt_logprobs_ = ev; }

  // The prompt's tokens with their log-probs, aligned with the end of the prompt (the first
  // token's, and a session turn's tokens the engine did not report, null).
  OrderedJson Prefill() const {
    OrderedJson prefill = OrderedJson::array();
    if (!spec_.decoder_input_details) return prefill;
    const std::vector<engine::TokenId>& ids = spec_.prompt.ids;
    const std::vector<engine::SampledToken>& lps = prompt_logprobs_.tokens;
    const size_t k = std::min(lps.size(), ids.size()), skip = ids.size() - k;
    for (size_t j = 0; j < ids.size(); ++j) {
      const OrderedJson logprob =
          j < skip ? OrderedJson(nullptr) : OrderedJson(lps[lps.size() - k + (j - skip)].logprob);
      prefill.push_back({{"id", ids[j]},
                         {"text", TokenText(ctx_.state->tokenizer, ids[j])},
                         {"logprob", logprob}});
    }
    return prefill;
  }

  TgiSpec spec_;
  bool stream_;
  std::vector<engine::TokenId> eos_;
  std::vector<Sequence> seqs_;  // spec_.request.n (best_of)
  size_t finished_ = 0;
  std::optional<engine::TokenEvent> held_;
  int64_t index_ = 0;
  int64_t session_tokens_ = 0;           // tokens the session holds after this turn
  engine::PromptEvent prompt_logprobs_;  // decoder_input_details
};

// What TGI refuses on its streamed route (its validation errors, in its words).
absl::Status CheckStreamable(const TgiSpec& spec) {
  if (spec.best_of != 1) {
    return engine::InvalidField("best_of", "'best_of' != 1 is not supported when streaming tokens");
  }
  if (spec.decoder_input_details) {
    return engine::InvalidField("decoder_input_details",
                                "'decoder_input_details' == true is not supported when streaming "
                                "tokens");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseTgiRequest(const Json& body, const HandlerContext& ctx, TgiSpec* out) {
  auto it = body.find("inputs");
  if (it == body.end() || it->is_null()) {
    return engine::InvalidField("inputs", "'inputs' is required");
  }
  if (!it->is_string()) return engine::InvalidField("inputs", "'inputs' must be a string");
  MAMBA_RETURN_IF_ERROR(ReadSessionId(body, &out->request.session_id));
  // best_of sequences run at once, one slot each (the limit of n).
  const int32_t max_best_of = ctx.state->engine ? ctx.state->engine->backend().num_slots() : 1;
  if (auto p = body.find("parameters"); p != body.end() && !p->is_null()) {
    if (!p->is_object()) {
      return engine::InvalidField("parameters", "'parameters' must be an object");
    }
    MAMBA_RETURN_IF_ERROR(ParseParameters(*p, ctx.state->generation_defaults, max_best_of, out));
    std::string adapter_id;  // TGI's multi-LoRA field: a loaded adapter's name
    MAMBA_RETURN_IF_ERROR(ReadString(*p, "adapter_id", &adapter_id));
    absl::StatusOr<std::shared_ptr<const engine::ServedAdapter>> adapter =
        FindAdapter(*ctx.state, adapter_id, "adapter_id");
    if (!adapter.ok()) return adapter.status();
    out->request.adapter = *std::move(adapter);
    float timeout = 0;
    MAMBA_RETURN_IF_ERROR(ReadFloat(*p, "timeout", &timeout));
    if (timeout < 0) return engine::InvalidField("timeout", "'timeout' must be >= 0 seconds");
    out->request.deadline = Deadline(ctx.options, timeout);
  } else {
    MAMBA_RETURN_IF_ERROR(
        ParseParameters(Json::object(), ctx.state->generation_defaults, max_best_of, out));
    out->request.deadline = Deadline(ctx.options, 0);
  }
  // TGI encodes inputs with the tokenizer's special tokens; a session turn continues a sequence.
  MAMBA_RETURN_IF_ERROR(
      TokenizePrompt(ctx, it->get<std::string>(), out->request.session_id.empty(), &out->prompt));
  if (const engine::Engine* e = ctx.state->engine) {
    engine::Request r = out->request;
    r.prompt = out->prompt.ids;
    MAMBA_RETURN_IF_ERROR(e->Validate(r));
  }
  return absl::OkStatus();
}

void HandleTgiGenerate(const HandlerContext& ctx, const HttpRequest& request,
                       std::shared_ptr<Exchange> exchange, std::optional<bool> stream) {
  absl::StatusOr<engine::Engine*> engine = ServingEngine(ctx);
  if (!engine.ok()) return exchange->Respond(ErrorResponse(engine.status(), ApiStyle::kTgi));
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return exchange->Respond(ErrorResponse(body.status(), ApiStyle::kTgi));
  if (!stream) {  // POST /: the body's "stream" chooses
    bool s = false;
    if (absl::Status st = ReadBool(*body, "stream", &s); !st.ok()) {
      return exchange->Respond(ErrorResponse(st, ApiStyle::kTgi));
    }
    stream = s;
  }
  TgiSpec spec;
  absl::Status s = ParseTgiRequest(*body, ctx, &spec);
  if (s.ok() && *stream) s = CheckStreamable(spec);
  if (!s.ok()) return exchange->Respond(ErrorResponse(s, ApiStyle::kTgi));
  auto call = std::make_shared<TgiCall>(ctx, std::move(exchange), std::move(spec), *stream);
  call->Run(*engine);
}

OrderedJson TgiInfo(const HandlerContext& ctx) {
  const ServingState& st = *ctx.state;
  OrderedJson j = {{"model_id", st.model_name},
                   {"model_sha", nullptr},
                   {"model_dtype", nullptr},
                   {"model_device_type", st.device.substr(0, st.device.find(':'))},
                   {"model_pipeline_tag", "text-generation"}};
  if (st.engine != nullptr) {
    const engine::Engine& e = *st.engine;
    const engine::EngineOptions& o = e.options();
    // TGI reports the torch dtype ("torch.float16").
    j["model_dtype"] = absl::StrCat("torch.", kernels::Name(e.backend().compute_dtype()));
    // Requests in flight before 429: every slot busy and the queue full.
    j["max_concurrent_requests"] = e.backend().num_slots() + o.max_queue;
    j["max_best_of"] = e.backend().num_slots();  // best_of sequences run at once
    j["max_stop_sequences"] = 16;                // Engine::Validate's limit
    j["max_input_tokens"] = o.max_prompt_tokens;
    j["max_input_length"] = o.max_prompt_tokens;  // TGI 1.x's name
    j["max_total_tokens"] = o.max_prompt_tokens + o.max_new_tokens_limit;
    // The tokens one engine step runs (prompt chunks + one per decoding sequence).
    j["max_batch_total_tokens"] = o.max_step_tokens;
    j["max_batch_size"] = e.backend().num_slots();
    j["max_client_batch_size"] = 1;
  }
  j["router"] = "mambaserve";
  j["version"] = MAMBA_VERSION;
  j["sha"] = nullptr;
  j["docker_label"] = nullptr;
  return j;
}

}  // namespace mamba::server::http
