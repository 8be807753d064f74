// Scheduler::Plan as a pure function, table-driven: FCFS admission, the budget split between
// decodes and prompt chunks, prompt progress under a full decode budget, n > 1 (slots, forks),
// a request that does not fit. No backend, no threads, no clock.
#include "engine/serving/scheduler.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

// A request in a table row. Running ones hold slots (from 100 up, so they cannot be confused
// with free slots); decoding ones generate on every completion unless `done` says otherwise.
struct Req {
  Phase phase = Phase::kWaiting;
  int n = 1;
  int64_t prompt = 1;
  int64_t computed = 0;
  std::vector<bool> done = {};  // per completion, decoding only
  int64_t restore = 0;          // state cache: tokens a snapshot covers (waiting only)
  int64_t snapshot_at = 0;      // state cache: a branch point
};

// A planned chunk, written compactly: "r0.c1 d" = request 0 completion 1 decodes in slot s;
// "r2 p[5,+16) s3 start last" = request 2's prompt tokens 5..20 into slot 3.
std::string Show(const StepPlan::Chunk& c) {
  if (!c.prompt) return absl::StrCat("r", c.request, ".c", c.completion, " d s", c.slot.value);
  return absl::StrCat("r", c.request, " p[", c.begin, ",+", c.count, ") s", c.slot.value,
                      c.start ? " start" : "", c.want_logits ? " last" : "");
}

struct Case {
  std::string name;
  std::vector<Req> waiting;
  std::vector<Req> running;
  int free_slots = 4;  // free slot ids 0, 1, ... in hand-out order
  SchedulerOptions options;
  // Expected:
  std::vector<std::vector<int>> admitted;  // slots per admitted request
  std::vector<std::string> chunks;
  std::vector<std::string> copies = {};  // "r1.c2 s0->s2"
  int64_t decode_tokens = 0, prompt_tokens = 0;
  std::vector<int> cached = {};             // requests served whole from a snapshot
  std::vector<std::string> snapshots = {};  // "r0 s0 @20"
};

SchedulerOptions Budget(int64_t max_step_tokens, int64_t prefill_chunk = 0) {
  SchedulerOptions o;
  o.max_step_tokens = max_step_tokens;
  o.prefill_chunk = prefill_chunk;
  return o;
}

