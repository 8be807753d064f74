// The one batching loop: owns waiting and running requests, the slot pool and the scheduler,
// and runs one step at a time on the calling thread (plan, backend call, sample, emit, fork,
// retire). The serving Engine drives it from its scheduler thread; offline Generate drives it
// directly. Not thread-safe: one caller at a time.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend.h"
#include "engine/request.h"
#include "engine/sampling.h"
#include "engine/serving/phase.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/session_store.h"
#include "engine/serving/slot_pool.h"
#include "engine/serving/state_store.h"
#include "engine/stop_matcher.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"

namespace spdlog {
class logger;
}

namespace mamba::engine {

class EngineObserver;

// One of a request's n completions: its sampler and text state (its slot is in the view).
struct Completion {
  std::unique_ptr<Sampler> sampler;
  std::vector<TokenId> generated;  // kept while a state cache is on (its end-of-completion key)
  std::unique_ptr<IncrementalDetokenizer> detok;
  StopMatcher stops;
  TokenId last = 0;
  bool finished = false;
  Clock::time_point last_token;
  double ttft = 0;
};

// A request from submission until its last completion finishes.
struct LiveRequest {
  Request req;
  std::shared_ptr<RequestSink> sink;
  Clock::time_point submitted;
  uint64_t fallback_seed = 0;  // seeds completion i's sampler (+ i) when params.seed is empty
  double queue_seconds = 0;
  RequestView view;  // id, phase, prompt progress, slots: what the scheduler plans with
  std::vector<Completion> completions;
  std::shared_ptr<const StateSnapshot> restore_from;  // set with view.restore before admission
  // A session turn: the session, held until the turn ends, and the state it resumes from (after
  // the first session_state_tokens tokens of the prompt).
  std::unique_ptr<SessionStore::Lease> session;
  std::shared_ptr<const StateSnapshot> session_state;
  int64_t session_state_tokens = 0;
  // Prompt log-probs (req.prompt_logprobs >= 0): gathered chunk by chunk, sent at the prompt's
  // end (PromptEvent); and a session turn that generates nothing keeps the prompt's last logits
  // for its session (its state then covers every token).
  PromptEvent prompt_event;
  std::vector<float> end_logits;
};

// The state cache a loop uses: where snapshots go and what, besides tokens, keys them. Only
// key.model is used: each request's entries are keyed by its own adapter (Request::adapter's
// key; 0 for the base model), so a prefix computed under one is never resumed under another.
struct StateCache {
  StateStore* store = nullptr;  // null: no cache
  StateKey key;
};

// What the state cache did, since the loop started.
struct CacheCounts {
  int64_t lookups = 0, hits = 0, partial_hits = 0, misses = 0;
  int64_t tokens_reused = 0;  // prompt tokens restored instead of computed
  int64_t snapshots = 0;      // taken and stored
  int64_t snapshot_failures = 0;
  int64_t snapshot_bytes = 0;    // of every snapshot taken (store and sessions)
  int64_t session_restores = 0;  // session turns resumed from their session's state
  double restore_seconds = 0, snapshot_seconds = 0;
};

// Counts from one call, for the caller's admission control and idle tracking.
struct LoopCounts {
  int64_t admitted = 0;  // left the waiting queue for slots
  int64_t dropped = 0;   // ended while still waiting (never admitted)
  int64_t retired = 0;   // finished and removed from the running list
};

class BatchLoop {
 public:
  // `tokenizer` and `observer` may be null (no text and stop strings; no metrics).
  BatchLoop(Backend& backend, std::shared_ptr<const Tokenizer> tokenizer,
            const SchedulerOptions& options, EngineObserver* observer, StateCache cache = {});

  // Queues a request (already validated) behind the waiting ones.
  void Enqueue(std::unique_ptr<LiveRequest> live);

  // Why a request should end now, if it should: a reason other than kStop/kLength + status.
  struct Ending {
    Finish reason = Finish::kCancelled;
    absl::Status status;
  };
  // Ends every waiting or running request for which `why` returns an Ending.
  template <typename Why>
  LoopCounts EndWhere(Why why);
  // Ends everything (e.g. the engine stopping).
  LoopCounts EndAll(Finish reason, const absl::Status& status);

  // One step: retire, admit, plan, run the backend, sample and emit, fork, retire. `ran` is
  // false when there was nothing to run.
  struct StepResult {
    LoopCounts counts;
    bool ran = false;
  };
  StepResult Step();

  // Called within Step right after admission, before the backend runs and any token is emitted,
  // with the number admitted: a caller's admission control must see the slots taken before a
  // client can see the first token (and send the next request).
  void set_on_admit(std::function<void(int64_t)> f) { on_admit_ = std::move(f); }

