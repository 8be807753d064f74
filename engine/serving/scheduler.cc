#include "engine/serving/scheduler.h"

#include <algorithm>

namespace mamba::engine {

StepPlan Scheduler::Plan(std::span<const RequestView* const> waiting,
                         std::span<const RequestView* const> running,
                         std::span<const SlotId> free_slots) const {
  StepPlan plan;
  // Admission, FCFS: slots are handed out in the pool's order.
  size_t next_slot = 0;
  std::vector<const RequestView*> all(running.begin(), running.end());
  std::vector<std::vector<SlotId>> admitted_slots;
  for (const RequestView* w : waiting) {
    if (static_cast<size_t>(w->n) > free_slots.size() - next_slot) break;
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
    if (budget <= 0 && plan.prompt_tokens > 0) break;
    const RequestView& v = *all[r];
    const int64_t left = v.prompt_tokens - v.computed;
    int64_t take = std::min(left, budget > 0 ? budget : options_.min_prompt_chunk);
    if (options_.prefill_chunk > 0) take = std::min(take, options_.prefill_chunk);
    StepPlan::Chunk c;
    c.request = static_cast<int>(r);
    c.prompt = true;
    c.slot = slots_of(r)[0];
    c.begin = v.computed;
    c.count = take;
    c.start = v.computed == 0;
    c.want_logits = take == left;
    plan.chunks.push_back(c);
    budget -= take;
    plan.prompt_tokens += take;
    if (c.want_logits) {
      for (int i = 1; i < v.n; ++i) {
        plan.copies.push_back({c.request, i, c.slot, slots_of(r)[static_cast<size_t>(i)]});
      }
    }
  }
  return plan;
}

}  // namespace mamba::engine
