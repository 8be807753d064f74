#include "server/http/api_error.h"

#include <array>
#include <utility>

#include "engine/request_validation.h"

namespace mamba::server::http {
namespace {

// Engine field names that OpenAI's completions request spells differently.
constexpr std::array<std::pair<std::string_view, std::string_view>, 4> kOpenAiFieldNames = {{
    {"max_new_tokens", "max_tokens"},
    {"min_new_tokens", "min_tokens"},
    {"top_logprobs", "logprobs"},
    {"stop_strings", "stop"},
}};

std::string OpenAiFieldName(std::string field) {
  for (const auto& [engine_name, wire_name] : kOpenAiFieldNames) {
    if (field == engine_name) return std::string(wire_name);
  }
  return field;
}

}  // namespace

ApiStyle StyleOf(std::string_view path) {
  return path == "/generate" || path == "/generate_stream" || path == "/" || path == "/info"
             ? ApiStyle::kTgi
             : ApiStyle::kOpenAi;
}

int HttpStatus(absl::StatusCode code, ApiStyle style) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return style == ApiStyle::kTgi ? 422 : 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

ApiError ToApiError(const absl::Status& status, ApiStyle style) {
  ApiError e;
  e.status = HttpStatus(status.code(), style);
  e.message = std::string(status.message());
  e.style = style;
  if (style == ApiStyle::kOpenAi) {
    if (std::optional<std::string> field = engine::FieldOf(status)) {
      e.param = OpenAiFieldName(*std::move(field));
    }
    e.code = engine::ReasonOf(status);
    if (!e.code && status.code() == absl::StatusCode::kAborted) e.code = kSessionInUse;
  }
  return e;
}

std::string_view OpenAiErrorType(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable_error";
    case 504:
      return "timeout_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string_view TgiErrorType(int status) {
  switch (status) {
    case 401:
    case 403:
      return "authentication";
    case 429:
    case 503:
      return "overloaded";
    default:
      return status >= 500 ? "generation" : "validation";
  }
}

OrderedJson ErrorBody(const ApiError& error) {
  OrderedJson j;
  if (error.style == ApiStyle::kTgi) {
    j["error"] = error.message;
    j["error_type"] = error.tgi_type ? *error.tgi_type : std::string(TgiErrorType(error.status));
    return j;
  }
  j["error"] = {{"message", error.message},
                {"type", OpenAiErrorType(error.status)},
                {"param", error.param ? OrderedJson(*error.param) : OrderedJson(nullptr)},
                {"code", error.code ? OrderedJson(*error.code) : OrderedJson(nullptr)}};
  return j;
}

std::string ErrorJson(const ApiError& error) { return Dump(ErrorBody(error)); }

HttpResponse ErrorResponse(const ApiError& error) {
  HttpResponse r;
  r.status = error.status;
  r.body = ErrorJson(error);
  if (error.status == 429) r.headers.emplace_back("Retry-After", "1");
  if (error.status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

HttpResponse ErrorResponse(const absl::Status& status, ApiStyle style) {
  return ErrorResponse(ToApiError(status, style));
}

}  // namespace mamba::server::http