std::vector<Case> Cases() {
  return {
      {"idle", {}, {}, 4, Budget(512), {}, {}},
      {"fcfs_admission_in_order",
       {{.prompt = 3}, {.prompt = 5}, {.prompt = 2}},
       {},
       2,
       Budget(512),
       {{0}, {1}},
       {"r0 p[0,+3) s0 start last", "r1 p[0,+5) s1 start last"},
       {},
       0,
       8},
      {"head_of_queue_that_does_not_fit_blocks_the_rest",
       {{.n = 3, .prompt = 4}, {.prompt = 2}},
       {},
       2,
       Budget(512),
       {},
       {}},
      {"n_gets_n_slots_and_forks_after_its_prompt",
       {{.n = 3, .prompt = 4}},
       {},
       4,
       Budget(512),
       {{0, 1, 2}},
       {"r0 p[0,+4) s0 start last"},
       {"r0.c1 s0->s1", "r0.c2 s0->s2"},
       0,
       4},
      {"decodes_first_then_prompts_in_the_rest_of_the_budget",
       {{.prompt = 100}},
       {{.phase = Phase::kDecoding, .n = 2, .prompt = 3, .computed = 3, .done = {false, false}},
        {.phase = Phase::kDecoding, .prompt = 2, .computed = 2, .done = {false}}},
       4,
       Budget(10),
       {{0}},
       {"r0.c0 d s100", "r0.c1 d s101", "r1.c0 d s102", "r2 p[0,+7) s0 start"},
       {},
       3,
       7},
      {"finished_completions_do_not_decode",
       {},
       {{.phase = Phase::kDecoding,
         .n = 3,
         .prompt = 3,
         .computed = 3,
         .done = {false, true, false}}},
       4,
       Budget(10),
       {},
       {"r0.c0 d s100", "r0.c2 d s102"},
       {},
       2,
       0},
      {"prompt_chunks_continue_where_they_stopped",
       {},
       {{.phase = Phase::kPrefilling, .prompt = 40, .computed = 32},
        {.phase = Phase::kPrefilling, .prompt = 50, .computed = 0}},
       4,
       Budget(20),
       {},
       {"r0 p[32,+8) s100 last", "r1 p[0,+12) s101 start"},
       {},
       0,
       20},
      {"prefill_chunk_caps_each_prompt",
       {{.prompt = 30}, {.prompt = 30}},
       {},
       4,
       Budget(512, 8),
       {{0}, {1}},
       {"r0 p[0,+8) s0 start", "r1 p[0,+8) s1 start"},
       {},
       0,
       16},
      {"full_decode_budget_still_moves_the_oldest_prompt_16_tokens",
       {{.prompt = 40}, {.prompt = 40}},
       {{.phase = Phase::kDecoding,
         .n = 3,
         .prompt = 3,
         .computed = 3,
         .done = {false, false, false}},
        {.phase = Phase::kDecoding,
         .n = 3,
         .prompt = 3,
         .computed = 3,
         .done = {false, false, false}}},
       2,
       Budget(4),
       {{0}, {1}},
       {"r0.c0 d s100", "r0.c1 d s101", "r0.c2 d s102", "r1.c0 d s103", "r1.c1 d s104",
        "r1.c2 d s105", "r2 p[0,+16) s0 start"},
       {},
       6,
       16},
      {"a_short_prompt_under_a_full_budget_ends_and_forks",
       {},
       {{.phase = Phase::kDecoding, .prompt = 3, .computed = 3, .done = {false}},
        {.phase = Phase::kPrefilling, .n = 2, .prompt = 20, .computed = 16}},
       4,
       Budget(1),
       {},
       {"r0.c0 d s100", "r1 p[16,+4) s101 last"},
       {"r1.c1 s101->s102"},
       1,
       4},
      {"budget_left_smaller_than_16_is_all_a_prompt_gets",
       {{.prompt = 40}},
       {{.phase = Phase::kDecoding, .n = 2, .prompt = 3, .computed = 3, .done = {false, false}}},
       4,
       Budget(5),
       {{0}},
       {"r0.c0 d s100", "r0.c1 d s101", "r1 p[0,+3) s0 start"},
       {},
       2,
       3},
      {"restored_prompt_runs_only_its_suffix",
       {{.prompt = 10, .restore = 6}},
       {},
       4,
       Budget(512),
       {{0}},
       {"r0 p[6,+4) s0 last"},
       {},
       0,
       4},
      {"whole_prompt_from_a_snapshot_runs_nothing_and_forks",
       {{.n = 2, .prompt = 5, .restore = 5}},
       {},
       4,
       Budget(512),
       {{0, 1}},
       {},
       {"r0.c1 s0->s1"},
       0,
       0,
       {0}},
      {"prompt_chunk_stops_at_the_snapshot_point",
       {{.prompt = 30, .snapshot_at = 20}},
       {},
       4,
       Budget(512),
       {{0}},
       {"r0 p[0,+20) s0 start"},
       {},
       0,
       20,
       {},
       {"r0 s0 @20"}},
      {"snapshot_point_past_this_chunk_does_not_cut_it",
       {},
       {{.phase = Phase::kPrefilling, .prompt = 40, .computed = 4, .snapshot_at = 30}},
       4,
       Budget(10),
       {},
       {"r0 p[4,+10) s100"},
       {},
       0,
       10},
      {"restore_then_snapshot_point_then_the_rest",
       {{.prompt = 30, .restore = 8, .snapshot_at = 12}},
       {},
       4,
       Budget(512),
       {{0}},
       {"r0 p[8,+4) s0"},
       {},
       0,
       4,
       {},
       {"r0 s0 @12"}},
  };
}

class SchedulerTable : public ::testing::TestWithParam<Case> {};

