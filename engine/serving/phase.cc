#include "engine/serving/phase.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace mamba::engine {

std::string_view Name(Phase p) {
  switch (p) {
    case Phase::kWaiting:
      return "waiting";
    case Phase::kPrefilling:
      return "prefilling";
    case Phase::kDecoding:
      return "decoding";
    case Phase::kFinished:
      return "finished";
  }
  return "?";
}

void MoveTo(Phase& p, Phase to) {
  if (!CanMove(p, to)) {
    std::fprintf(stderr, "engine: illegal request phase transition %s -> %s\n",
                 std::string(Name(p)).c_str(), std::string(Name(to)).c_str());
    std::abort();
  }
  p = to;
}

}  // namespace mamba::engine
