// HTTP errors in OpenAI's shape, {"error": {"message", "type", "code"}}, and the one place where
// absl::Status codes become HTTP statuses.
//
// Status choice (both front-end parsing and engine answers):
//   400  malformed: bad JSON, a field of the wrong type, a missing or empty prompt, invalid
//        UTF-8, an unsupported feature asked for
//   401  missing or wrong API key          404  unknown path or model    405  wrong method
//   413  body over max_body_bytes, or a prompt over the engine's max_prompt_tokens
//   422  well-formed but out of range: temperature -1, top_p 0, n 0, a token id outside the
//        vocabulary, max_tokens over the engine's limit (the engine's InvalidArgument)
//   429  the engine's queue is full (with Retry-After: 1)
//   500  anything else                     503  starting or draining
//   504  the request's deadline passed before it finished
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "server/http/exchange.h"
#include "server/http/json_util.h"

namespace mamba::server::http {

struct ApiError {
  int status = 400;
  std::string message;
};

// Front-end parsing reports errors as absl::Status in these codes (see ParseError):
//   InvalidArgument -> 400, OutOfRange -> 422, NotFound -> 404, ResourceExhausted -> 413,
//   FailedPrecondition -> 400, Unavailable -> 503.
ApiError ParseError(const absl::Status& status);
// An Engine::Submit refusal: InvalidArgument/FailedPrecondition -> 422, OutOfRange -> 413
// (prompt too long), ResourceExhausted -> 429, Unavailable -> 503, others -> 500.
ApiError SubmitError(const absl::Status& status);
// How a completion that ended badly (kCancelled / kDeadline / kError) is reported.
ApiError FinishError(const absl::Status& status);

// OpenAI's error "type" for a status: invalid_request_error, authentication_error, ...
std::string_view ErrorType(int status);
// {"error": {"message": ..., "type": ..., "code": status}}, as JSON and as text.
OrderedJson ErrorBody(const ApiError& error);
std::string ErrorJson(const ApiError& error);
// The full response, with Retry-After for 429 and WWW-Authenticate for 401.
HttpResponse ErrorResponse(const ApiError& error);

}  // namespace mamba::server::http