  // Takes effect from the next step.
  void set_decode_path(DecodePath path) { decode_path_ = path; }

  bool Idle() const { return waiting_.empty() && running_.empty(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  const SlotPool& slots() const { return pool_; }
  const CacheCounts& cache_counts() const { return cache_counts_; }

  // Work since the last TakeTally (for the engine's periodic summary line).
  struct Tally {
    int64_t steps = 0, decode_tokens = 0, prompt_tokens = 0;
    double busy_seconds = 0;
    Clock::time_point since;
  };
  const Tally& tally() const { return tally_; }
  void ResetTally() { tally_ = Tally{}; }

 private:
  StateKey KeyOf(const LiveRequest& live) const;  // the state cache's key for its states
  void SelectAdmissible(size_t free_slots);
  void LookUp(LiveRequest& live, double now);
  bool WaitForSibling(LiveRequest& live);
  absl::Status Admit(const StepPlan& plan);
  void Save(const StateKey& key, SlotId slot, std::span<const TokenId> prefix,
            std::span<const TokenId> suffix, std::span<const float> logits);
  std::shared_ptr<StateSnapshot> TakeSnapshot(SlotId slot);  // null on failure (logged)
  void Insert(const StateKey& key, std::vector<TokenId> tokens,
              std::shared_ptr<StateSnapshot> snapshot);
  absl::Status CommitSession(LiveRequest& live, const Completion& c, FinishEvent* ev);
  void RunCachedPrompt(LiveRequest& live, const StepPlan& plan, int request);
  void Fork(LiveRequest& live, const StepPlan& plan, int request, std::span<const float> logits);
  void ScorePrompt(LiveRequest& live, int64_t begin, int64_t count, int64_t first_row);
  void Start(LiveRequest& live, std::vector<SlotId> slots);
  void SampleAndEmit(LiveRequest& live, int index, std::span<float> logits);
  // After completion `index`'s sampler picked (and recorded) `tok`: stream it, check its end.
  void Emit(LiveRequest& live, int index, SampledToken tok);
  // Splits the plan's chunks between Prefill (chunks_) and DecodeAndDraw (decode_*), runs both.
  absl::Status RunStep(const StepPlan& plan);
  void FinishCompletion(LiveRequest& live, int index, Finish reason, absl::Status status);
  void End(LiveRequest& live, Finish reason, const absl::Status& status);
  void FailStep(const absl::Status& status);
  int64_t Retire();

  Backend& backend_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  Scheduler scheduler_;
  EngineObserver* observer_;
  std::vector<TokenId> eos_;
  SlotPool pool_;
  std::deque<std::unique_ptr<LiveRequest>> waiting_;
  std::vector<std::unique_ptr<LiveRequest>> running_;
  std::shared_ptr<spdlog::logger> log_;
  Tally tally_;
  StateCache cache_;
  CacheCounts cache_counts_;
  std::function<void(int64_t)> on_admit_;
  Clock::time_point started_;
  // A waiting request waits for a sibling's prefix only when it shares at least this many
  // tokens beyond what the store gives it; at most kMaxWaitingScan such are passed over a step.
  static constexpr int64_t kMinSharedPrefix = 32;
  static constexpr int kMaxWaitingScan = 64;
  // Reused across steps.
  std::vector<size_t> admit_index_;  // waiting_ positions of the requests the plan may admit
  DecodePath decode_path_ = DecodePath::kAuto;
  std::vector<ChunkInput> chunks_;
  // The step's DecodeAndDraw rows: slot, token and rule per row, and per plan chunk its row there
  // (-1: in chunks_); what the backend drew and the logits of the rows it did not.
  std::vector<SlotId> decode_slots_;
  std::vector<TokenId> decode_tokens_;
  std::vector<std::optional<DrawRule>> decode_rules_;
  std::vector<int32_t> decode_row_;
  std::vector<SampledToken> drawn_;
  Logits decode_logits_;
  std::vector<const RequestView*> waiting_views_, running_views_;
  Logits logits_;
  std::vector<float> scratch_;
};

template <typename Why>
LoopCounts BatchLoop::EndWhere(Why why) {
  LoopCounts counts;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (auto e = why(**it)) {
      End(**it, e->reason, e->status);
      it = waiting_.erase(it);
      ++counts.dropped;
    } else {
      ++it;
    }
  }
  for (auto& live : running_) {
    if (live->view.phase == Phase::kFinished) continue;
    if (auto e = why(*live)) End(*live, e->reason, e->status);
  }
  counts.retired = Retire();
  return counts;
}

}  // namespace mamba::engine
