// The serving engine: one scheduler thread owns every request and the backend. Front ends talk
// to it only through Submit and Cancel; results flow back through each request's RequestSink.
// The thread drives the batching loop (engine/serving/batch_loop.h): each step the Scheduler
// plans, under a token budget, decode tokens for running requests and prompt chunks for new
// ones (chunked prefill), admitting waiting requests first-come first-served while state slots
// are free.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/logging.h"
#include "engine/lora/adapter_registry.h"
#include "engine/request.h"
#include "engine/serving/session_store.h"
#include "engine/serving/state_store.h"
#include "engine/tokenizer/tokenizer.h"

namespace mamba::engine {

class BatchLoop;
class StateStore;
struct LiveRequest;

struct EngineOptions {
  int64_t max_step_tokens = 512;      // token budget of one step (decode tokens + prompt chunks)
  int max_queue = 256;                // requests waiting for a slot beyond this are refused at once
  int64_t max_prompt_tokens = 65536;  // longer prompts are refused
  int32_t max_new_tokens_limit = 16384;  // upper bound on a request's max_new_tokens
  int64_t prefill_chunk = 0;             // max prompt tokens of one request per step (0 = budget)
  // Host memory for snapshots of recurrent states (engine/serving/state_store.h), reused when a
  // prompt extends a sequence seen before; 0 turns the state cache off.
  int64_t state_cache_bytes = 0;
  EvictionPolicy state_cache_policy = EvictionPolicy::kCost;
  // Sessions (engine/serving/session_store.h): max_bytes 0 turns them off.
  SessionOptions sessions;
  // A session turn is refused when the session's tokens plus its new prompt would pass this
  // (0: max_prompt_tokens). Each turn's own prompt still obeys max_prompt_tokens; the history is
  // restored from the session's state, not recomputed, so a document of any length can flow
  // through one session in turns (scoring). A completion may take a session up to
  // max_new_tokens_limit beyond it; sessions.max_tokens (what an import may hold) defaults to
  // the sum.
  int64_t max_session_tokens = 0;
  // LoRA adapters (engine/lora/adapter_registry.h): --max-loras, --max-lora-rank.
  AdapterRegistryOptions lora;
  // How decode rows run (--decode-path): the backend's choice unless a test or a benchmark
  // asks for the other path.
  DecodePath decode_path = DecodePath::kAuto;
};

// Point-in-time view for health, metrics and model info.
struct EngineStats {
  int64_t waiting = 0;
  int64_t running = 0;  // requests holding slots
  int64_t slots_used = 0;
  int64_t slots_total = 0;
  int64_t steps = 0;
  bool draining = false;
  // State cache (all zero when it is off).
  int64_t cache_lookups = 0, cache_hits = 0, cache_partial_hits = 0, cache_misses = 0;
  int64_t cache_tokens_reused = 0, cache_snapshots = 0, cache_entries = 0, cache_bytes = 0;
  int64_t cache_evictions = 0;
  // Snapshots the cost policy did not store (worth less than what they would displace).
  int64_t cache_refused = 0;
  int64_t cache_snapshot_bytes = 0;  // bytes of every snapshot taken (store and sessions)
  int64_t session_restores = 0;      // session turns resumed from their session's state
  SessionStats sessions;
  // LoRA adapters: loaded (found by name) and resident (loaded + unloaded but still in use).
  int64_t lora_resident = 0, lora_loaded = 0;
};

// Observations for metrics; called on the scheduler thread, must not block.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  struct Step {
    int batch_size = 0;  // chunks in the step
    int64_t prefill_tokens = 0;
    int64_t decode_tokens = 0;
    double seconds = 0;
  };
  virtual void OnStep(const Step& step) = 0;
  virtual void OnTokenGap(double seconds) = 0;  // between two tokens of one completion
  virtual void OnFinish(const FinishEvent& event) = 0;
  virtual void OnRejected(absl::StatusCode code) = 0;  // a Submit refused
  // A state copied between a slot and host memory (state cache or session).
  enum class StateCopy { kRestore, kSnapshot };
  virtual void OnStateCopy(StateCopy /*kind*/, double /*seconds*/) {}
};

