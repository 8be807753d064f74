#include "engine/serving/batch_loop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/logging.h"
#include "engine/lora/adapter_registry.h"
#include "engine/status_macros.h"
#include "spdlog/spdlog.h"

namespace mamba::engine {
namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

BatchLoop::BatchLoop(Backend& backend, std::shared_ptr<const Tokenizer> tokenizer,
                     const SchedulerOptions& options, EngineObserver* observer, StateCache cache)
    : backend_(backend),
      tokenizer_(std::move(tokenizer)),
      scheduler_(options),
      observer_(observer),
      eos_(backend.config().eos_token_ids.begin(), backend.config().eos_token_ids.end()),
      pool_(backend.num_slots()),
      log_(NamedLogger("engine")),
      cache_(cache),
      started_(Clock::now()) {}

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

StateKey BatchLoop::KeyOf(const LiveRequest& live) const {
  return StateKey{cache_.key.model, live.req.adapter ? live.req.adapter->key : 0};
}

// State cache: the longest cached prefix of a waiting request's prompt (restored at admission;
// a session turn's own state unless the store holds more) and the branch point where a snapshot
// would let siblings hit.
void BatchLoop::LookUp(LiveRequest& live, double now) {
  const std::span<const TokenId> prompt(live.req.prompt);
  const auto L = static_cast<int64_t>(prompt.size());
  StateStore::Match m;
  // Prompt log-probs need every reported position computed: no restore from the store (a
  // session turn still resumes from its session and reports the new tokens only).
  if (cache_.store && live.req.prompt_logprobs < 0) {
    const StateKey key = KeyOf(live);
    m = cache_.store->Lookup(key, prompt, L, now);
    // A snapshot of the whole prompt serves only with its logits; else one token must run.
    if (m.length == L && m.snapshot->logits.empty()) {
      const int64_t branch = m.branch;
      m = cache_.store->Lookup(key, prompt, L - 1, now);
      m.branch = branch;
    }
  }
  const bool from_session = live.session_state && live.session_state_tokens >= m.length;
  live.restore_from = from_session ? live.session_state : m.snapshot;
  live.view.restore = from_session ? live.session_state_tokens : m.snapshot ? m.length : 0;
  live.view.snapshot_at = m.branch > live.view.restore && m.branch < L ? m.branch : 0;
}

namespace {

int64_t CommonPrefix(std::span<const TokenId> a, std::span<const TokenId> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int64_t>(i);
}

}  // namespace

// Whether `live` should wait for a sibling being prefilled now (running, or admitted earlier in
// this step) that shares a longer prefix with it than the store holds: the sibling then stops
// at the branch point and snapshots it, and `live` is admitted on that snapshot instead of
// computing the same prefix at the same time. Only a sibling under the same adapter (or both
// under the base model) computes a state `live` can use.
bool BatchLoop::WaitForSibling(LiveRequest& live) {
  const std::span<const TokenId> prompt(live.req.prompt);
  const auto last = static_cast<int64_t>(prompt.size()) - 1;  // at least one token must run
  const StateKey key = KeyOf(live);
  auto consider = [&](LiveRequest& sibling, int64_t sibling_at) {
    if (KeyOf(sibling) != key) return false;
    const int64_t c = std::min(CommonPrefix(prompt, sibling.req.prompt), last);
    if (c < live.view.restore + kMinSharedPrefix || sibling_at >= c) return false;
    RequestView& v = sibling.view;
    // The sibling's prompt end is snapshotted anyway; else it stops at the earliest point asked.
    if (c < v.prompt_tokens && !(v.snapshot_at > sibling_at && v.snapshot_at < c)) {
      v.snapshot_at = c;
    }
    return true;
  };
  for (const auto& r : running_) {
    if (r->view.phase == Phase::kPrefilling && consider(*r, r->view.computed)) return true;
  }
  for (size_t k : admit_index_) {
    if (consider(*waiting_[k], waiting_[k]->view.restore)) return true;
  }
  return false;
}

// Picks the waiting requests this step may admit, first come first served while the free slots
// cover a request's n (the head of the queue blocks the rest), skipping those that wait for a
// sibling's prefix; each has been looked up in the state cache.
void BatchLoop::SelectAdmissible(size_t free_slots) {
  const double now = Seconds(Clock::now() - started_);
  int waiting_on_siblings = 0;
  for (size_t k = 0; k < waiting_.size(); ++k) {
    LiveRequest& live = *waiting_[k];
    if (static_cast<size_t>(live.view.n) > free_slots) break;
    LookUp(live, now);
    if (cache_.store && live.req.prompt_logprobs < 0 && WaitForSibling(live)) {
      if (++waiting_on_siblings == kMaxWaitingScan) break;
      continue;
    }
    waiting_views_.push_back(&live.view);
    admit_index_.push_back(k);
    free_slots -= static_cast<size_t>(live.view.n);
  }
}

absl::Status BatchLoop::Admit(const StepPlan& plan) {
  absl::Status status;
  for (size_t i = 0; i < plan.admitted.size(); ++i) {
    std::unique_ptr<LiveRequest> live = std::move(waiting_[admit_index_[i]]);
    Start(*live, plan.admitted[i]);
    LiveRequest& l = *live;
    running_.push_back(std::move(live));
    if (cache_.store) {
      ++cache_counts_.lookups;
      if (l.view.restore == l.view.prompt_tokens) {
        ++cache_counts_.hits;
      } else if (l.view.restore > 0) {
        ++cache_counts_.partial_hits;
      } else {
        ++cache_counts_.misses;
      }
    }
    l.prompt_event.first = std::max<int64_t>(1, l.view.restore);
    if (l.req.prompt_logprobs >= 0 && l.restore_from && l.view.restore > 0 &&
        l.view.restore < l.view.prompt_tokens) {
      // The restored state's logits, if kept, give the first token after it; else that token
      // is reported from the next one on (its predecessor is not fed again).
      if (l.restore_from->logits.empty()) {
        l.prompt_event.first = l.view.restore + 1;
      } else {
        l.prompt_event.tokens.push_back(LogProbOf(l.restore_from->logits,
                                                  l.req.prompt[static_cast<size_t>(l.view.restore)],
                                                  l.req.prompt_logprobs));
      }
    }
    if (!l.restore_from || !status.ok()) continue;
    const Clock::time_point t0 = Clock::now();
    status = backend_.RestoreSlot(l.view.slots[0], l.restore_from->state);
    if (!status.ok()) continue;
    const double seconds = Seconds(Clock::now() - t0);
    cache_counts_.restore_seconds += seconds;
    if (observer_) observer_->OnStateCopy(EngineObserver::StateCopy::kRestore, seconds);
    if (l.restore_from == l.session_state) ++cache_counts_.session_restores;
    l.session_state.reset();
    l.view.computed = l.view.restore;
    cache_counts_.tokens_reused += l.view.restore;
    // Only a whole-prompt hit still needs the snapshot (its logits, later in this step).
    if (l.view.restore < l.view.prompt_tokens) l.restore_from.reset();
  }
  // The admitted ones leave the queue; the rest keep their order.
  std::erase_if(waiting_, [](const std::unique_ptr<LiveRequest>& w) { return w == nullptr; });
  return status;
}

// Stores the state of `slot` as the snapshot of prefix + suffix (with `logits` when not empty),
// unless one is there already. A failure costs only the snapshot.
void BatchLoop::Save(const StateKey& key, SlotId slot, std::span<const TokenId> prefix,
                     std::span<const TokenId> suffix, std::span<const float> logits) {
  std::vector<TokenId> tokens(prefix.begin(), prefix.end());
  tokens.insert(tokens.end(), suffix.begin(), suffix.end());
  if (tokens.empty() || cache_.store->Contains(key, tokens)) return;
  std::shared_ptr<StateSnapshot> snapshot = TakeSnapshot(slot);
  if (!snapshot) return;
  snapshot->logits.assign(logits.begin(), logits.end());
  Insert(key, std::move(tokens), std::move(snapshot));
}

std::shared_ptr<StateSnapshot> BatchLoop::TakeSnapshot(SlotId slot) {
  const Clock::time_point t0 = Clock::now();
  auto snapshot = std::make_shared<StateSnapshot>();
  if (absl::Status s = backend_.SaveSlot(slot, &snapshot->state); !s.ok()) {
    ++cache_counts_.snapshot_failures;
    log_->warn("engine: state snapshot of slot {} failed: {}", slot.value, s.ToString());
    return nullptr;
  }
  const double seconds = Seconds(Clock::now() - t0);
  cache_counts_.snapshot_seconds += seconds;
  cache_counts_.snapshot_bytes += static_cast<int64_t>(snapshot->state.size()) * 4;
  if (observer_) observer_->OnStateCopy(EngineObserver::StateCopy::kSnapshot, seconds);
  return snapshot;
}

void BatchLoop::Insert(const StateKey& key, std::vector<TokenId> tokens,
                       std::shared_ptr<StateSnapshot> snapshot) {
  const double now = Seconds(Clock::now() - started_);
  if (cache_.store->Insert(key, tokens, std::move(snapshot), now)) {
    ++cache_counts_.snapshots;
  }
}

// A session turn that ended well: the session now holds prompt + completion and the state
// after all of it but the last token (not fed yet; the next turn feeds it first).
absl::Status BatchLoop::CommitSession(LiveRequest& live, const Completion& c, FinishEvent* ev) {
  std::shared_ptr<StateSnapshot> snapshot = TakeSnapshot(live.view.slots[0]);
  if (!snapshot) return absl::InternalError("the session's state could not be saved");
  SessionContent content;
  content.tokens = live.req.prompt;
  content.tokens.insert(content.tokens.end(), c.generated.begin(), c.generated.end());
  // Nothing generated (scoring): the state covers every token, with the prompt's last logits.
  content.state_tokens =
      static_cast<int64_t>(content.tokens.size()) - (c.generated.empty() ? 0 : 1);
  if (c.generated.empty()) snapshot->logits = std::move(live.end_logits);
  content.adapter = live.req.adapter ? live.req.adapter->host->fingerprint() : std::string();
  // The same state is the end-of-completion snapshot the store would take.
  const StateKey key = KeyOf(live);
  if (cache_.store && c.generated.size() >= 2 &&
      !cache_.store->Contains(
          key, std::span<const TokenId>(content.tokens).first(content.tokens.size() - 1))) {
    Insert(key, std::vector<TokenId>(content.tokens.begin(), content.tokens.end() - 1), snapshot);
  }
  content.state = std::move(snapshot);
  ev->session_tokens = live.session->Commit(std::move(content));
  return absl::OkStatus();
}

// A prompt is in completion 0's state and `logits` are its last token's: fork the state into
// the other completions' slots, then each samples its first token from the same logits.
void BatchLoop::Fork(LiveRequest& live, const StepPlan& plan, int request,
                     std::span<const float> logits) {
  MoveTo(live.view.phase, Phase::kDecoding);
  if (live.req.prompt_logprobs >= 0) live.sink->OnPrompt(live.prompt_event);
  live.prompt_event.tokens = {};
  if (live.req.params.max_new_tokens == 0) {  // scoring only
    if (live.session) live.end_logits.assign(logits.begin(), logits.end());
    for (int i = 0; i < live.req.n; ++i) {
      FinishCompletion(live, i, Finish::kLength, absl::OkStatus());
    }
    return;
  }
  for (const StepPlan::Copy& copy : plan.copies) {
    if (copy.request != request) continue;
    if (absl::Status s = backend_.CopySlot(copy.from, copy.to); !s.ok()) {
      FinishCompletion(live, copy.completion, Finish::kError, s);
    }
  }
  for (int i = 0; i < live.req.n; ++i) {
    scratch_.assign(logits.begin(), logits.end());
    SampleAndEmit(live, i, scratch_);
  }
}

// Rows first_row.. of logits_ are an all-logits chunk's, prompt positions begin..begin+count-1:
// the row of position p gives the log-prob of the prompt token at p + 1.
void BatchLoop::ScorePrompt(LiveRequest& live, int64_t begin, int64_t count, int64_t first_row) {
  const std::span<const TokenId> prompt(live.req.prompt);
  for (int64_t i = 0; i < count; ++i) {
    const auto next = static_cast<size_t>(begin + i + 1);
    if (next >= prompt.size()) break;
    live.prompt_event.tokens.push_back(
        LogProbOf(logits_.Row(first_row + i), prompt[next], live.req.prompt_logprobs));
  }
}

BatchLoop::StepResult BatchLoop::Step() {
  StepResult result;
  result.counts.retired = Retire();
  waiting_views_.clear();
  admit_index_.clear();
  running_views_.clear();
  for (const auto& live : running_) running_views_.push_back(&live->view);
  const std::vector<SlotId> free = pool_.Free();
  SelectAdmissible(free.size());
  const StepPlan plan = scheduler_.Plan(waiting_views_, running_views_, free);
  const absl::Status admitted = Admit(plan);
  result.counts.admitted = static_cast<int64_t>(plan.admitted.size());
  if (on_admit_ && result.counts.admitted > 0) on_admit_(result.counts.admitted);
  if (!admitted.ok()) {
    FailStep(admitted);
    result.counts.retired += Retire();
    return result;
  }
  if (plan.empty()) return result;
  result.ran = true;

  const Clock::time_point t0 = Clock::now();
  if (absl::Status s = RunStep(plan); !s.ok()) {
    FailStep(s);
    result.counts.retired += Retire();
    return result;
  }
  int64_t row = 0, host_row = 0;
  for (size_t k = 0; k < plan.chunks.size(); ++k) {
    const StepPlan::Chunk& c = plan.chunks[k];
    LiveRequest& live = *running_[static_cast<size_t>(c.request)];
    if (!c.prompt) {
      const int32_t d = decode_row_[k];
      if (d < 0) {
        SampleAndEmit(live, c.completion, logits_.Row(row++));
      } else if (decode_rules_[static_cast<size_t>(d)]) {
        SampledToken& tok = drawn_[static_cast<size_t>(d)];
        live.completions[static_cast<size_t>(c.completion)].sampler->Accept(tok.id);
        Emit(live, c.completion, std::move(tok));
      } else {
        SampleAndEmit(live, c.completion, decode_logits_.Row(host_row++));
      }
      continue;
    }
    live.view.computed += c.count;
    const bool all = live.req.prompt_logprobs >= 0;
    if (all) {
      ScorePrompt(live, c.begin, c.count, row);
      row += c.count;
    }
    if (!c.want_logits) continue;
    const std::span<const float> logits = all ? logits_.Row(row - 1) : logits_.Row(row++);
    if (cache_.store) Save(KeyOf(live), c.slot, live.req.prompt, {}, logits);
    Fork(live, plan, c.request, logits);
  }
  // Branch points the step's prompt chunks stopped at (no other work touched those slots).
  for (const StepPlan::Snapshot& sn : plan.snapshots) {
    const LiveRequest& live = *running_[static_cast<size_t>(sn.request)];
    const std::span<const TokenId> prompt(live.req.prompt);
    Save(KeyOf(live), sn.slot, prompt.first(static_cast<size_t>(sn.length)), {}, {});
  }
  for (int r : plan.cached_prompts) {
    LiveRequest& live = *running_[static_cast<size_t>(r)];
    Fork(live, plan, r, live.restore_from->logits);
    live.restore_from.reset();  // an evicted snapshot's memory goes back now
  }
  const double step_seconds = Seconds(Clock::now() - t0);
  if (observer_) {
    observer_->OnStep({static_cast<int>(plan.chunks.size()), plan.prompt_tokens, plan.decode_tokens,
                       step_seconds});
  }
  if (tally_.steps++ == 0) tally_.since = t0;
  tally_.decode_tokens += plan.decode_tokens;
  tally_.prompt_tokens += plan.prompt_tokens;
  tally_.busy_seconds += step_seconds;
  log_->debug("step: {} chunks, {} decode + {} prompt tokens, {:.2f} ms", plan.chunks.size(),
              plan.decode_tokens, plan.prompt_tokens, 1e3 * step_seconds);
  result.counts.retired += Retire();
  return result;
}

absl::Status BatchLoop::RunStep(const StepPlan& plan) {
  const bool split = decode_path_ == DecodePath::kDecode ||
                     (decode_path_ == DecodePath::kAuto && backend_.fast_decode());
  chunks_.clear();
  decode_slots_.clear();
  decode_tokens_.clear();
  decode_rules_.clear();
  decode_row_.assign(plan.chunks.size(), -1);
  for (size_t k = 0; k < plan.chunks.size(); ++k) {
    const StepPlan::Chunk& c = plan.chunks[k];
    LiveRequest& live = *running_[static_cast<size_t>(c.request)];
    // Prompt chunks and decode tokens alike run under the request's adapter (its forks' slots
    // hold states computed under it too); the decode path has none, so those stay chunks.
    if (!c.prompt && split && !live.req.adapter) {
      Completion& comp = live.completions[static_cast<size_t>(c.completion)];
      decode_row_[k] = static_cast<int32_t>(decode_slots_.size());
      decode_slots_.push_back(c.slot);
      decode_tokens_.push_back(comp.last);
      decode_rules_.push_back(comp.finished ? std::nullopt : comp.sampler->Offload());
      continue;
    }
    std::span<const TokenId> tokens =
        c.prompt ? std::span<const TokenId>(live.req.prompt)
                       .subspan(static_cast<size_t>(c.begin), static_cast<size_t>(c.count))
                 : std::span<const TokenId>(
                       &live.completions[static_cast<size_t>(c.completion)].last, 1);
    chunks_.push_back({c.slot, tokens, c.start, c.want_logits,
                       c.prompt && live.req.prompt_logprobs >= 0,
                       live.req.adapter ? live.req.adapter->weights.get() : nullptr});
  }
  if (!decode_slots_.empty()) {
    MAMBA_RETURN_IF_ERROR(backend_.DecodeAndDraw(decode_slots_, decode_tokens_, decode_rules_,
                                                 &drawn_, &decode_logits_));
  }
  if (!chunks_.empty()) MAMBA_RETURN_IF_ERROR(backend_.Prefill(chunks_, &logits_));
  return absl::OkStatus();
}

void BatchLoop::SampleAndEmit(LiveRequest& live, int index, std::span<float> logits) {
  Completion& c = live.completions[static_cast<size_t>(index)];
  if (c.finished) return;
  Emit(live, index, c.sampler->Sample(logits));
}

void BatchLoop::Emit(LiveRequest& live, int index, SampledToken tok) {
  Completion& c = live.completions[static_cast<size_t>(index)];
  const Clock::time_point now = Clock::now();
  if (c.sampler->num_generated() == 1) {
    c.ttft = Seconds(now - live.submitted);
  } else if (observer_) {
    observer_->OnTokenGap(Seconds(now - c.last_token));
  }
  c.last_token = now;
  c.last = tok.id;
  if (cache_.store || live.session) c.generated.push_back(tok.id);
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
  const bool ok = reason == Finish::kStop || reason == Finish::kLength;
  if (live.session) {
    // Committed (or released unchanged) before the client hears of the end, so that its next
    // turn finds the session free.
    if (ok) {
      if (absl::Status s = CommitSession(live, c, &ev); !s.ok()) {
        reason = Finish::kError;
        status = s;
      }
    }
    if (ev.session_tokens == 0)
      ev.session_tokens = static_cast<int64_t>(live.session->content().tokens.size());
    live.session.reset();
  } else if (cache_.store && ok && c.generated.size() >= 2) {
    // The state after the last token fed (every generated token but the last): where the next
    // turn of a conversation (prompt + completion + new text) resumes.
    Save(KeyOf(live), live.view.slots[static_cast<size_t>(index)], live.req.prompt,
         std::span<const TokenId>(c.generated).first(c.generated.size() - 1), {});
  }
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
  ev.usage.cached_tokens = live.view.phase == Phase::kWaiting ? 0 : live.view.restore;
  ev.queue_seconds = live.queue_seconds;
  ev.ttft_seconds = c.ttft;
  ev.e2e_seconds = Seconds(Clock::now() - live.submitted);
  if (live.req.adapter) ev.adapter = live.req.adapter->name;
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
