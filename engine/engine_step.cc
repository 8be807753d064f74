// The scheduler thread's side of the Engine: one step = take new requests and cancellations,
// expire deadlines, then one step of the batching loop (plan, run, sample, stream, retire), and
// the admission-control counters the front-end side reads.
#include <optional>
#include <unordered_set>

#include "engine/engine.h"
#include "engine/serving/batch_loop.h"
#include "engine/serving/state_store.h"
#include "spdlog/spdlog.h"

namespace mamba::engine {

void Engine::TakeInbox() {
  std::deque<std::unique_ptr<LiveRequest>> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(inbox_);
    pending_cancels_.swap(cancels_);
    cancels_.clear();
  }
  for (auto& live : taken) loop_->Enqueue(std::move(live));
}

void Engine::ExpireAndCancel() {
  bool all = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::swap(all, cancel_all_);
  }
  std::unordered_set<uint64_t> cancelled;
  for (RequestId id : pending_cancels_) cancelled.insert(id.value);
  pending_cancels_.clear();
  const Clock::time_point now = Clock::now();
  const LoopCounts counts = loop_->EndWhere([&](const LiveRequest& live)
                                                -> std::optional<BatchLoop::Ending> {
    if (all)
      return BatchLoop::Ending{Finish::kCancelled,
                               absl::CancelledError("the server is shutting down")};
    if (cancelled.count(live.view.id.value)) {
      return BatchLoop::Ending{Finish::kCancelled, absl::CancelledError("cancelled by the client")};
    }
    if (live.req.deadline && now >= *live.req.deadline) {
      return BatchLoop::Ending{Finish::kDeadline,
                               absl::DeadlineExceededError("the request's deadline passed")};
    }
    return std::nullopt;
  });
  Account(0, counts.dropped, counts.retired);
}

bool Engine::Step() {
  TakeInbox();
  ExpireAndCancel();
  const BatchLoop::StepResult r = loop_->Step();  // admissions are counted by on_admit
  Account(0, 0, r.counts.retired);
  if (r.ran) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.steps;
  }
  return r.ran;
}

void Engine::Account(int64_t admitted, int64_t dropped, int64_t retired) {
  std::lock_guard<std::mutex> lock(mu_);
  queued_ -= admitted + dropped;
  outstanding_ -= dropped + retired;
  stats_.running = static_cast<int64_t>(loop_->num_running());
  stats_.slots_used = loop_->slots().num_used();
  const CacheCounts& c = loop_->cache_counts();
  stats_.cache_snapshot_bytes = c.snapshot_bytes;
  stats_.session_restores = c.session_restores;
  stats_.cache_tokens_reused = c.tokens_reused;  // sessions' restores included
  if (store_) {
    const StateStore::Stats st = store_->stats();
    stats_.cache_lookups = c.lookups;
    stats_.cache_hits = c.hits;
    stats_.cache_partial_hits = c.partial_hits;
    stats_.cache_misses = c.misses;
    stats_.cache_snapshots = c.snapshots;
    stats_.cache_entries = st.entries;
    stats_.cache_bytes = st.bytes;
    stats_.cache_evictions = st.evictions;
    stats_.cache_refused = st.refused;
    if (st.evicted_never_hit > 0 && !never_hit_logged_) {
      never_hit_logged_ = true;
      log_->info(
          "engine: the state cache is full and evicting snapshots that were never reused ({} "
          "so far); if requests share prefixes, a larger --state-cache-bytes would help",
          st.evicted_never_hit);
    }
  }
  if (outstanding_ == 0) idle_cv_.notify_all();
}

}  // namespace mamba::engine
