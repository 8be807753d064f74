#include "engine/engine.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/logging.h"
#include "engine/request_validation.h"
#include "engine/serving/batch_loop.h"
#include "engine/serving/state_store.h"
#include "engine/status_macros.h"
#include "spdlog/spdlog.h"

namespace mamba::engine {
namespace {

constexpr size_t kMaxStopStrings = 16;
constexpr size_t kMaxStopStringBytes = 256;

}  // namespace

namespace {

// The state cache's key for this model: a hash of the backend's model fingerprint (which hashes
// the config and the weights; see Checkpoint::fingerprint).
uint64_t ModelKey(const std::string& fingerprint) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : fingerprint) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// How a session file lays out this backend's state. Mamba backends use the documented layout
// (Backend::state_floats); any other state (a test double's) is one flat tensor.
SessionModel SessionModelOf(const Backend& backend) {
  const ModelConfig& c = backend.config();
  const BackendInfo info = backend.info();
  SessionModel m;
  m.fingerprint = info.model_fingerprint;
  m.dtype = kernels::Name(info.dtype);
  m.vocab_size = c.vocab_size;
  m.layers = c.num_hidden_layers;
  m.d_inner = c.intermediate_size;
  m.conv_rows = c.conv_kernel - 1;
  m.d_state = c.state_size;
  m.conv_dim = c.conv_dim();
  m.heads = c.is_mamba2() ? c.num_heads : 0;
  if (m.state_floats() != backend.state_floats()) {
    m.layers = 1;
    m.d_inner = backend.state_floats();
    m.conv_rows = 0;
    m.d_state = 1;
    m.heads = 0;
  }
  return m;
}

// A session turn under another adapter than the session's (or the base model vs an adapter):
// its state was computed under the session's, and resuming it under another would give neither
// model's output.
absl::Status SessionAdapterMismatch(const Request& r, const std::string& session_fingerprint) {
  const std::string was = session_fingerprint.empty()
                              ? std::string("the base model")
                              : absl::StrCat("LoRA adapter ", session_fingerprint);
  const std::string is = r.adapter ? absl::StrCat("LoRA adapter '", r.adapter->name, "' (",
                                                  r.adapter->host->fingerprint(), ")")
                                   : std::string("the base model");
  return InvalidField("model",
                      absl::StrCat("session '", r.session_id, "' was created under ", was,
                                   "; this request runs under ", is,
                                   " (a session continues under the model it began with)"));
}

}  // namespace

