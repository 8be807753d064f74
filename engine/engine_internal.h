// The Engine's per-request bookkeeping, shared by engine.cc (front-end side) and
// engine_step.cc (scheduler side). Owned by the scheduler thread once admitted.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "engine/engine.h"
#include "engine/tokenizer/incremental_detokenizer.h"

namespace mamba::engine {

// One of a request's n completions: its slot, sampler and text state.
struct Engine::Completion {
  SlotId slot;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<IncrementalDetokenizer> detok;
  StopMatcher stops;
  TokenId last = 0;
  bool finished = false;
  Clock::time_point last_token;
  double ttft = 0;
};

// A request from Submit until its last completion finishes.
struct Engine::Live {
  RequestId id;
  Request req;
  std::shared_ptr<RequestSink> sink;
  Clock::time_point submitted;
  double queue_seconds = 0;
  int64_t consumed = 0;  // prompt tokens already in completion 0's state
  std::vector<Completion> completions;
  bool HasSlots() const { return !completions.empty(); }
  bool InPrefill() const { return consumed < static_cast<int64_t>(req.prompt.size()); }
  bool Done() const {
    return std::all_of(completions.begin(), completions.end(),
                       [](const Completion& c) { return c.finished; });
  }
};

}  // namespace mamba::engine
