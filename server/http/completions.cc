// POST /v1/completions: runs a CompletionSpec and answers in OpenAI's text_completion shape,
// whole or as SSE chunks (`data: {...}\n\n` ... `data: [DONE]\n\n`).
#include "server/http/completions.h"

#include <algorithm>
#include <ctime>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/http/sessions.h"

namespace mamba::server::http {
namespace {

// OpenAI's logprobs object; the arrays grow token by token.
struct Logprobs {
  OrderedJson tokens = OrderedJson::array();
  OrderedJson token_logprobs = OrderedJson::array();
  OrderedJson top_logprobs = OrderedJson::array();
  OrderedJson text_offset = OrderedJson::array();

  OrderedJson ToJson() const {
    return {{"tokens", tokens},
            {"token_logprobs", token_logprobs},
            {"top_logprobs", top_logprobs},
            {"text_offset", text_offset}};
  }
};

class CompletionCall : public GenerationCall {
 public:
  CompletionCall(const HandlerContext& ctx, std::shared_ptr<Exchange> exchange, CompletionSpec spec)
      : GenerationCall(ctx, std::move(exchange), ApiStyle::kOpenAi),
        spec_(std::move(spec)),
        id_(RandomId("cmpl-")),
        created_(static_cast<int64_t>(std::time(nullptr))) {
    choices_.resize(spec_.prompts.size() * static_cast<size_t>(spec_.request.n));
  }

  void Run(engine::Engine* engine) {
    for (size_t p = 0; p < spec_.prompts.size(); ++p) {
      engine::Request r = spec_.request;
      r.prompt = spec_.prompts[p].ids;
      if (std::optional<ApiError> e = Submit(engine, std::move(r), static_cast<int>(p))) {
        Fail(*e);
        return;
      }
      prompt_tokens_ += static_cast<int64_t>(spec_.prompts[p].ids.size());
    }
    for (size_t c = 0; c < choices_.size(); ++c) StartChoice(c);
    if (!spec_.stream) return;
    exchange_->StartStream();
    // With prompt log-probs the echo waits for them (OnPrompt, before any token).
    if (!spec_.echo || spec_.request.prompt_logprobs >= 0) return;
    // The prompt text first, as its own chunk per choice.
    for (size_t c = 0; c < choices_.size(); ++c) {
      if (!WriteOrCancel(Sse(
              Chunk(c, choices_[c].text, spec_.logprobs ? &choices_[c].lp : nullptr, nullptr)))) {
        return;
      }
      choices_[c].text.clear();
      choices_[c].lp = Logprobs();
    }
  }

 private:
  struct Choice {
    std::string text;    // unary: everything so far; stream: echo only
    Logprobs lp;         // unary: everything so far
    int64_t offset = 0;  // text_offset of the next token, in characters
    // Of the generated tokens: best_of ranks the choices by it.
    double cumulative_logprob = 0;
    OrderedJson prompt_logprobs;  // vLLM's, when asked: null per token without one
    const char* finish = nullptr;
    bool done = false;
  };

  const Prompt& PromptOf(size_t choice) const {
    return spec_.prompts[choice / static_cast<size_t>(spec_.request.n)];
  }

  // Echo puts the prompt (and, with logprobs, its tokens: log-probs null until OnPrompt fills
  // them) in front of the choice.
  void StartChoice(size_t c) {
    if (!spec_.echo) return;
    Choice& ch = choices_[c];
    const Prompt& p = PromptOf(c);
    const engine::Tokenizer* tok = ctx_.state->tokenizer;
    if (p.text) {
      ch.text = *p.text;
    } else if (tok) {
      // Ids the tokenizer lacks (an embedding's padding rows) decode to nothing, as in HF.
      std::vector<engine::TokenId> known;
      for (engine::TokenId id : p.ids) {
        if (tok->IdToToken(id)) known.push_back(id);
      }
      ch.text = tok->Decode(known).value_or("");
    }
    if (!spec_.logprobs) {
      ch.offset = CountCodePoints(ch.text);
      return;
    }
    for (engine::TokenId id : p.ids) {
      std::string t = TokenText(ctx_.state->tokenizer, id);
      ch.lp.text_offset.push_back(ch.offset);
      ch.offset += CountCodePoints(t);
      ch.lp.tokens.push_back(std::move(t));
      ch.lp.token_logprobs.push_back(nullptr);
      ch.lp.top_logprobs.push_back(nullptr);
    }
    // Generated tokens' offsets continue from the echoed text itself.
    ch.offset = CountCodePoints(ch.text);
  }