const char* Name(Finish f) {
  switch (f) {
    case Finish::kStop:
      return "stop";
    case Finish::kLength:
      return "length";
    case Finish::kCancelled:
      return "cancelled";
    case Finish::kDeadline:
      return "deadline";
    case Finish::kError:
      return "error";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Backend> backend,
                                                       std::shared_ptr<const Tokenizer> tokenizer,
                                                       const EngineOptions& options,
                                                       EngineObserver* observer) {
  if (!backend) return absl::InvalidArgumentError("no backend");
  if (options.max_step_tokens < 1 || options.max_queue < 0 || options.max_prompt_tokens < 1) {
    return absl::InvalidArgumentError("engine options: budgets must be positive");
  }
  std::unique_ptr<Engine> e(
      new Engine(std::move(backend), std::move(tokenizer), options, observer));
  if (options.sessions.max_bytes > 0) {
    SessionOptions so = options.sessions;
    // A session may grow by a turn's completion beyond the session limit (its next turn is then
    // refused); an import may bring one that large.
    if (so.max_tokens <= 0) so.max_tokens = e->max_session_tokens() + options.max_new_tokens_limit;
    MAMBA_ASSIGN_OR_RETURN(e->sessions_, SessionStore::Create(so, SessionModelOf(*e->backend_)));
  }
  e->thread_ = std::thread([p = e.get()] { p->Loop(); });
  return e;
}

Engine::Engine(std::unique_ptr<Backend> backend, std::shared_ptr<const Tokenizer> tokenizer,
               const EngineOptions& options, EngineObserver* observer)
    : backend_(std::move(backend)),
      tokenizer_(std::move(tokenizer)),
      options_(options),
      observer_(observer),
      adapters_(std::make_unique<AdapterRegistry>(*backend_, options_.lora)) {
  SchedulerOptions so;
  so.max_step_tokens = options_.max_step_tokens;
  so.prefill_chunk = options_.prefill_chunk;
  StateCache cache;
  if (options_.state_cache_bytes > 0) {
    StateStoreOptions sso;
    sso.capacity_bytes = options_.state_cache_bytes;
    sso.policy = options_.state_cache_policy;
    store_ = std::make_unique<StateStore>(sso);
    cache.store = store_.get();
    cache.key.model = ModelKey(backend_->info().model_fingerprint);
  }
  loop_ = std::make_unique<BatchLoop>(*backend_, tokenizer_, so, observer_, cache);
  loop_->set_decode_path(options_.decode_path);
  loop_->set_on_admit([this](int64_t admitted) { Account(admitted, 0, 0); });
  stats_.slots_total = backend_->num_slots();
  log_ = NamedLogger("engine");
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// The one place a request is checked, for every front end (they call it before Submit when they
// must size a reply first). Codes by meaning: InvalidArgument for what the client got wrong, with
// the field named (engine/request_validation.h); FailedPrecondition for what this server lacks.
absl::Status Engine::Validate(const Request& r) const {
  const int64_t vocab = backend_->config().vocab_size;
  if (!r.session_id.empty()) {
    if (!sessions_) {
      return WithField(
          absl::FailedPreconditionError("sessions are off on this server (--session-bytes 0)"),
          "session_id");
    }
    if (absl::Status s = ValidateSessionId(r.session_id); !s.ok()) {
      return InvalidField("session_id", s.message());
    }
    if (r.n != 1) {
      return InvalidField("n", "n must be 1 with a session_id (fork the session to branch)");
    }
  } else if (r.prompt.empty()) {
    return InvalidField("prompt", "the prompt is empty");
  }
  if (static_cast<int64_t>(r.prompt.size()) > options_.max_prompt_tokens) {
    return InvalidField("prompt",
                        absl::StrCat("the prompt has ", r.prompt.size(), " tokens; the limit is ",
                                     options_.max_prompt_tokens),
                        kContextLengthExceeded);
  }
  for (TokenId t : r.prompt) {
    if (t < 0 || t >= vocab) {
      return InvalidField(
          "prompt", absl::StrCat("token id ", t, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (r.prompt_logprobs < -1 || r.prompt_logprobs > kMaxTopLogprobs) {
    return InvalidField("prompt_logprobs",
                        absl::StrCat("prompt_logprobs must be in [0, ", kMaxTopLogprobs,
                                     "] (or -1: off), got ", r.prompt_logprobs));
  }
  if (r.params.max_new_tokens == 0) {
    // Scoring: the prompt's log-probs are the whole answer.
    if (r.prompt_logprobs < 0) {
      return InvalidField("max_new_tokens",
                          "max_new_tokens must be >= 1, or 0 with prompt log-probs (scoring the "
                          "prompt without generating)");
    }
    SamplingParams p = r.params;
    p.max_new_tokens = 1;
    MAMBA_RETURN_IF_ERROR(p.Validate(vocab));
  } else {
    MAMBA_RETURN_IF_ERROR(r.params.Validate(vocab));
  }
  if (r.params.max_new_tokens > options_.max_new_tokens_limit) {
    return InvalidField("max_new_tokens",
                        absl::StrCat("max_new_tokens ", r.params.max_new_tokens,
                                     " exceeds the limit ", options_.max_new_tokens_limit));
  }
  if (r.n < 1 || r.n > backend_->num_slots()) {
    return InvalidField("n",
                        absl::StrCat("n must be in [1, ", backend_->num_slots(), "], got ", r.n));
  }
  if (r.stop_strings.size() > kMaxStopStrings) {
    return InvalidField("stop_strings", absl::StrCat("at most ", kMaxStopStrings, " stop strings"));
  }
  for (const std::string& s : r.stop_strings) {
    if (s.empty() || s.size() > kMaxStopStringBytes) {
      return InvalidField("stop_strings", absl::StrCat("stop strings must have 1 to ",
                                                       kMaxStopStringBytes, " bytes"));
    }
  }
  if (!r.stop_strings.empty() && !tokenizer_) {
    return WithField(absl::FailedPreconditionError("stop strings need a tokenizer; none is loaded"),
                     "stop_strings");
  }
  return absl::OkStatus();
}

absl::StatusOr<RequestId> Engine::Submit(Request request, std::shared_ptr<RequestSink> sink) {
  absl::Status s = Validate(request);
  // A session turn: the prompt is the new tokens, after everything the session holds. The
  // session is held (others get Aborted) until the turn's last token is committed.
  std::unique_ptr<SessionStore::Lease> lease;
  if (s.ok() && !request.session_id.empty()) {
    absl::StatusOr<std::unique_ptr<SessionStore::Lease>> l = sessions_->Acquire(request.session_id);
    if (l.ok()) {
      lease = std::move(*l);
      const std::vector<TokenId>& held = lease->content().tokens;
      const std::string& fingerprint =
          request.adapter ? request.adapter->host->fingerprint() : std::string();
      if (!held.empty() && lease->content().adapter != fingerprint) {
        s = SessionAdapterMismatch(request, lease->content().adapter);
      } else if (held.empty() && request.prompt.empty()) {
        s = InvalidField("prompt", "the prompt is empty (a new session needs one)");
      } else if (static_cast<int64_t>(held.size() + request.prompt.size()) > max_session_tokens()) {
        s = InvalidField("prompt",
                         absl::StrCat("session '", request.session_id, "' holds ", held.size(),
                                      " tokens; with this prompt's ", request.prompt.size(),
                                      " it would pass the session limit of ", max_session_tokens()),
                         kContextLengthExceeded);
      } else {
        request.prompt.insert(request.prompt.begin(), held.begin(), held.end());
      }
    } else {
      s = WithField(l.status(), "session_id");
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (s.ok() && (draining_ || stop_)) s = absl::UnavailableError("the server is shutting down");
  // Requests not yet admitted (inbox + waiting) may fill the free slots plus max_queue: a burst
  // into an idle server is not refused just because the loop has not admitted it yet, and
  // max_queue 0 means "run now or refuse".
  const int64_t free_slots = stats_.slots_total - stats_.slots_used;
  if (s.ok() && queued_ >= options_.max_queue + free_slots) {
    s = absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", options_.max_queue, " waiting requests)"));
  }
  if (!s.ok()) {
    lock.unlock();
    if (observer_) observer_->OnRejected(s.code());
    return s;
  }
  auto live = std::make_unique<LiveRequest>();
  const RequestId id(next_id_++);
  live->view.id = id;
  live->fallback_seed = id.value * 1000003u;
  live->req = std::move(request);
  live->sink = std::move(sink);
  if (lease) {
    live->session_state = lease->content().state;
    live->session_state_tokens = lease->content().state_tokens;
    live->session = std::move(lease);
  }
  live->submitted = Clock::now();
  inbox_.push_back(std::move(live));
  ++queued_;
  ++outstanding_;
  lock.unlock();
  cv_.notify_one();
  return id;
}

void Engine::Cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_one();
}

void Engine::StartDrain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  stats_.draining = true;
}

bool Engine::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto idle = [&] { return outstanding_ == 0; };
  if (idle_cv_.wait_for(lock, timeout, idle)) return true;
  cancel_all_ = true;
  cv_.notify_one();
  idle_cv_.wait_for(lock, std::chrono::seconds(10), idle);
  return false;
}

EngineStats Engine::Stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = stats_;
    s.waiting = queued_;
  }
  if (sessions_) s.sessions = sessions_->stats();
  s.lora_resident = adapters_->resident();
  s.lora_loaded = static_cast<int64_t>(adapters_->List().size());
  return s;
}

namespace {

absl::Status SessionsOff() {
  return absl::FailedPreconditionError("sessions are off on this server (--session-bytes 0)");
}

}  // namespace

absl::StatusOr<SessionInfo> Engine::GetSession(std::string_view id) {
  if (!sessions_) return SessionsOff();
  return sessions_->Get(id);
}

std::vector<SessionInfo> Engine::ListSessions() {
  return sessions_ ? sessions_->List() : std::vector<SessionInfo>{};
}

absl::Status Engine::DeleteSession(std::string_view id) {
  if (!sessions_) return SessionsOff();
  return sessions_->Delete(id);
}

absl::StatusOr<SessionInfo> Engine::ForkSession(std::string_view id, std::string_view new_id) {
  if (!sessions_) return SessionsOff();
  return sessions_->Fork(id, new_id);
}

absl::StatusOr<std::string> Engine::ExportSession(std::string_view id) {
  if (!sessions_) return SessionsOff();
  return sessions_->Export(id);
}

absl::StatusOr<SessionInfo> Engine::ImportSession(std::string_view id, std::string_view bytes) {
  if (!sessions_) return SessionsOff();
  return sessions_->Import(id, bytes);
}

void Engine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto work = [&] {
        return stop_ || cancel_all_ || !inbox_.empty() || !cancels_.empty() || !loop_->Idle();
      };
      if (loop_->tally().steps == 0) {
        cv_.wait(lock, work);
      } else if (!cv_.wait_until(lock, loop_->tally().since + kSummaryPeriod, work)) {
        lock.unlock();
        LogSummaryIfDue(true);  // the last period of a burst, once the engine is idle
        continue;
      }
      if (stop_) break;
    }
    Step();
    LogSummaryIfDue(false);
  }
  // Shutting down: everything still known ends as cancelled.
  TakeInbox();
  const LoopCounts counts =
      loop_->EndAll(Finish::kCancelled, absl::CancelledError("the engine stopped"));
  Account(0, counts.dropped, counts.retired);
}

