// Planning one engine step as a pure function: from the waiting and running requests, the free
// slots and the token budget to a StepPlan (which requests to admit into which slots, which
// tokens each request consumes into which slot, which states to fork after the step). No
// threads, no backend, no clock: the batching loop (engine/serving/batch_loop.h) applies it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/serving/phase.h"
#include "engine/types.h"

namespace mamba::engine {

struct SchedulerOptions {
  int64_t max_step_tokens = 512;  // decode tokens + prompt tokens of one step
  int64_t prefill_chunk = 0;      // most prompt tokens of one request per step (0 = budget)
  // When decodes alone fill the budget, the oldest prompt still gets this many tokens, so an
  // admitted request never waits for others to finish.
  int64_t min_prompt_chunk = 16;
};

// What the scheduler knows of a request; the batching loop keeps one per request up to date.
struct RequestView {
  RequestId id;
  Phase phase = Phase::kWaiting;
  int n = 1;                     // completions; each needs its own slot
  int64_t prompt_tokens = 0;     // prompt length (>= 1)
  int64_t computed = 0;          // prompt tokens already in completion 0's state
  std::vector<SlotId> slots;     // one per completion once admitted
  std::vector<bool> generating;  // per completion, while decoding: not yet finished
  // State cache (set by the loop before admission): the prompt tokens a stored snapshot covers
  // (restored into completion 0's slot at admission; == prompt_tokens only when the snapshot
  // also holds the prompt's last logits, so no token needs to run), and a branch point where a
  // snapshot should be taken (0: none): the prompt chunk that reaches it stops there.
  int64_t restore = 0;
  int64_t snapshot_at = 0;
};

struct StepPlan {
  // Requests admitted this step: the first admitted.size() waiting ones, in order, each with
  // its n slots. They are appended to the running list and may already work in this step. One
  // with a restore has it copied into its first slot before the step runs.
  std::vector<std::vector<SlotId>> admitted;

  // One backend chunk. `request` indexes the running list after admission (running requests
  // first, then the admitted ones in order).
  struct Chunk {
    int request = 0;
    int completion = 0;  // decode: which completion; prompt chunk: 0 (completion 0's slot)
    bool prompt = false;
    SlotId slot;
    int64_t begin = 0;  // prompt chunk: first prompt token; decode: unused (the last sample)
    int64_t count = 1;
    bool start = false;       // a new sequence: the slot's state is zeroed first
    bool want_logits = true;  // decode, or the chunk that ends the prompt
  };
  std::vector<Chunk> chunks;  // in backend order: decodes first, then prompt chunks

  // Requests (running-list indexes) whose whole prompt came from a snapshot with its logits:
  // no chunk runs for them; after the step they fork and sample from the stored logits.
  std::vector<int> cached_prompts;
  // After a chunk ends at a request's snapshot_at (short of its prompt's end): the loop saves the
  // slot's state, keyed by the prompt's first `length` tokens. (Prompt and completion ends are
  // saved by the loop without being planned.)
  struct Snapshot {
    int request = 0;
    SlotId slot;
    int64_t length = 0;
  };
  std::vector<Snapshot> snapshots;

  // After the step: states to fork (completion 0's slot, just past its prompt, into the others'
  // slots) for requests whose prompt ended in this step with n > 1.
  struct Copy {
    int request = 0;
    int completion = 0;
    SlotId from, to;
  };
  std::vector<Copy> copies;

  int64_t decode_tokens = 0;
  int64_t prompt_tokens = 0;
  bool empty() const { return chunks.empty() && cached_prompts.empty(); }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options) : options_(options) {}

  // How many of the waiting requests, from the front, Plan would admit with `free_slots` free:
  // first come first served while the free slots cover a request's n (the head of the queue
  // blocks the rest). The loop looks their prompts up in the state cache before planning.
  static size_t Admissible(std::span<const RequestView* const> waiting, size_t free_slots);

  // Admits Admissible(...) waiting requests; then every generating completion decodes one
  // token, and the rest of the budget goes to prompt chunks in running order, each starting
  // where its request's state stands (after a restore) and stopping at its snapshot point.
  // `free_slots` in the order they are handed out.
  StepPlan Plan(std::span<const RequestView* const> waiting,
                std::span<const RequestView* const> running,
                std::span<const SlotId> free_slots) const;

  const SchedulerOptions& options() const { return options_; }

 private:
  SchedulerOptions options_;
};

}  // namespace mamba::engine
