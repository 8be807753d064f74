#include "engine/serving/scheduler.h"

#include <algorithm>

namespace mamba::engine {

size_t Scheduler::Admissible(std::span<const RequestView* const> waiting, size_t free_slots) {
  size_t k = 0;
  for (const RequestView* w : waiting) {
    if (static_cast<size_t>(w->n) > free_slots) break;
    free_slots -= static_cast<size_t>(w->n);
    ++k;
  }
  return k;
}

StepPlan Scheduler::Plan(std::span<const RequestView* const> waiting,
                         std::span<const RequestView* const> running,
                         std::span<const SlotId> free_slots) const {
  StepPlan plan;
  // Admission, FCFS: slots are handed out in the pool's order.
  size_t next_slot = 0;
  std::vector<const RequestView*> all(running.begin(), running.end());
  const size_t admit = Admissible(waiting, free_slots.size());
  for (const RequestView* w : waiting.first(admit)) {
    std::vector<SlotId> slots(free_slots.begin() + static_cast<std::ptrdiff_t>(next_slot),
                              free_slots.begin() + static_cast<std::ptrdiff_t>(next_slot + w->n));
    next_slot += static_cast<size_t>(w->n);
    plan.admitted.push_back(std::move(slots));
    all.push_back(w);
  }
  auto slots_of = [&](size_t r) -> const std::vector<SlotId>& {
    return r < running.size() ? running[r]->slots : plan.admitted[r - running.size()];
  };
  auto phase_of = [&](size_t r) {
    return r < running.size() ? running[r]->phase : Phase::kPrefilling;  // just admitted
  };
  // Where a request's state stands: a just-admitted one at its restore point.
  auto computed_of = [&](size_t r) {
    return r < running.size() ? all[r]->computed : all[r]->restore;
  };
  auto add_copies = [&](size_t r) {
    for (int i = 1; i < all[r]->n; ++i) {
      plan.copies.push_back(
          {static_cast<int>(r), i, slots_of(r)[0], slots_of(r)[static_cast<size_t>(i)]});
    }
  };

  // Decodes: one token per generating completion, even past the budget.
  int64_t budget = options_.max_step_tokens;
  for (size_t r = 0; r < all.size(); ++r) {
    if (phase_of(r) != Phase::kDecoding) continue;
    const RequestView& v = *all[r];
    for (int i = 0; i < v.n; ++i) {
      if (!v.generating[static_cast<size_t>(i)]) continue;
      StepPlan::Chunk c;
      c.request = static_cast<int>(r);
      c.completion = i;
      c.slot = slots_of(r)[static_cast<size_t>(i)];
      plan.chunks.push_back(c);
      --budget;
      ++plan.decode_tokens;
    }
  }
  // Prompt chunks with the rest of the budget, oldest first.
  for (size_t r = 0; r < all.size(); ++r) {
    if (phase_of(r) != Phase::kPrefilling) continue;
    const RequestView& v = *all[r];
    const int64_t computed = computed_of(r);
    if (computed == v.prompt_tokens) {  // restored with its logits: nothing to run
      plan.cached_prompts.push_back(static_cast<int>(r));
      add_copies(r);
      continue;
    }
    if (budget <= 0 && plan.prompt_tokens > 0) continue;
    const int64_t left = v.prompt_tokens - computed;
    int64_t take = std::min(left, budget > 0 ? budget : options_.min_prompt_chunk);
    if (options_.prefill_chunk > 0) take = std::min(take, options_.prefill_chunk);
    const bool snapshot = v.snapshot_at > computed && v.snapshot_at < v.prompt_tokens &&
                          computed + take >= v.snapshot_at;
    if (snapshot) take = v.snapshot_at - computed;
    StepPlan::Chunk c;
    c.request = static_cast<int>(r);
    c.prompt = true;
    c.slot = slots_of(r)[0];
    c.begin = computed;
    c.count = take;
    c.start = computed == 0;
    c.want_logits = take == left;
    plan.chunks.push_back(c);
    budget -= take;
    plan.prompt_tokens += take;
    if (snapshot) plan.snapshots.push_back({c.request, c.slot, v.snapshot_at});
    if (c.want_logits) add_copies(r);
  }
  return plan;
}

}  // namespace mamba::engine
