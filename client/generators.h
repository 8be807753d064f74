// Choosing a generation API: the --api names and a factory that makes one Generator per thread
// (HTTP ones own a keep-alive connection each; gRPC ones share a few channels).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/endpoint.h"
#include "client/generation.h"
#include "client/grpc_api.h"
#include "client/http_client.h"

namespace mamba::client {

enum class Api { kGrpc, kOpenAi, kTgi };

// "grpc", "openai", "tgi".
absl::StatusOr<Api> ParseApi(std::string_view name);
const char* ApiName(Api api);
// The API a target implies when none is named: gRPC for grpc(s)://, OpenAI for http(s)://.
Api DefaultApi(const Endpoint& endpoint);
// Whether the API fits the endpoint's protocol.
absl::Status CheckApi(Api api, const Endpoint& endpoint);

struct ConnectOptions {
  std::string api_key;
  GrpcOptions grpc;        // grpc.api_key is taken from api_key
  HttpClientOptions http;  // HTTP generators; http.tls: roots and name for https://
  int grpc_channels = 1;   // gRPC connections the generators are spread over
};

// Thread-safe.
class GeneratorFactory {
 public:
  GeneratorFactory(Endpoint endpoint, Api api, ConnectOptions options);
  // A generator for one thread; `worker` picks the gRPC channel (worker % grpc_channels).
  absl::StatusOr<std::unique_ptr<Generator>> Make(int worker);
  Api api() const { return api_; }
  const Endpoint& endpoint() const { return endpoint_; }
  const ConnectOptions& options() const { return options_; }
  // The first gRPC channel (for model info and the like); null for HTTP APIs.
  absl::StatusOr<std::shared_ptr<::grpc::Channel>> Channel(int index);

 private:
  Endpoint endpoint_;
  Api api_;
  ConnectOptions options_;
  std::mutex mu_;
  std::vector<std::shared_ptr<::grpc::Channel>> channels_;
};

}  // namespace mamba::client
