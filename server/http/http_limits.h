// Limits the HTTP connection code applies while parsing a request, shared with the request
// fuzzer (tests/fuzz/http_request_fuzz.cc) so that it parses with the server's settings. The
// body limit is FrontEndOptions::max_body_bytes (server/serving_state.h).
#pragma once

#include <cstddef>

namespace mamba::server::http {

inline constexpr size_t kMaxHeaderBytes = 64 * 1024;  // beyond this: 431

}  // namespace mamba::server::http
