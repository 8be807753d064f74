// The scheduler thread's side of the Engine: one step = take new requests and cancellations,
// expire deadlines, then one step of the batching loop (plan, run, sample, stream, retire), and
// the admission-control counters the front-end side reads.
#include <optional>
#include <unordered_set>

#include "engine/engine.h"
#include "engine/serving/batch_loop.h"

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
  const BatchLoop::StepResult r = loop_->Step();
  Account(r.counts.admitted, 0, r.counts.retired);
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
  if (outstanding_ == 0) idle_cv_.notify_all();
}

}  // namespace mamba::engine
