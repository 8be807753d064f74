#include "server/grpc/generate_calls.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/grpc/convert.h"

namespace mamba::server {
namespace {

using engine::FinishEvent;
using engine::TokenEvent;
using Lock = std::unique_lock<std::mutex>;

// Lifetimes, for both calls: gRPC deletes nothing of ours; each reactor deletes itself in OnDone,
// which gRPC calls only after Finish. The engine keeps the sink (and through it the shared
// state) for as long as it likes. So every path that may Finish first "claims" the finish under
// the shared mutex; only the claimant touches the reactor afterwards, and only to call Finish.
// A write in flight likewise blocks any Finish until its OnWriteDone, so whoever claimed the
// write may call StartWrite after releasing the mutex.

// ---------------------------------------------------------------------------------------------
// Generate (unary): collect every completion, answer once all have finished.

class UnaryCall;

struct UnaryShared {
  std::mutex mu;
  UnaryCall* reactor = nullptr;
  ::grpc::ByteBuffer* response = nullptr;  // gRPC's; valid until OnDone
  v1::GenerateResponse result;             // built here, serialized into `response` at the end
  bool finish_claimed = false;
  int pending = 0;      // completions still running
  absl::Status status;  // the first completion error
  std::optional<engine::RequestId> id;
  bool details = false;
  const engine::Tokenizer* tokenizer = nullptr;
  int returned = 0;                // completions answered: all, or the n best of best_of
  std::vector<double> cumulative;  // per completion: the sum of its tokens' log-probs
};

// Keeps the `keep` completions with the highest cumulative log-prob, best first (ties: the lower
// index), renumbered from 0.
void KeepBest(int keep, const std::vector<double>& cumulative, v1::GenerateResponse* result) {
  std::vector<int> order(static_cast<size_t>(result->completions_size()));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return cumulative[static_cast<size_t>(a)] > cumulative[static_cast<size_t>(b)];
  });
  google::protobuf::RepeatedPtrField<v1::Completion> all;
  all.Swap(result->mutable_completions());
  for (int i = 0; i < keep; ++i) {
    v1::Completion* c = result->add_completions();
    c->Swap(&all[order[static_cast<size_t>(i)]]);
    c->set_index(i);
  }
}

class UnaryCall final : public ::grpc::ServerUnaryReactor {
 public:
  explicit UnaryCall(ServingState* state)
      : state_(state), shared_(std::make_shared<UnaryShared>()) {
    shared_->reactor = this;
  }

  void Start(::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer& request,
             ::grpc::ByteBuffer* response, const FrontEndOptions& options);

  void OnCancel() override {
    std::optional<engine::RequestId> id;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      if (shared_->finish_claimed) return;
      shared_->finish_claimed = true;
      id = shared_->id;
    }
    if (id) state_->engine->Cancel(*id);
    Finish(::grpc::Status::CANCELLED);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->reactor = nullptr;
    }
    delete this;
  }

 private:
  void FinishNow(const absl::Status& status) {
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      if (shared_->finish_claimed) return;
      shared_->finish_claimed = true;
    }
    Finish(ToGrpcStatus(status));
  }

  ServingState* state_;
  std::shared_ptr<UnaryShared> shared_;
};

class UnarySink final : public engine::RequestSink {
 public:
  explicit UnarySink(std::shared_ptr<UnaryShared> shared) : s_(std::move(shared)) {}

  void OnToken(const TokenEvent& event) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    if (s_->finish_claimed) return;
    v1::Completion* c = s_->result.mutable_completions(event.index);
    s_->cumulative[static_cast<size_t>(event.index)] += event.token.logprob;
    c->add_token_ids(event.token.id);
    c->mutable_text()->append(event.text);
    if (s_->details) FillToken(event.token, true, s_->tokenizer, c->add_logprobs());
  }

  void OnPrompt(const engine::PromptEvent& event) override {
    std::lock_guard<std::mutex> lock(s_->mu);
    if (s_->finish_claimed) return;
    FillPromptLogprobs(event, s_->tokenizer, s_->result.mutable_prompt());
  }

  void OnFinish(const FinishEvent& event) override {
    UnaryCall* reactor = nullptr;
    ::grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      if (s_->finish_claimed) return;
      v1::Completion* c = s_->result.mutable_completions(event.index);
      c->mutable_text()->append(event.text);
      FillEnd(event, c->mutable_end());
      if (!event.status.ok() && s_->status.ok()) s_->status = event.status;
      if (--s_->pending > 0) return;
      s_->finish_claimed = true;
      reactor = s_->reactor;
      status = ToGrpcStatus(s_->status);
      if (status.ok()) {
        v1::Usage* u = s_->result.mutable_usage();
        u->set_prompt_tokens(event.usage.prompt_tokens);
        int64_t generated = 0;
        for (const v1::Completion& done : s_->result.completions()) {
          generated += done.end().usage().completion_tokens();
        }
        u->set_completion_tokens(generated);
        u->set_total_tokens(event.usage.prompt_tokens + generated);
        u->set_cached_tokens(event.usage.cached_tokens);
        u->set_session_tokens(event.session_tokens);
        if (s_->returned < s_->result.completions_size()) {
          KeepBest(s_->returned, s_->cumulative, &s_->result);
        }
        SerializeToBuffer(s_->result, s_->response);
      }
    }
    reactor->Finish(status);
  }

 private:
  std::shared_ptr<UnaryShared> s_;
};

