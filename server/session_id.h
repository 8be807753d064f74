// The session ids the front ends accept: engine::ValidateSessionId, and not "." or "..", which
// are path segments an HTTP client or proxy may resolve away (/v1/sessions/.. is /v1/), so that
// every session can be addressed in a URL.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "engine/serving/session_store.h"

namespace mamba::server {

inline absl::Status ValidateFrontEndSessionId(std::string_view id) {
  if (id == "." || id == "..") {
    return absl::InvalidArgumentError("a session id may not be '.' or '..'");
  }
  return engine::ValidateSessionId(id);
}

}  // namespace mamba::server
