// The pool of state-slot ids of a backend: which slots are free and which are held. The state
// itself lives in the backend; the pool only owns the ids.
#pragma once

#include <span>
#include <vector>

#include "engine/types.h"

namespace mamba::engine {

class SlotPool {
 public:
  explicit SlotPool(int num_slots);

  int total() const { return total_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return total_ - num_free(); }
  // The free ids, in the order Take hands them out (first = next).
  std::vector<SlotId> Free() const { return {free_.rbegin(), free_.rend()}; }

  // Takes `slot`, which must be free (a broken invariant otherwise: aborts).
  void Take(SlotId slot);
  // Returns a held slot to the pool (a broken invariant if it is not held: aborts).
  void Release(SlotId slot);
  bool IsFree(SlotId slot) const;

 private:
  int total_;
  std::vector<SlotId> free_;  // a stack: the back is handed out next
  std::vector<bool> held_;
};

}  // namespace mamba::engine