void UnaryCall::Start(::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer& raw,
                      ::grpc::ByteBuffer* response, const FrontEndOptions& options) {
  v1::GenerateRequest request;
  if (absl::Status s = ParseRequest(raw, &request); !s.ok()) return FinishNow(s);
  absl::StatusOr<PreparedRequest> prepared = PrepareRequest(
      request, *state_, EngineDeadline(context->deadline(), options.request_timeout_ms));
  if (!prepared.ok()) return FinishNow(prepared.status());
  const int n = prepared->request.n;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->response = response;
    shared_->details = prepared->token_details;
    shared_->tokenizer = state_->tokenizer;
    shared_->pending = n;
    shared_->returned = prepared->returned;
    shared_->cumulative.assign(static_cast<size_t>(n), 0.0);
    for (int i = 0; i < n; ++i) shared_->result.add_completions()->set_index(i);
    if (prepared->echo) *shared_->result.mutable_prompt() = std::move(prepared->prompt);
  }
  absl::StatusOr<engine::RequestId> id =
      state_->engine->Submit(std::move(prepared->request), std::make_shared<UnarySink>(shared_));
  if (!id.ok()) return FinishNow(id.status());
  // OnCancel cannot run before this handler returns, so the id is in place before it looks.
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->id = *id;
}

// ---------------------------------------------------------------------------------------------
// GenerateStream: one message per token, written one at a time from a queue.

class StreamCall;

struct StreamShared {
  std::mutex mu;
  StreamCall* reactor = nullptr;
  std::deque<v1::GenerateStreamResponse> queue;
  int64_t queued_bytes = 0;
  ::grpc::ByteBuffer in_flight;  // the message being written; gRPC's while `writing`
  bool writing = false;
  bool finish_claimed = false;
  bool cancelled = false;  // OnCancel or a failed write: finish at once, write nothing more
  int pending = 0;         // completions still running in the engine
  absl::Status status;     // the first completion error, or the buffer overflow
  std::optional<engine::RequestId> id;
  bool cancel_engine = false;  // cancel the engine request as soon as its id is known
  // Set before Submit, read-only afterwards.
  engine::Engine* engine = nullptr;
  const engine::Tokenizer* tokenizer = nullptr;
  bool details = false;
  int64_t max_buffer_bytes = 0;
  // With prompt log-probs the echo message waits for them (StreamSink::OnPrompt).
  std::optional<v1::PromptEcho> echo;

  // Queues a message; false when the client is too far behind, and the call must end.
  bool Push(v1::GenerateStreamResponse message) {
    queued_bytes += static_cast<int64_t>(message.ByteSizeLong());
    queue.push_back(std::move(message));
    if (queued_bytes <= max_buffer_bytes) return true;
    queue.clear();
    queued_bytes = 0;
    status = absl::ResourceExhaustedError(
        absl::StrCat("the client read too slowly: more than ", max_buffer_bytes,
                     " bytes of stream messages were waiting; the request was cancelled"));
    return false;
  }
};

// Decides the call's next step under the lock and takes it after releasing it.
void Advance(StreamShared& s, Lock lock);

class StreamCall final : public ::grpc::ServerWriteReactor<::grpc::ByteBuffer> {
 public:
  explicit StreamCall(ServingState* state)
      : state_(state), shared_(std::make_shared<StreamShared>()) {
    shared_->reactor = this;
  }

  void Start(::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer& request,
             const FrontEndOptions& options);

  void OnWriteDone(bool ok) override {
    Lock lock(shared_->mu);
    shared_->writing = false;
    if (!ok) shared_->cancelled = true;
    Advance(*shared_, std::move(lock));
  }

  void OnCancel() override {
    Lock lock(shared_->mu);
    shared_->cancelled = true;
    Advance(*shared_, std::move(lock));
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->reactor = nullptr;
    }
    delete this;
  }

 private:
  ServingState* state_;
  std::shared_ptr<StreamShared> shared_;
};

void Advance(StreamShared& s, Lock lock) {
  if (s.finish_claimed || s.writing) return;
  StreamCall* reactor = s.reactor;
  if (!s.cancelled && !s.queue.empty()) {
    s.queued_bytes -= static_cast<int64_t>(s.queue.front().ByteSizeLong());
    SerializeToBuffer(s.queue.front(), &s.in_flight);
    s.queue.pop_front();
    s.writing = true;
    lock.unlock();
    reactor->StartWrite(&s.in_flight);
    return;
  }
  if (!s.cancelled && s.pending > 0 && s.status.ok()) return;  // more to come
  s.finish_claimed = true;
  const ::grpc::Status status = s.cancelled ? ::grpc::Status::CANCELLED : ToGrpcStatus(s.status);
  const std::optional<engine::RequestId> cancel =
      s.pending > 0 ? s.id : std::optional<engine::RequestId>();
  lock.unlock();
  // Engine::Cancel only queues the id; it is safe from any thread, the engine's included.
  if (cancel) s.engine->Cancel(*cancel);
  reactor->Finish(status);
}

