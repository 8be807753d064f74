// The HTTP side of our server (and of servers that speak the same endpoints): JSON calls with the
// API key, errors turned into statuses, and the small endpoints (/tokenize, /detokenize,
// /v1/models, /health, /metrics).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/endpoint.h"
#include "client/generation.h"
#include "client/http_client.h"
#include "nlohmann/json.hpp"

namespace mamba::client {

using Json = nlohmann::json;

// Not thread-safe (one connection); make one per thread.
class HttpApi {
 public:
  // TLS when the endpoint is https:// (options.tls gives the roots and the name to check).
  HttpApi(const Endpoint& endpoint, std::string api_key, HttpClientOptions options = {});

  // A call to base_path + path with the Authorization header and, for a body, a JSON content
  // type; the deadline from timeout_s (0 = none).
  HttpCall MakeCall(std::string method, std::string_view path, std::string body,
                    double timeout_s) const;
  // Sends it; a transport failure is an error, an HTTP error status is not.
  absl::StatusOr<HttpResult> Send(const HttpCall& call) { return client_.Send(call); }
  // Sends a JSON request (body may be null for GET) and parses a JSON answer; an HTTP error
  // status becomes HttpError with the server's message.
  absl::StatusOr<Json> JsonCall(std::string method, std::string_view path, const Json* body,
                                double timeout_s);

  // POST /tokenize {"prompt"} -> tokens.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text, double timeout_s);
  // POST /detokenize {"tokens"} -> prompt.
  absl::StatusOr<std::string> Detokenize(const std::vector<int32_t>& ids, double timeout_s);
  // GET /health: the HTTP status (200 healthy, 503 not ready or draining) and body.
  absl::StatusOr<HttpResult> Health(double timeout_s);
  // GET /metrics (Prometheus text).
  absl::StatusOr<std::string> Metrics(double timeout_s);
  // GET /v1/models: the first model's id ("" when the list is empty).
  absl::StatusOr<std::string> FirstModelId(double timeout_s);

  HttpClient& client() { return client_; }
  const Endpoint& endpoint() const { return endpoint_; }

 private:
  Endpoint endpoint_;
  std::string api_key_;
  HttpClient client_;
};

// A deadline `timeout_s` from now (0 = none).
Clock::time_point DeadlineAfter(double timeout_s);

// The top-level "session" object of an OpenAI or TGI response or stream event ({"id": string,
// "tokens": integer}), when there is one.
std::optional<SessionReport> SessionOf(const Json& object);

// One sample of Prometheus text: the value of `name` (with exactly these labels, e.g.
// `{reason="cancelled"}`, or "" for none); nullopt when absent.
std::optional<double> PrometheusValue(std::string_view text, std::string_view name,
                                      std::string_view labels = "");

}  // namespace mamba::client