  // The prompt's log-probs, aligned with the end of the prompt as sent (the first token, and a
  // session turn's tokens the engine did not report, stay null): into the echoed logprobs and
  // vLLM's prompt_logprobs of each choice of the prompt; a stream sends the echo chunk now.
  void OnPrompt(int prompt_index, const engine::PromptEvent& ev) override {
    const size_t n = static_cast<size_t>(spec_.request.n);
    for (size_t c = static_cast<size_t>(prompt_index) * n;
         c < static_cast<size_t>(prompt_index + 1) * n; ++c) {
      Choice& ch = choices_[c];
      const size_t m = PromptOf(c).ids.size(), k = std::min(ev.tokens.size(), m);
      const size_t skip = m - k;
      if (spec_.echo && spec_.logprobs) {
        for (size_t j = 0; j < k; ++j) {
          const engine::SampledToken& t = ev.tokens[ev.tokens.size() - k + j];
          ch.lp.token_logprobs[skip + j] = t.logprob;
          ch.lp.top_logprobs[skip + j] = TopJson(t, *spec_.logprobs);
        }
      }
      if (spec_.prompt_logprobs) {
        ch.prompt_logprobs = OrderedJson::array();
        for (size_t j = 0; j < skip; ++j) ch.prompt_logprobs.push_back(nullptr);
        for (size_t j = 0; j < k; ++j) {
          ch.prompt_logprobs.push_back(
              VllmLogprobs(ev.tokens[ev.tokens.size() - k + j], *spec_.prompt_logprobs));
        }
      }
      if (!spec_.stream) continue;
      OrderedJson chunk = Chunk(c, spec_.echo ? ch.text : std::string(),
                                spec_.echo && spec_.logprobs ? &ch.lp : nullptr, nullptr);
      if (spec_.prompt_logprobs) chunk["choices"][0]["prompt_logprobs"] = ch.prompt_logprobs;
      if (!WriteOrCancel(Sse(chunk))) return;
      ch.text.clear();
      ch.lp = Logprobs();
    }
  }

  // OpenAI's top_logprobs entry: token text -> log-prob, the `k` best.
  OrderedJson TopJson(const engine::SampledToken& tok, int k) const {
    OrderedJson top = OrderedJson::object();
    for (size_t i = 0; i < tok.top.size() && i < static_cast<size_t>(k); ++i) {
      top[TokenText(ctx_.state->tokenizer, tok.top[i].id)] = tok.top[i].logprob;
    }
    return top;
  }

  // vLLM's per-token dict: {"<id>": {logprob, rank, decoded_token}} for the token and its `k`
  // best alternatives (rank 1 = the best). The token's rank is its place among them when it is
  // one (as vLLM, whose alternatives' entries overwrite the token's), else the engine's count.
  OrderedJson VllmLogprobs(const engine::SampledToken& tok, int k) const {
    OrderedJson d = OrderedJson::object();
    auto entry = [&](engine::TokenId id, float logprob, std::optional<int> rank) {
      OrderedJson e = {{"logprob", logprob}};
      if (rank) e["rank"] = *rank;
      e["decoded_token"] = TokenText(ctx_.state->tokenizer, id);
      d[absl::StrCat(id)] = std::move(e);
    };
    std::optional<int> own;
    if (tok.rank > 0) own = tok.rank;
    for (size_t i = 0; i < tok.top.size() && i < static_cast<size_t>(k); ++i) {
      if (tok.top[i].id == tok.id) own = static_cast<int>(i) + 1;
    }
    entry(tok.id, tok.logprob, own);
    for (size_t i = 0; i < tok.top.size() && i < static_cast<size_t>(k); ++i) {
      if (tok.top[i].id != tok.id) {
        entry(tok.top[i].id, tok.top[i].logprob, static_cast<int>(i) + 1);
      }
    }
    return d;
  }

