#include "engine/serving/slot_pool.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iterator>

namespace mamba::engine {
namespace {

[[noreturn]] void Broken(const char* what, SlotId slot) {
  std::fprintf(stderr, "engine: slot pool: %s (slot %d)\n", what, slot.value);
  std::abort();
}

}  // namespace

SlotPool::SlotPool(int num_slots)
    : total_(num_slots), held_(static_cast<size_t>(std::max(num_slots, 0)), false) {
  // Slot 0 is handed out first.
  for (int s = num_slots - 1; s >= 0; --s) free_.push_back(SlotId(s));
}

bool SlotPool::IsFree(SlotId slot) const {
  return slot.value >= 0 && slot.value < total_ && !held_[static_cast<size_t>(slot.value)];
}

void SlotPool::Take(SlotId slot) {
  if (!IsFree(slot)) Broken("taking a slot that is not free", slot);
  held_[static_cast<size_t>(slot.value)] = true;
  // The slot handed out is almost always the last one: search from the back.
  free_.erase(std::next(std::find(free_.rbegin(), free_.rend(), slot)).base());
}

void SlotPool::Release(SlotId slot) {
  if (slot.value < 0 || slot.value >= total_ || !held_[static_cast<size_t>(slot.value)]) {
    Broken("releasing a slot that is not held", slot);
  }
  held_[static_cast<size_t>(slot.value)] = false;
  free_.push_back(slot);
}

}  // namespace mamba::engine
