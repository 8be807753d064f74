#include "engine/serving/batch_loop.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/logging.h"
#include "spdlog/spdlog.h"

namespace mamba::engine {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

BatchLoop::BatchLoop(Backend& backend, std::shared_ptr<const Tokenizer> tokenizer,
                     const SchedulerOptions& options, EngineObserver* observer)
    : backend_(backend),
      tokenizer_(std::move(tokenizer)),
      scheduler_(options),
      observer_(observer),
      eos_(backend.config().eos_token_ids.begin(), backend.config().eos_token_ids.end()),
      pool_(backend.num_slots()),
      log_(NamedLogger("engine")) {}

void BatchLoop::Enqueue(std::unique_ptr<LiveRequest> live) {
  live->view.phase = Phase::kWaiting;
  live->view.n = live->req.n;
  live->view.prompt_tokens = static_cast<int64_t>(live->req.prompt.size());
  live->view.computed = 0;
  live->completions.resize(static_cast<size_t>(live->req.n));
  waiting_.push_back(std::move(live));
}

LoopCounts BatchLoop::EndAll(Finish reason, const absl::Status& status) {
  return EndWhere([&](const LiveRequest&) {
    return std::optional<Ending>(Ending{reason, status});
  });
}

void BatchLoop::Start(LiveRequest& live, std::vector<SlotId> slots) {
  live.queue_seconds = Seconds(Clock::now() - live.submitted);
  MoveTo(live.view.phase, Phase::kPrefilling);
  for (SlotId s : slots) pool_.Take(s);
  live.view.slots = std::move(slots);
  live.view.generating.assign(static_cast<size_t>(live.req.n), true);
  for (int i = 0; i < live.req.n; ++i) {
    Completion& c = live.completions[static_cast<size_t>(i)];
    SamplingParams p = live.req.params;
    // n > 1 with one seed must still give n different completions.
    if (p.seed && i > 0) p.seed = *p.seed + static_cast<uint64_t>(i);
    c.sampler = std::make_unique<Sampler>(p, eos_, live.req.prompt,
                                          live.fallback_seed + static_cast<uint64_t>(i));
    if (tokenizer_) {
      c.detok = std::make_unique<IncrementalDetokenizer>(*tokenizer_, live.req.skip_special_tokens);
    }
    c.stops = StopMatcher(live.req.stop_strings);
  }
}

void BatchLoop::Admit(const StepPlan& plan) {
  for (const std::vector<SlotId>& slots : plan.admitted) {
    std::unique_ptr<LiveRequest> live = std::move(waiting_.front());
    waiting_.pop_front();
    Start(*live, slots);
    running_.push_back(std::move(live));
  }
}

BatchLoop::StepResult BatchLoop::Step() {
  StepResult result;
  result.counts.retired = Retire();
  waiting_views_.clear();
  running_views_.clear();
  for (const auto& live : waiting_) waiting_views_.push_back(&live->view);
  for (const auto& live : running_) running_views_.push_back(&live->view);
  const std::vector<SlotId> free = pool_.Free();
  const StepPlan plan = scheduler_.Plan(waiting_views_, running_views_, free);
  Admit(plan);
  result.counts.admitted = static_cast<int64_t>(plan.admitted.size());
  if (plan.empty()) return result;
  result.ran = true;

  chunks_.clear();
  for (const StepPlan::Chunk& c : plan.chunks) {
    LiveRequest& live = *running_[static_cast<size_t>(c.request)];
    std::span<const TokenId> tokens =
        c.prompt ? std::span<const TokenId>(live.req.prompt)
                       .subspan(static_cast<size_t>(c.begin), static_cast<size_t>(c.count))
                 : std::span<const TokenId>(
                       &live.completions[static_cast<size_t>(c.completion)].last, 1);
    chunks_.push_back({c.slot, tokens, c.start, c.want_logits});
  }
  const Clock::time_point t0 = Clock::now();
  if (absl::Status s = backend_.Prefill(chunks_, &logits_); !s.ok()) {
    FailStep(s);
    result.counts.retired += Retire();
    return result;
  }
  int64_t row = 0;
  size_t next_copy = 0;
  for (const StepPlan::Chunk& c : plan.chunks) {
    LiveRequest& live = *running_[static_cast<size_t>(c.request)];
    if (!c.prompt) {
      SampleAndEmit(live, c.completion, logits_.Row(row++));
      continue;
    }
    live.view.computed += c.count;
    if (!c.want_logits) continue;
    // Prompt complete: fork the state into the other completions' slots, then each samples its
    // first token from the same logits.
    MoveTo(live.view.phase, Phase::kDecoding);
    const std::span<const float> shared = logits_.Row(row++);
    for (int i = 0; i < live.req.n; ++i) {
      if (i > 0) {
        const StepPlan::Copy& copy = plan.copies[next_copy++];
        if (absl::Status s = backend_.CopySlot(copy.from, copy.to); !s.ok()) {
          FinishCompletion(live, i, Finish::kError, s);
          continue;
        }
      }
      scratch_.assign(shared.begin(), shared.end());
      SampleAndEmit(live, i, scratch_);
    }
  }
  const double step_seconds = Seconds(Clock::now() - t0);
  if (observer_) {
    observer_->OnStep(
        {static_cast<int>(chunks_.size()), plan.prompt_tokens, plan.decode_tokens, step_seconds});
  }
  if (tally_.steps++ == 0) tally_.since = t0;
  tally_.decode_tokens += plan.decode_tokens;
  tally_.prompt_tokens += plan.prompt_tokens;
  tally_.busy_seconds += step_seconds;
  log_->debug("step: {} chunks, {} decode + {} prompt tokens, {:.2f} ms", chunks_.size(),
              plan.decode_tokens, plan.prompt_tokens, 1e3 * step_seconds);
  result.counts.retired += Retire();
  return result;
}

void BatchLoop::SampleAndEmit(LiveRequest& live, int index, std::span<float> logits) {
  Completion& c = live.completions[static_cast<size_t>(index)];
  if (c.finished) return;
  SampledToken tok = c.sampler->Sample(logits);
  const Clock::time_point now = Clock::now();
  if (c.sampler->num_generated() == 1) {
    c.ttft = Seconds(now - live.submitted);
  } else if (observer_) {
    observer_->OnTokenGap(Seconds(now - c.last_token));
  }
  c.last_token = now;
  c.last = tok.id;
  const Sampler::Finish f = c.sampler->CheckFinish(tok.id);
  TokenEvent ev{index, std::move(tok), {}};
  // The eos / stop token that ends a completion adds no text (as in OpenAI's and HF's output).
  if (f != Sampler::Finish::kStop && c.detok) ev.text = c.stops.Push(c.detok->Add(ev.token.id));
  live.sink->OnToken(ev);
  if (c.stops.matched() || f == Sampler::Finish::kStop) {
    FinishCompletion(live, index, Finish::kStop, absl::OkStatus());
  } else if (f == Sampler::Finish::kLength) {
    FinishCompletion(live, index, Finish::kLength, absl::OkStatus());
  }
}

void BatchLoop::FinishCompletion(LiveRequest& live, int index, Finish reason, absl::Status status) {
  Completion& c = live.completions[static_cast<size_t>(index)];
  if (c.finished) return;
  c.finished = true;
  if (!live.view.generating.empty()) live.view.generating[static_cast<size_t>(index)] = false;
  FinishEvent ev;
  ev.index = index;
  ev.reason = reason;
  ev.status = std::move(status);
  if (c.detok && !c.stops.matched()) {
    ev.text = c.stops.Push(c.detok->Flush());
    ev.text += c.stops.Flush();
  }
  ev.matched_stop = c.stops.matched_stop();
  if (reason == Finish::kStop && ev.matched_stop.empty()) ev.stop_token = c.last;
  ev.usage.prompt_tokens = static_cast<int64_t>(live.req.prompt.size());
  ev.usage.completion_tokens = c.sampler ? c.sampler->num_generated() : 0;
  ev.queue_seconds = live.queue_seconds;
  ev.ttft_seconds = c.ttft;
  ev.e2e_seconds = Seconds(Clock::now() - live.submitted);
  if (observer_) observer_->OnFinish(ev);
  live.sink->OnFinish(ev);
  bool all = true;
  for (const Completion& o : live.completions) all = all && o.finished;
  if (all) MoveTo(live.view.phase, Phase::kFinished);
}

void BatchLoop::End(LiveRequest& live, Finish reason, const absl::Status& status) {
  for (int i = 0; i < live.req.n; ++i) FinishCompletion(live, i, reason, status);
}

void BatchLoop::FailStep(const absl::Status& status) {
  log_->error("engine: step failed, ending its {} requests: {}", running_.size(),
              status.ToString());
  const absl::Status internal =
      absl::InternalError(absl::StrCat("engine failure: ", status.message()));
  for (auto& live : running_) End(*live, Finish::kError, internal);
}

int64_t BatchLoop::Retire() {
  int64_t retired = 0;
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->view.phase == Phase::kFinished) {
      ++retired;
      for (SlotId s : (*it)->view.slots) pool_.Release(s);
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  return retired;
}

}  // namespace mamba::engine