  void AddLogprob(Choice& ch, const engine::SampledToken& tok, Logprobs* lp) {
    std::string t = TokenText(ctx_.state->tokenizer, tok.id);
    lp->text_offset.push_back(ch.offset);
    ch.offset += CountCodePoints(t);
    lp->tokens.push_back(std::move(t));
    lp->token_logprobs.push_back(tok.logprob);
    OrderedJson top = OrderedJson::object();
    for (const engine::TokenLogprob& alt : tok.top) {
      top[TokenText(ctx_.state->tokenizer, alt.id)] = alt.logprob;
    }
    lp->top_logprobs.push_back(std::move(top));
  }

  OrderedJson Chunk(size_t c, const std::string& text, const Logprobs* lp,
                    const char* finish) const {
    OrderedJson choice = {{"index", c}, {"text", text}};
    choice["logprobs"] = lp ? lp->ToJson() : OrderedJson(nullptr);
    choice["finish_reason"] = finish ? OrderedJson(finish) : OrderedJson(nullptr);
    OrderedJson j = Envelope();
    j["choices"] = OrderedJson::array({std::move(choice)});
    if (spec_.include_usage) j["usage"] = nullptr;
    return j;
  }

  OrderedJson Envelope() const {
    return {
        {"id", id_}, {"object", "text_completion"}, {"created", created_}, {"model", spec_.model}};
  }

  OrderedJson Usage() const {
    return {{"prompt_tokens", prompt_tokens_},
            {"completion_tokens", completion_tokens_},
            {"total_tokens", prompt_tokens_ + completion_tokens_},
            // As OpenAI reports prompt caching: the prompt tokens restored, not computed.
            {"prompt_tokens_details", {{"cached_tokens", cached_tokens_}}}};
  }

  size_t ChoiceIndex(int prompt_index, int index) const {
    return static_cast<size_t>(prompt_index) * static_cast<size_t>(spec_.request.n) +
           static_cast<size_t>(index);
  }

  void OnToken(int prompt_index, const engine::TokenEvent& ev) override {
    const size_t c = ChoiceIndex(prompt_index, ev.index);
    Choice& ch = choices_[c];
    ch.cumulative_logprob += ev.token.logprob;
    if (!spec_.stream) {
      ch.text += ev.text;
      if (spec_.logprobs) AddLogprob(ch, ev.token, &ch.lp);
      return;
    }
    if (!spec_.logprobs) {
      if (!ev.text.empty()) WriteOrCancel(Sse(Chunk(c, ev.text, nullptr, nullptr)));
      return;
    }
    Logprobs lp;
    AddLogprob(ch, ev.token, &lp);
    WriteOrCancel(Sse(Chunk(c, ev.text, &lp, nullptr)));
  }

  void OnFinish(int prompt_index, const engine::FinishEvent& ev) override {
    const size_t c = ChoiceIndex(prompt_index, ev.index);
    Choice& ch = choices_[c];
    ch.done = true;
    completion_tokens_ += ev.usage.completion_tokens;
    if (ev.index == 0) cached_tokens_ += ev.usage.cached_tokens;  // once per prompt
    // A session turn's prompt is everything the session held plus the new text (what the model
    // read; cached_tokens is the part restored), as the engine counts it.
    if (ev.index == 0 && Session()) prompt_tokens_ = ev.usage.prompt_tokens;
    const bool ok = ev.reason == engine::Finish::kStop || ev.reason == engine::Finish::kLength;
    if (!ok && !spec_.stream) return Fail(FinishError(ev.status));
    if (ok) ch.finish = ev.reason == engine::Finish::kStop ? "stop" : "length";
    if (ok && Session()) session_tokens_ = ev.session_tokens;
    if (spec_.stream) {
      // A completion that ended badly mid-stream: an error event in its place (as vLLM does).
      OrderedJson event =
          ok ? Chunk(c, ev.text, nullptr, ch.finish) : ErrorBody(FinishError(ev.status));
      if (ok && Session()) event["session"] = SessionSummaryJson(*Session(), session_tokens_);
      if (!WriteOrCancel(Sse(event))) return;
    } else {
      ch.text += ev.text;
    }
    if (++finished_ == choices_.size()) Complete();
  }

