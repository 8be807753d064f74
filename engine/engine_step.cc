// The scheduler thread's side of the Engine: one step = take new requests and cancellations,
// expire deadlines, admit (FCFS, while slots are free), plan decode tokens plus prompt chunks
// under the token budget, run the backend once, sample, stream, retire.
#include <algorithm>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "engine/logging.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "spdlog/spdlog.h"

namespace mamba::engine {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

void Engine::TakeInbox() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& live : inbox_) {
    live->completions.resize(static_cast<size_t>(live->req.n));
    for (Completion& c : live->completions) c.slot = SlotId(-1);
    waiting_.push_back(std::move(live));
  }
  inbox_.clear();
  pending_cancels_.swap(cancels_);
  cancels_.clear();
}

void Engine::ExpireAndCancel() {
  bool all = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::swap(all, cancel_all_);
  }
  const std::unordered_set<uint64_t> cancelled = [&] {
    std::unordered_set<uint64_t> s;
    for (RequestId id : pending_cancels_) s.insert(id.value);
    return s;
  }();
  pending_cancels_.clear();
  const Clock::time_point now = Clock::now();
  auto end = [&](Live& live) {
    Finish reason;
    absl::Status status;
    if (all) {
      reason = Finish::kCancelled;
      status = absl::CancelledError("the server is shutting down");
    } else if (cancelled.count(live.id.value)) {
      reason = Finish::kCancelled;
      status = absl::CancelledError("cancelled by the client");
    } else if (live.req.deadline && now >= *live.req.deadline) {
      reason = Finish::kDeadline;
      status = absl::DeadlineExceededError("the request's deadline passed");
    } else {
      return false;
    }
    for (int i = 0; i < live.req.n; ++i) FinishCompletion(live, i, reason, status);
    return true;
  };
  int64_t dropped = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (end(**it)) {
      it = waiting_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
  for (auto& live : running_) end(*live);
  if (dropped) {
    std::lock_guard<std::mutex> lock(mu_);
    queued_ -= dropped;
    outstanding_ -= dropped;
  }
}

void Engine::Admit() {
  int64_t admitted = 0;
  while (!waiting_.empty() && static_cast<int>(free_slots_.size()) >= waiting_.front()->req.n) {
    std::unique_ptr<Live> live = std::move(waiting_.front());
    waiting_.pop_front();
    live->queue_seconds = Seconds(Clock::now() - live->submitted);
    const ModelConfig& cfg = backend_->config();
    std::vector<TokenId> eos(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end());
    for (int i = 0; i < live->req.n; ++i) {
      Completion& c = live->completions[static_cast<size_t>(i)];
      c.slot = free_slots_.back();
      free_slots_.pop_back();
      SamplingParams p = live->req.params;
      // n > 1 with one seed must still give n different completions.
      if (p.seed && i > 0) p.seed = *p.seed + static_cast<uint64_t>(i);
      c.sampler =
          std::make_unique<Sampler>(p, eos, live->req.prompt, live->id.value * 1000003u + i);
      if (tokenizer_) {
        c.detok =
            std::make_unique<IncrementalDetokenizer>(*tokenizer_, live->req.skip_special_tokens);
      }
      c.stops = StopMatcher(live->req.stop_strings);
    }
    running_.push_back(std::move(live));
    ++admitted;
  }
  if (admitted) {
    std::lock_guard<std::mutex> lock(mu_);
    queued_ -= admitted;
    stats_.slots_used = stats_.slots_total - static_cast<int64_t>(free_slots_.size());
  }
}

