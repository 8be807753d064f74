#include "server/http/generation_call.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"

namespace mamba::server::http {

std::optional<engine::Clock::time_point> Deadline(const FrontEndOptions& options,
                                                  double timeout_s) {
  std::optional<engine::Clock::time_point> deadline;
  const auto now = engine::Clock::now();
  if (options.request_timeout_ms > 0) {
    deadline = now + std::chrono::milliseconds(options.request_timeout_ms);
  }
  if (timeout_s > 0) {
    // Capped at a year so the arithmetic cannot overflow.
    const auto d = now + std::chrono::duration_cast<engine::Clock::duration>(
                             std::chrono::duration<double>(std::min(timeout_s, 3.2e7)));
    if (!deadline || d < *deadline) deadline = d;
  }
  return deadline;
}

std::string TokenText(const engine::Tokenizer* tokenizer, engine::TokenId id) {
  if (!tokenizer) return "";
  std::array<engine::TokenId, 1> one{id};
  absl::StatusOr<std::string> text = tokenizer->Decode(one, /*skip_special_tokens=*/false);
  return text.ok() ? *std::move(text) : std::string();
}

absl::Status TokenizePrompt(const HandlerContext& ctx, const std::string& text, bool special,
                            Prompt* out) {
  const engine::Tokenizer* tok = ctx.state->tokenizer;
  if (!tok) {
    return engine::WithField(
        absl::FailedPreconditionError("no tokenizer is loaded: send prompts as token ids"),
        "prompt");
  }
  absl::StatusOr<std::vector<engine::TokenId>> ids =
      special ? tok->EncodeWithSpecialTokens(text) : tok->Encode(text);
  if (!ids.ok()) {
    return engine::InvalidField(
        "prompt", absl::StrCat("cannot tokenize the prompt: ", ids.status().message()));
  }
  out->ids = *std::move(ids);
  out->text = text;
  return absl::OkStatus();
}

std::string Sse(const OrderedJson& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

std::vector<size_t> BestFirst(std::span<const double> cumulative_logprobs) {
  std::vector<size_t> order(cumulative_logprobs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return cumulative_logprobs[a] > cumulative_logprobs[b];
  });
  return order;
}

absl::StatusOr<engine::Engine*> ServingEngine(const HandlerContext& ctx) {
  // health is stored after engine is set, so reading it first makes the pointer safe to use.
  const Health h = ctx.state->health.load();
  if (h == Health::kStarting || ctx.state->engine == nullptr) {
    return absl::UnavailableError("the server is starting");
  }
  if (h == Health::kDraining) return absl::UnavailableError("the server is shutting down");
  return ctx.state->engine;
}

// Runs on the engine thread: copies the event onto the strand and returns.
class GenerationCall::Sink : public engine::RequestSink {
 public:
  Sink(std::shared_ptr<GenerationCall> call, int prompt_index)
      : call_(std::move(call)), prompt_index_(prompt_index) {}
  void OnToken(const engine::TokenEvent& event) override {
    call_->exchange_->Post([call = call_, p = prompt_index_, event] {
      if (!call->done_) call->OnToken(p, event);
    });
  }
  void OnFinish(const engine::FinishEvent& event) override {
    call_->exchange_->Post([call = call_, p = prompt_index_, event] {
      if (!call->done_) call->OnFinish(p, event);
    });
  }
  void OnPrompt(const engine::PromptEvent& event) override {
    call_->exchange_->Post([call = call_, p = prompt_index_, event] {
      if (!call->done_) call->OnPrompt(p, event);
    });
  }

 private:
  std::shared_ptr<GenerationCall> call_;
  int prompt_index_;
};

GenerationCall::GenerationCall(const HandlerContext& ctx, std::shared_ptr<Exchange> exchange,
                               ApiStyle style)
    : ctx_(ctx), exchange_(std::move(exchange)), style_(style) {}

std::optional<ApiError> GenerationCall::Submit(engine::Engine* engine, engine::Request request,
                                               int prompt_index) {
  engine_ = engine;
  absl::StatusOr<engine::RequestId> id =
      engine->Submit(std::move(request), std::make_shared<Sink>(shared_from_this(), prompt_index));
  if (!id.ok()) return ToApiError(id.status(), style_);
  if (submitted_.empty()) {
    // Weak: the exchange must not keep its call alive through this hook.
    exchange_->SetOnClientGone([weak = weak_from_this()] {
      if (auto call = weak.lock()) {
        call->done_ = true;
        call->CancelAll();
      }
    });
  }
  submitted_.push_back(*id);
  return std::nullopt;
}

void GenerationCall::CancelAll() {
  if (!engine_) return;
  for (engine::RequestId id : submitted_) engine_->Cancel(id);
}

ApiError GenerationCall::FinishError(const absl::Status& status) const {
  // Past Submit, a failure is the server's (whatever code the backend used), unless the request
  // ran out of time or the engine cancelled it.
  const absl::StatusCode code = status.code() == absl::StatusCode::kDeadlineExceeded ||
                                        status.code() == absl::StatusCode::kCancelled
                                    ? status.code()
                                    : absl::StatusCode::kInternal;
  ApiError e = ToApiError(absl::Status(code, status.message()), style_);
  // TGI's name for a generation that stopped before its end.
  if (style_ == ApiStyle::kTgi && code != absl::StatusCode::kInternal) {
    e.tgi_type = "incomplete_generation";
  }
  return e;
}

void GenerationCall::Fail(const ApiError& error) {
  done_ = true;
  CancelAll();
  exchange_->Respond(ErrorResponse(error));
}

bool GenerationCall::WriteOrCancel(std::string data) {
  if (exchange_->Write(std::move(data))) return true;
  done_ = true;
  CancelAll();
  exchange_->Abort();
  return false;
}

}  // namespace mamba::server::http
