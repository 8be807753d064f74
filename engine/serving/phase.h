// A request's life in the engine as an explicit phase with checked transitions (waiting ->
// prefilling -> decoding -> finished; any phase may end early), instead of booleans derived from
// counters.
#pragma once

#include <string_view>

namespace mamba::engine {

enum class Phase {
  kWaiting,     // submitted, holds no slot
  kPrefilling,  // holds its slots; prompt tokens are still to be consumed
  kDecoding,    // the prompt is in the state; completions generate one token per step
  kFinished,    // every completion ended; its slots go back at the next retire
};

std::string_view Name(Phase p);

// Whether `from` -> `to` is a legal move: forward along the order above, skipping none but
// kFinished, which any phase may reach (cancel, deadline, error).
constexpr bool CanMove(Phase from, Phase to) {
  if (to == Phase::kFinished) return from != Phase::kFinished;
  return static_cast<int>(to) == static_cast<int>(from) + 1;
}

// Moves `p` to `to`; an illegal move is a broken invariant (aborts with both names).
void MoveTo(Phase& p, Phase to);

}  // namespace mamba::engine