class Engine {
 public:
  // Starts the scheduler thread. `tokenizer` may be null (then stop strings and text are off).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Backend> backend,
                                                        std::shared_ptr<const Tokenizer> tokenizer,
                                                        const EngineOptions& options,
                                                        EngineObserver* observer = nullptr);
  ~Engine();  // cancels everything still running and joins the thread

  // Validates and queues. InvalidArgument: bad parameters or token ids; ResourceExhausted: the
  // queue is full; Unavailable: draining or stopped. With request.session_id the prompt is the
  // new tokens only, appended to the session (created when new): Aborted when a request is
  // running on that session, InvalidArgument when the session would pass max_session_tokens or
  // n > 1, FailedPrecondition when sessions are off.
  absl::StatusOr<RequestId> Submit(Request request, std::shared_ptr<RequestSink> sink);
  // The checks Submit makes, for front ends that must check before sizing a reply. InvalidArgument
  // naming the field at fault (engine/request_validation.h), FailedPrecondition for stop strings
  // without a tokenizer.
  absl::Status Validate(const Request& r) const;
  // Ends a request (every completion) with kCancelled within one step; unknown ids are ignored.
  void Cancel(RequestId id);
  // Refuses new requests from now on; running and queued ones continue.
  void StartDrain();
  // Waits until nothing is queued or running, up to `timeout`; then cancels what is left
  // (kCancelled, "server shutting down"). Returns true if everything finished by itself.
  bool WaitIdle(std::chrono::milliseconds timeout);

  // Session management (NotFound for an unknown id, FailedPrecondition when sessions are off;
  // see SessionStore for the rest).
  absl::StatusOr<SessionInfo> GetSession(std::string_view id);
  std::vector<SessionInfo> ListSessions();
  absl::Status DeleteSession(std::string_view id);
  absl::StatusOr<SessionInfo> ForkSession(std::string_view id, std::string_view new_id);
  absl::StatusOr<std::string> ExportSession(std::string_view id);
  absl::StatusOr<SessionInfo> ImportSession(std::string_view id, std::string_view bytes);
  SessionStore* sessions() { return sessions_.get(); }  // null when sessions are off
  // The LoRA adapters this engine serves (never null): front ends load and unload them, and
  // resolve a request's adapter by name (Find) into Request::adapter.
  AdapterRegistry* adapters() { return adapters_.get(); }
  const AdapterRegistry* adapters() const { return adapters_.get(); }

  EngineStats Stats() const;
  const Backend& backend() const { return *backend_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const EngineOptions& options() const { return options_; }
  // The session limit in effect (options().max_session_tokens, or max_prompt_tokens when 0).
  int64_t max_session_tokens() const {
    return options_.max_session_tokens > 0 ? options_.max_session_tokens
                                           : options_.max_prompt_tokens;
  }

 private:
  Engine(std::unique_ptr<Backend> backend, std::shared_ptr<const Tokenizer> tokenizer,
         const EngineOptions& options, EngineObserver* observer);
  void Loop();
  bool Step();  // one scheduling step; false when idle
  void TakeInbox();
  void ExpireAndCancel();
  void Account(int64_t admitted, int64_t dropped, int64_t retired);  // under no lock
  void LogSummaryIfDue(bool force);

  std::unique_ptr<Backend> backend_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  EngineOptions options_;
  EngineObserver* observer_;
  std::unique_ptr<AdapterRegistry> adapters_;  // after backend_: it lays adapters out with it

  // Shared with front-end threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<std::unique_ptr<LiveRequest>> inbox_;
  std::vector<RequestId> cancels_;
  std::vector<RequestId> pending_cancels_;  // scheduler-side copy being applied
  uint64_t next_id_ = 1;
  int64_t queued_ = 0;       // inbox + waiting, for admission control
  int64_t outstanding_ = 0;  // submitted and not yet finished and retired (for WaitIdle)
  bool draining_ = false;
  bool stop_ = false;
  bool cancel_all_ = false;  // set by WaitIdle when the drain timeout passes
  EngineStats stats_;

  std::unique_ptr<SessionStore> sessions_;  // null when sessions are off

  // Scheduler-thread state.
  std::unique_ptr<StateStore> store_;  // null when the state cache is off
  std::unique_ptr<BatchLoop> loop_;
  bool never_hit_logged_ = false;  // the "evicting entries never hit" line is logged once
  struct {
    int64_t lookups = 0, hits = 0, partial_hits = 0, tokens_reused = 0;
  } tally_cache_;  // the counters at the last summary line
  static constexpr std::chrono::seconds kSummaryPeriod{10};
  std::shared_ptr<spdlog::logger> log_;  // "engine"
  std::thread thread_;
};

}  // namespace mamba::engine