// One line per period with work, at info level (the hot loop itself logs at debug only).
void Engine::LogSummaryIfDue(bool force) {
  const BatchLoop::Tally& tally = loop_->tally();
  if (tally.steps == 0) return;
  const Clock::time_point now = Clock::now();
  if (!force && now - tally.since < kSummaryPeriod) return;
  const double period = std::chrono::duration<double>(now - tally.since).count();
  const EngineStats s = Stats();
  std::string cache;
  if (store_) {
    const int64_t lookups = s.cache_lookups - tally_cache_.lookups;
    const int64_t reused = s.cache_tokens_reused - tally_cache_.tokens_reused;
    const int64_t hit =
        (s.cache_hits - tally_cache_.hits) + (s.cache_partial_hits - tally_cache_.partial_hits);
    cache = fmt::format(", state cache {}/{} prompts hit, {} tokens reused, {} entries {:.0f} MiB",
                        hit, lookups, reused, s.cache_entries,
                        static_cast<double>(s.cache_bytes) / (1 << 20));
    tally_cache_ = {s.cache_lookups, s.cache_hits, s.cache_partial_hits, s.cache_tokens_reused};
  }
  log_->info(
      "engine: {} steps in {:.1f} s ({:.0f}% busy), {} decode + {} prompt tokens "
      "({:.1f} tok/s out), {} running, {} waiting, slots {}/{}{}",
      tally.steps, period, 100.0 * tally.busy_seconds / period, tally.decode_tokens,
      tally.prompt_tokens, static_cast<double>(tally.decode_tokens) / period, s.running, s.waiting,
      s.slots_used, s.slots_total, cache);
  loop_->ResetTally();
}

}  // namespace mamba::engine