TEST_P(SchedulerTable, Plans) {
  const Case& c = GetParam();
  std::vector<RequestView> views;
  views.reserve(c.waiting.size() + c.running.size());
  std::vector<const RequestView*> waiting, running;
  int32_t next_held = 100;
  uint64_t next_id = 1;
  for (const Req& r : c.running) {
    RequestView v;
    v.id = RequestId(next_id++);
    v.phase = r.phase;
    v.n = r.n;
    v.prompt_tokens = r.prompt;
    v.computed = r.computed;
    v.snapshot_at = r.snapshot_at;
    for (int i = 0; i < r.n; ++i) v.slots.push_back(SlotId(next_held++));
    if (r.phase == Phase::kDecoding) {
      for (bool d : r.done) v.generating.push_back(!d);
    }
    views.push_back(v);
    running.push_back(&views.back());
  }
  for (const Req& r : c.waiting) {
    RequestView v;
    v.id = RequestId(next_id++);
    v.n = r.n;
    v.prompt_tokens = r.prompt;
    v.restore = r.restore;
    v.snapshot_at = r.snapshot_at;
    views.push_back(v);
    waiting.push_back(&views.back());
  }
  std::vector<SlotId> free;
  for (int s = 0; s < c.free_slots; ++s) free.push_back(SlotId(s));

  const StepPlan plan = Scheduler(c.options).Plan(waiting, running, free);

  std::vector<std::vector<int>> admitted;
  for (const auto& slots : plan.admitted) {
    admitted.emplace_back();
    for (SlotId s : slots) admitted.back().push_back(s.value);
  }
  EXPECT_EQ(admitted, c.admitted);
  std::vector<std::string> chunks, copies;
  for (const StepPlan::Chunk& ch : plan.chunks) chunks.push_back(Show(ch));
  for (const StepPlan::Copy& cp : plan.copies) {
    copies.push_back(absl::StrCat("r", cp.request, ".c", cp.completion, " s", cp.from.value, "->s",
                                  cp.to.value));
  }
  EXPECT_EQ(chunks, c.chunks);
  EXPECT_EQ(copies, c.copies);
  EXPECT_EQ(plan.decode_tokens, c.decode_tokens);
  EXPECT_EQ(plan.prompt_tokens, c.prompt_tokens);
  EXPECT_EQ(plan.cached_prompts, c.cached);
  std::vector<std::string> snapshots;
  for (const StepPlan::Snapshot& sn : plan.snapshots) {
    snapshots.push_back(absl::StrCat("r", sn.request, " s", sn.slot.value, " @", sn.length));
  }
  EXPECT_EQ(snapshots, c.snapshots);
  EXPECT_EQ(plan.empty(), c.chunks.empty() && c.cached.empty());
}

INSTANTIATE_TEST_SUITE_P(Cases, SchedulerTable, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Phase, TransitionsAreChecked) {
  EXPECT_TRUE(CanMove(Phase::kWaiting, Phase::kPrefilling));
  EXPECT_TRUE(CanMove(Phase::kPrefilling, Phase::kDecoding));
  EXPECT_TRUE(CanMove(Phase::kDecoding, Phase::kFinished));
  EXPECT_TRUE(CanMove(Phase::kWaiting, Phase::kFinished));  // cancelled while queued
  EXPECT_TRUE(CanMove(Phase::kPrefilling, Phase::kFinished));
  EXPECT_FALSE(CanMove(Phase::kWaiting, Phase::kDecoding));
  EXPECT_FALSE(CanMove(Phase::kDecoding, Phase::kPrefilling));
  EXPECT_FALSE(CanMove(Phase::kFinished, Phase::kFinished));
  EXPECT_FALSE(CanMove(Phase::kFinished, Phase::kWaiting));
  Phase p = Phase::kWaiting;
  MoveTo(p, Phase::kPrefilling);
  EXPECT_EQ(p, Phase::kPrefilling);
  EXPECT_DEATH(MoveTo(p, Phase::kWaiting),
               "illegal request phase transition prefilling -> waiting");
}

}  // namespace
}  // namespace mamba::engine
