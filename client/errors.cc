#include "client/errors.h"

#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "client/strings.h"
#include "nlohmann/json.hpp"

namespace mamba::client {
namespace {

constexpr char kKindUrl[] = "mamba.client/kind";
constexpr char kHttpUrl[] = "mamba.client/http_status";

// The inverse of the server's one mapping (server/http/api_error.h): an invalid request is
// InvalidArgument whether OpenAI's routes say 400 or TGI's say 422, as gRPC says it.
absl::StatusCode CodeForHttp(int s) {
  switch (s) {
    case 400:
    case 422:
      return absl::StatusCode::kInvalidArgument;
    case 401:
    case 403:
      return absl::StatusCode::kUnauthenticated;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    case 413:  // a body over the server's limit
      return absl::StatusCode::kOutOfRange;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 501:
      return absl::StatusCode::kUnimplemented;
    case 502:
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      return s >= 500 ? absl::StatusCode::kInternal : absl::StatusCode::kUnknown;
  }
}

}  // namespace

absl::Status WithKind(absl::Status status, std::string_view kind) {
  if (!status.ok()) status.SetPayload(kKindUrl, absl::Cord(AV(kind)));
  return status;
}

std::string ErrorKind(const absl::Status& status) {
  if (status.ok()) return "";
  if (auto kind = status.GetPayload(kKindUrl)) return std::string(*kind);
  return absl::StrCat("grpc_", absl::AsciiStrToLower(absl::StatusCodeToString(status.code())));
}

int HttpStatusOf(const absl::Status& status) {
  auto p = status.GetPayload(kHttpUrl);
  if (!p) return 0;
  std::string text(*p);
  int v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

absl::Status HttpError(int http_status, std::string_view message) {
  absl::Status s(CodeForHttp(http_status), absl::StrCat("HTTP ", http_status, ": ", AV(message)));
  s.SetPayload(kHttpUrl, absl::Cord(absl::StrCat(http_status)));
  return WithKind(std::move(s), absl::StrCat("http_", http_status));
}

std::string ErrorMessageFromBody(std::string_view body) {
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    auto it = j.find("error");
    if (it != j.end()) {
      if (it->is_string()) return it->get<std::string>();
      if (it->is_object()) {
        auto m = it->find("message");
        if (m != it->end() && m->is_string()) return m->get<std::string>();
      }
    }
    auto m = j.find("message");  // other servers' shapes
    if (m != j.end() && m->is_string()) return m->get<std::string>();
    auto d = j.find("detail");
    if (d != j.end() && d->is_string()) return d->get<std::string>();
  }
  std::string text(body.substr(0, 300));
  if (body.size() > 300) text += "...";
  return text.empty() ? "(empty body)" : text;
}

}  // namespace mamba::client
