#include "client/http_api.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/errors.h"
#include "client/strings.h"

namespace mamba::client {

Clock::time_point DeadlineAfter(double timeout_s) {
  if (timeout_s <= 0) return Clock::time_point::max();
  return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6));
}

namespace {

HttpClientOptions WithTlsOf(const Endpoint& endpoint, HttpClientOptions options) {
  options.tls.enabled = endpoint.tls;
  return options;
}

}  // namespace

HttpApi::HttpApi(const Endpoint& endpoint, std::string api_key, HttpClientOptions options)
    : endpoint_(endpoint),
      api_key_(std::move(api_key)),
      client_(endpoint.host, endpoint.port, WithTlsOf(endpoint, std::move(options))) {}

HttpCall HttpApi::MakeCall(std::string method, std::string_view path, std::string body,
                           double timeout_s) const {
  HttpCall call;
  call.method = std::move(method);
  call.path = absl::StrCat(endpoint_.base_path, AV(path));
  if (!body.empty()) call.headers.push_back({"Content-Type", "application/json"});
  call.body = std::move(body);
  if (!api_key_.empty())
    call.headers.push_back({"Authorization", absl::StrCat("Bearer ", api_key_)});
  call.deadline = DeadlineAfter(timeout_s);
  return call;
}

absl::StatusOr<Json> HttpApi::JsonCall(std::string method, std::string_view path, const Json* body,
                                       double timeout_s) {
  HttpCall call = MakeCall(std::move(method), path, body ? body->dump() : "", timeout_s);
  absl::StatusOr<HttpResult> r = client_.Send(call);
  if (!r.ok()) return r.status();
  if (r->status / 100 != 2) return HttpError(r->status, ErrorMessageFromBody(r->body));
  Json j = Json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return WithKind(absl::InternalError(absl::StrCat(AV(path), " did not answer with JSON")),
                    "protocol");
  }
  return j;
}

absl::StatusOr<std::vector<int32_t>> HttpApi::Tokenize(const std::string& text, double timeout_s) {
  Json body = {{"prompt", text}};
  absl::StatusOr<Json> r = JsonCall("POST", "/tokenize", &body, timeout_s);
  if (!r.ok()) return r.status();
  auto it = r->find("tokens");
  if (it == r->end() || !it->is_array()) {
    return WithKind(absl::InternalError("/tokenize answered without 'tokens'"), "protocol");
  }
  std::vector<int32_t> ids;
  for (const Json& t : *it) {
    if (!t.is_number_integer())
      return WithKind(absl::InternalError("/tokenize: a token is not an integer"), "protocol");
    ids.push_back(t.get<int32_t>());
  }
  return ids;
}

absl::StatusOr<std::string> HttpApi::Detokenize(const std::vector<int32_t>& ids, double timeout_s) {
  Json body = {{"tokens", ids}};
  absl::StatusOr<Json> r = JsonCall("POST", "/detokenize", &body, timeout_s);
  if (!r.ok()) return r.status();
  auto it = r->find("prompt");
  if (it == r->end() || !it->is_string()) {
    return WithKind(absl::InternalError("/detokenize answered without 'prompt'"), "protocol");
  }
  return it->get<std::string>();
}

absl::StatusOr<HttpResult> HttpApi::Health(double timeout_s) {
  return client_.Send(MakeCall("GET", "/health", "", timeout_s));
}

absl::StatusOr<std::string> HttpApi::Metrics(double timeout_s) {
  absl::StatusOr<HttpResult> r = client_.Send(MakeCall("GET", "/metrics", "", timeout_s));
  if (!r.ok()) return r.status();
  if (r->status != 200) return HttpError(r->status, ErrorMessageFromBody(r->body));
  return std::move(r->body);
}

absl::StatusOr<std::string> HttpApi::FirstModelId(double timeout_s) {
  absl::StatusOr<Json> r = JsonCall("GET", "/v1/models", nullptr, timeout_s);
  if (!r.ok()) return r.status();
  auto data = r->find("data");
  if (data == r->end() || !data->is_array() || data->empty()) return std::string();
  const Json& first = data->front();
  if (!first.is_object() || !first.contains("id") || !first["id"].is_string()) return std::string();
  return first["id"].get<std::string>();
}

std::optional<SessionReport> SessionOf(const Json& object) {
  auto s = object.find("session");
  if (s == object.end() || !s->is_object()) return std::nullopt;
  SessionReport report;
  if (auto id = s->find("id"); id != s->end() && id->is_string())
    report.id = id->get<std::string>();
  auto tokens = s->find("tokens");
  if (tokens == s->end() || !tokens->is_number_integer()) return std::nullopt;
  report.tokens = tokens->get<int64_t>();
  return report;
}

std::optional<double> PrometheusValue(std::string_view text, std::string_view name,
                                      std::string_view labels) {
  for (absl::string_view line : absl::StrSplit(AV(text), '\n')) {
    if (line.empty() || line.front() == '#') continue;
    if (!absl::ConsumePrefix(&line, AV(name))) continue;
    if (!labels.empty()) {
      if (!absl::ConsumePrefix(&line, AV(labels))) continue;
    } else if (!line.empty() && line.front() == '{') {
      continue;
    }
    if (line.empty() || line.front() != ' ') continue;
    line = absl::StripAsciiWhitespace(line);
    line = line.substr(0, line.find(' '));  // drop a timestamp
    double v = 0;
    if (absl::SimpleAtod(line, &v)) return v;
  }
  return std::nullopt;
}

}  // namespace mamba::client
