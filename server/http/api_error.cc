#include "server/http/api_error.h"

namespace mamba::server::http {

ApiError ParseError(const absl::Status& status) {
  int code = 400;
  switch (status.code()) {
    case absl::StatusCode::kOutOfRange:
      code = 422;
      break;
    case absl::StatusCode::kNotFound:
      code = 404;
      break;
    case absl::StatusCode::kResourceExhausted:
      code = 413;
      break;
    case absl::StatusCode::kUnavailable:
      code = 503;
      break;
    case absl::StatusCode::kInternal:
      code = 500;
      break;
    default:
      code = 400;
      break;
  }
  return {code, std::string(status.message())};
}

ApiError SubmitError(const absl::Status& status) {
  int code = 500;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
      code = 422;
      break;
    case absl::StatusCode::kOutOfRange:
      code = 413;
      break;
    case absl::StatusCode::kResourceExhausted:
      code = 429;
      break;
    case absl::StatusCode::kUnavailable:
      code = 503;
      break;
    default:
      code = 500;
      break;
  }
  return {code, std::string(status.message())};
}

ApiError FinishError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return {504, std::string(status.message())};
    case absl::StatusCode::kCancelled:
      return {503, std::string(status.message())};
    default:
      return {500, std::string(status.message())};
  }
}

std::string_view ErrorType(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
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

OrderedJson ErrorBody(const ApiError& error) {
  OrderedJson j;
  j["error"] = {
      {"message", error.message}, {"type", ErrorType(error.status)}, {"code", error.status}};
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

}  // namespace mamba::server::http
