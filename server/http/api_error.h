// HTTP errors in the shape of each API family, and the one place where absl::Status codes become
// HTTP statuses. Codes are chosen by meaning below the server (the engine's Validate is the one
// request validator); HttpStatus maps them:
//
//   absl code                          OpenAI routes    TGI routes
//   InvalidArgument, FailedPrecondition,
//   OutOfRange (a bad request)         400              422
//   Unauthenticated                    401              401
//   PermissionDenied                   403              403
//   NotFound                           404              404
//   AlreadyExists (a fork target),
//   Aborted (a session in use)         409              409
//   ResourceExhausted (queue full,
//   no memory for another session)     429 (+ Retry-After: 1)
//   Unimplemented                      501              501
//   Unavailable (starting, draining),
//   Cancelled (the engine stopped it)  503              503
//   DeadlineExceeded                   504              504
//   anything else                      500              500
//
// FailedPrecondition includes "sessions are off" (400: the request asks for what this server was
// configured not to do, as for stop strings without a tokenizer).
//
// The transport adds statuses no absl code stands for: 405 (wrong method), 413 (body over
// max_body_bytes), 431 (headers too large), 400 (malformed HTTP; a session state upload larger
// than the largest state file of the model).
//
// Shapes: OpenAI routes (/v1/*, /tokenize, /detokenize, /health, /metrics, unknown paths) answer
// {"error": {"message", "type", "param", "code"}} as OpenAI and vLLM do (type:
// invalid_request_error, authentication_error, ...; param: the request field at fault or null;
// code: a short string such as "context_length_exceeded" or null). TGI routes (/generate,
// /generate_stream) answer {"error": "...", "error_type": "validation" | "overloaded" |
// "generation" | "incomplete_generation" | ...}.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "server/http/exchange.h"
#include "server/http/json_util.h"

namespace mamba::server::http {

enum class ApiStyle { kOpenAi, kTgi };

// OpenAI "code" of a request refused because its session is in use (409).
inline constexpr char kSessionInUse[] = "session_in_use";

// The family a path belongs to: kTgi for TGI's routes, kOpenAi for everything else.
ApiStyle StyleOf(std::string_view path);

struct ApiError {
  int status = 400;  // HTTP status
  std::string message;
  std::optional<std::string> param = std::nullopt;  // OpenAI "param": the wire field at fault
  std::optional<std::string> code = std::nullopt;   // OpenAI "code": a short reason
  ApiStyle style = ApiStyle::kOpenAi;
  // TGI "error_type" when not the default for the status (e.g. "incomplete_generation").
  std::optional<std::string> tgi_type = std::nullopt;
};

// The one mapping from absl codes to HTTP statuses (table above).
int HttpStatus(absl::StatusCode code, ApiStyle style);

// A status as an API error: HttpStatus, the message, and for OpenAI the engine's field (turned
// into the wire name: max_new_tokens -> max_tokens) and reason (engine/request_validation.h);
// Aborted, which only a session in use gives, has the code "session_in_use".
ApiError ToApiError(const absl::Status& status, ApiStyle style);

// OpenAI's error "type" for an HTTP status: invalid_request_error, authentication_error, ...
std::string_view OpenAiErrorType(int status);
// TGI's "error_type" for an HTTP status: validation, overloaded, generation, ...
std::string_view TgiErrorType(int status);

// The error object in the error's style, as JSON and as text.
OrderedJson ErrorBody(const ApiError& error);
std::string ErrorJson(const ApiError& error);
// The full response, with Retry-After for 429 and WWW-Authenticate for 401.
HttpResponse ErrorResponse(const ApiError& error);
HttpResponse ErrorResponse(const absl::Status& status, ApiStyle style);

}  // namespace mamba::server::http