class StreamSink final : public engine::RequestSink {
 public:
  explicit StreamSink(std::shared_ptr<StreamShared> shared) : s_(std::move(shared)) {}

  void OnToken(const TokenEvent& event) override {
    Lock lock(s_->mu);
    if (s_->finish_claimed || s_->cancelled || !s_->status.ok()) return;
    v1::GenerateStreamResponse m;
    m.set_index(event.index);
    m.set_text(event.text);
    FillToken(event.token, s_->details, s_->tokenizer, m.mutable_token());
    if (!s_->Push(std::move(m))) {
      // Free the engine now; the call itself ends once the write in flight completes (a client
      // that never reads holds only this call's memory, until its deadline or disconnect).
      const std::optional<engine::RequestId> id = s_->id;
      s_->cancel_engine = !id;
      lock.unlock();
      if (id) s_->engine->Cancel(*id);  // only queues the id: safe on the engine's thread
      lock.lock();
    }
    Advance(*s_, std::move(lock));
  }

  void OnPrompt(const engine::PromptEvent& event) override {
    Lock lock(s_->mu);
    if (s_->finish_claimed || s_->cancelled || !s_->status.ok() || !s_->echo) return;
    v1::GenerateStreamResponse m;
    *m.mutable_prompt() = *std::move(s_->echo);
    s_->echo.reset();
    FillPromptLogprobs(event, s_->tokenizer, m.mutable_prompt());
    if (!s_->Push(std::move(m))) {
      const std::optional<engine::RequestId> id = s_->id;
      s_->cancel_engine = !id;
      lock.unlock();
      if (id) s_->engine->Cancel(*id);
      lock.lock();
    }
    Advance(*s_, std::move(lock));
  }

  void OnFinish(const FinishEvent& event) override {
    Lock lock(s_->mu);
    --s_->pending;
    if (s_->finish_claimed || s_->cancelled) return;
    if (s_->status.ok()) {
      v1::GenerateStreamResponse m;
      m.set_index(event.index);
      m.set_text(event.text);
      FillEnd(event, m.mutable_end());
      s_->Push(std::move(m));
    }
    if (!event.status.ok() && s_->status.ok()) s_->status = event.status;
    Advance(*s_, std::move(lock));
  }

 private:
  std::shared_ptr<StreamShared> s_;
};

void StreamCall::Start(::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer& raw,
                       const FrontEndOptions& options) {
  v1::GenerateRequest request;
  absl::StatusOr<PreparedRequest> prepared = absl::UnknownError("unset");
  if (absl::Status s = ParseRequest(raw, &request); !s.ok()) {
    prepared = s;
  } else if (request.best_of() > std::max(request.n(), 1)) {
    prepared = absl::InvalidArgumentError("best_of: best_of > n cannot be streamed (use Generate)");
  } else {
    prepared = PrepareRequest(request, *state_,
                              EngineDeadline(context->deadline(), options.request_timeout_ms));
  }
  Lock lock(shared_->mu);
  if (!prepared.ok()) {
    shared_->status = prepared.status();
    return Advance(*shared_, std::move(lock));
  }
  StreamShared& s = *shared_;
  s.engine = state_->engine;
  s.tokenizer = state_->tokenizer;
  s.details = prepared->token_details;
  s.max_buffer_bytes = options.max_stream_buffer_bytes;
  s.pending = prepared->request.n;
  if (prepared->echo && prepared->request.prompt_logprobs >= 0) {
    s.echo = std::move(prepared->prompt);
  } else if (prepared->echo) {
    v1::GenerateStreamResponse m;
    *m.mutable_prompt() = std::move(prepared->prompt);
    s.Push(std::move(m));
  }
  lock.unlock();
  absl::StatusOr<engine::RequestId> id =
      state_->engine->Submit(std::move(prepared->request), std::make_shared<StreamSink>(shared_));
  lock.lock();
  if (id.ok()) {
    s.id = *id;
    if (s.cancel_engine) {
      lock.unlock();
      state_->engine->Cancel(*id);
      lock.lock();
    }
  } else {
    // Nothing was written yet (only this thread starts writes before the sink exists).
    s.queue.clear();
    s.queued_bytes = 0;
    s.pending = 0;
    s.status = id.status();
  }
  Advance(s, std::move(lock));
}

}  // namespace

::grpc::ServerUnaryReactor* StartGenerate(::grpc::CallbackServerContext* context,
                                          const ::grpc::ByteBuffer* request,
                                          ::grpc::ByteBuffer* response, ServingState* state,
                                          const FrontEndOptions& options) {
  auto* call = new UnaryCall(state);
  call->Start(context, *request, response, options);
  return call;
}

::grpc::ServerWriteReactor<::grpc::ByteBuffer>* StartGenerateStream(
    ::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer* request, ServingState* state,
    const FrontEndOptions& options) {
  auto* call = new StreamCall(state);
  call->Start(context, *request, options);
  return call;
}

}  // namespace mamba::server