bool Engine::Step() {
  TakeInbox();
  ExpireAndCancel();
  Retire();
  Admit();
  if (running_.empty()) {
    Retire();
    return false;
  }
  // Plan: every running completion decodes one token; the rest of the budget goes to prompt
  // chunks, first come first served. A long prompt never holds back other requests' tokens.
  struct Planned {
    Live* live;
    int index;  // completion index; -1 for a prompt chunk
  };
  std::vector<ChunkInput> chunks;
  std::vector<Planned> plan;
  int64_t budget = options_.max_step_tokens;
  int64_t decode_tokens = 0, prefill_tokens = 0;
  for (auto& live : running_) {
    if (live->InPrefill()) continue;
    for (int i = 0; i < live->req.n; ++i) {
      Completion& c = live->completions[static_cast<size_t>(i)];
      if (c.finished) continue;
      chunks.push_back({c.slot, std::span<const TokenId>(&c.last, 1), false, true});
      plan.push_back({live.get(), i});
      --budget;
      ++decode_tokens;
    }
  }
  // When the decodes alone use the whole budget (more running completions than
  // max_step_tokens), the oldest prompt still gets a small chunk: admitted requests never wait
  // for others to finish.
  constexpr int64_t kMinPromptChunk = 16;
  for (auto& live : running_) {
    if (!live->InPrefill() || live->Done()) continue;
    if (budget <= 0 && prefill_tokens > 0) break;
    const int64_t left = static_cast<int64_t>(live->req.prompt.size()) - live->consumed;
    int64_t take = std::min(left, budget > 0 ? budget : kMinPromptChunk);
    if (options_.prefill_chunk > 0) take = std::min(take, options_.prefill_chunk);
    chunks.push_back({live->completions[0].slot,
                      std::span<const TokenId>(live->req.prompt)
                          .subspan(static_cast<size_t>(live->consumed), static_cast<size_t>(take)),
                      live->consumed == 0, take == left});
    plan.push_back({live.get(), -1});
    budget -= take;
    prefill_tokens += take;
  }
  const Clock::time_point t0 = Clock::now();
  if (absl::Status s = backend_->Prefill(chunks, &logits_); !s.ok()) {
    FailStep(s);
    return true;
  }
  int64_t row = 0;
  for (size_t k = 0; k < chunks.size(); ++k) {
    Live& live = *plan[k].live;
    if (plan[k].index >= 0) {
      SampleAndEmit(live, plan[k].index, logits_.Row(row++));
      continue;
    }
    live.consumed += static_cast<int64_t>(chunks[k].tokens.size());
    if (!chunks[k].want_logits) continue;
    // Prompt complete: fork the state into the other completions' slots, then each samples
    // its first token from the same logits.
    const std::span<const float> shared = logits_.Row(row++);
    for (int i = 0; i < live.req.n; ++i) {
      Completion& c = live.completions[static_cast<size_t>(i)];
      if (i > 0) {
        if (absl::Status s = backend_->CopySlot(live.completions[0].slot, c.slot); !s.ok()) {
          FinishCompletion(live, i, Finish::kError, s);
          continue;
        }
      }
      scratch_.assign(shared.begin(), shared.end());
      if (!c.finished) SampleAndEmit(live, i, scratch_);
    }
  }
  const double step_seconds = Seconds(Clock::now() - t0);
  if (observer_) {
    observer_->OnStep(
        {static_cast<int>(chunks.size()), prefill_tokens, decode_tokens, step_seconds});
  }
  if (tally_.steps++ == 0) tally_.since = t0;
  tally_.decode_tokens += decode_tokens;
  tally_.prompt_tokens += prefill_tokens;
  tally_.busy_seconds += step_seconds;
  log_->debug("step: {} chunks, {} decode + {} prompt tokens, {:.2f} ms", chunks.size(),
              decode_tokens, prefill_tokens, 1e3 * step_seconds);
  Retire();
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.steps;
  return true;
}

void Engine::SampleAndEmit(Live& live, int index, std::span<float> logits) {
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

void Engine::FinishCompletion(Live& live, int index, Finish reason, absl::Status status) {
  Completion& c = live.completions[static_cast<size_t>(index)];
  if (c.finished) return;
  c.finished = true;
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
}

void Engine::FailStep(const absl::Status& status) {
  log_->error("engine: step failed, ending its {} requests: {}", running_.size(),
              status.ToString());
  const absl::Status internal =
      absl::InternalError(absl::StrCat("engine failure: ", status.message()));
  for (auto& live : running_) {
    for (int i = 0; i < live->req.n; ++i) FinishCompletion(*live, i, Finish::kError, internal);
  }
  Retire();
}

void Engine::Retire() {
  int64_t retired = 0;
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->Done()) {
      ++retired;
      for (const Completion& c : (*it)->completions) {
        if (c.slot.value >= 0) free_slots_.push_back(c.slot);
      }
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  outstanding_ -= retired;
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.slots_used = stats_.slots_total - static_cast<int64_t>(free_slots_.size());
  if (outstanding_ == 0) idle_cv_.notify_all();
}

}  // namespace mamba::engine