  void Complete() {
    done_ = true;
    if (spec_.stream) {
      if (spec_.include_usage) {
        OrderedJson j = Envelope();
        j["choices"] = OrderedJson::array();
        j["usage"] = Usage();
        if (!WriteOrCancel(Sse(j))) return;
      }
      if (WriteOrCancel("data: [DONE]\n\n")) exchange_->EndStream();
      return;
    }
    OrderedJson choices = OrderedJson::array();
    const std::vector<size_t> returned = Returned();
    for (size_t i = 0; i < returned.size(); ++i) {
      const size_t c = returned[i];
      OrderedJson choice = {{"index", i}, {"text", std::move(choices_[c].text)}};
      choice["logprobs"] = spec_.logprobs ? choices_[c].lp.ToJson() : OrderedJson(nullptr);
      choice["finish_reason"] = choices_[c].finish;
      if (spec_.prompt_logprobs) choice["prompt_logprobs"] = std::move(choices_[c].prompt_logprobs);
      choices.push_back(std::move(choice));
    }
    OrderedJson j = Envelope();
    j["choices"] = std::move(choices);
    j["usage"] = Usage();
    if (Session()) j["session"] = SessionSummaryJson(*Session(), session_tokens_);
    exchange_->Respond({200, "application/json", Dump(j), {}});
  }

  // The choices a unary answer returns, in order: all of them; with best_of > n, of each
  // prompt's best_of the n with the highest cumulative log-prob, best first (as vLLM).
  std::vector<size_t> Returned() const {
    const auto ran = static_cast<size_t>(spec_.request.n), keep = static_cast<size_t>(spec_.n);
    std::vector<size_t> out;
    for (size_t first = 0; first < choices_.size(); first += ran) {
      if (keep == ran) {
        for (size_t i = 0; i < ran; ++i) out.push_back(first + i);
        continue;
      }
      std::vector<double> scores(ran);
      for (size_t i = 0; i < ran; ++i) scores[i] = choices_[first + i].cumulative_logprob;
      const std::vector<size_t> best = BestFirst(scores);
      for (size_t i = 0; i < keep; ++i) out.push_back(first + best[i]);
    }
    return out;
  }

  // The session the request continues, if any.
  const std::string* Session() const {
    return spec_.request.session_id.empty() ? nullptr : &spec_.request.session_id;
  }

  CompletionSpec spec_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;
  size_t finished_ = 0;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
  int64_t cached_tokens_ = 0;
  int64_t session_tokens_ = 0;  // tokens the session holds after this turn
};

}  // namespace

std::string RandomId(std::string_view prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%s%012x%012x", std::string(prefix), rng() & 0xFFFFFFFFFFFFull,
                         rng() & 0xFFFFFFFFFFFFull);
}

void HandleCompletions(const HandlerContext& ctx, const HttpRequest& request,
                       std::shared_ptr<Exchange> exchange) {
  absl::StatusOr<engine::Engine*> engine = ServingEngine(ctx);
  if (!engine.ok()) return exchange->Respond(ErrorResponse(engine.status(), ApiStyle::kOpenAi));
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return exchange->Respond(ErrorResponse(body.status(), ApiStyle::kOpenAi));
  CompletionSpec spec;
  if (absl::Status s = ParseCompletionRequest(*body, ctx, &spec); !s.ok()) {
    return exchange->Respond(ErrorResponse(s, ApiStyle::kOpenAi));
  }
  auto call = std::make_shared<CompletionCall>(ctx, std::move(exchange), std::move(spec));
  call->Run(*engine);
}

}  // namespace mamba::server::http
