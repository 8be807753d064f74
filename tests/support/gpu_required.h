// Whether a test that needs a GPU fails or skips when none is usable: MAMBA_REQUIRE_GPU=1 (set by
// tests/gpu/run_all.sh on GPU machines) turns the skip into a failure, so that a broken driver or
// an unusable device cannot pass as "skipped".
#pragma once

#include <cstdlib>
#include <string_view>

namespace mamba::testing {

inline bool GpuRequired() {
  const char* env = std::getenv("MAMBA_REQUIRE_GPU");
  return env != nullptr && std::string_view(env) == "1";
}

}  // namespace mamba::testing
