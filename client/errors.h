// Errors of client calls: absl::Status with a short machine-readable "kind" attached (the key by
// which the load generator counts errors: "http_429", "grpc_resource_exhausted", "connect",
// "timeout", "cancelled", ...), and the HTTP status <-> status code mapping.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace mamba::client {

// Attaches `kind` to `status` (a no-op for OK).
absl::Status WithKind(absl::Status status, std::string_view kind);

// The kind attached by WithKind; otherwise "grpc_" + the lower-case code name
// ("grpc_unavailable"); "" for OK.
std::string ErrorKind(const absl::Status& status);

// The HTTP status a call answered with, when the error came from an HTTP response; else 0.
int HttpStatusOf(const absl::Status& status);

// An HTTP error response as a status: code from the HTTP status (429 -> RESOURCE_EXHAUSTED,
// 401 -> UNAUTHENTICATED, ...), kind "http_<status>", message "HTTP <status>: <message>".
absl::Status HttpError(int http_status, std::string_view message);

// The message of an error response body: OpenAI's {"error": {"message": ...}}, TGI's
// {"error": "...", "error_type": ...}, or the body itself (shortened) when it is neither.
std::string ErrorMessageFromBody(std::string_view body);

}  // namespace mamba::client
