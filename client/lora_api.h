// LoRA adapter management (issue 15) over either protocol: HTTP (vLLM's /v1/load_lora_adapter,
// /v1/unload_lora_adapter, and /v1/models for the list) or gRPC (LoadLoraAdapter,
// UnloadLoraAdapter, ListLoraAdapters), behind one interface for mamba-client.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/endpoint.h"
#include "client/grpc_api.h"
#include "client/http_api.h"

namespace mamba::client {

// An adapter as the server reports it; HTTP gives name, path, parent and created only.
struct LoraInfo {
  std::string name;
  std::string path;
  std::string parent;                // the base model's name (HTTP)
  int64_t created = 0;               // Unix seconds
  int64_t max_rank = 0;              // gRPC
  std::vector<std::string> targets;  // gRPC
  int64_t bytes = 0;                 // gRPC

  // {"id", "object": "model", "created", "root", ["parent"], ["max_rank", "targets", "bytes"]}.
  Json ToJson() const;
};

// Errors as every client call's (errors.h): "HTTP 404: ..." / "gRPC NOT_FOUND: ...".
class LoraApi {
 public:
  virtual ~LoraApi() = default;
  // `path`: the adapter's directory on the server's file system.
  virtual absl::Status Load(const std::string& name, const std::string& path) = 0;
  virtual absl::Status Unload(const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<LoraInfo>> List() = 0;
};

// Over HTTP (options.tls for https://) or gRPC, by the endpoint's protocol; every call bounded
// by timeout_s (0 = none).
absl::StatusOr<std::unique_ptr<LoraApi>> MakeLoraApi(const Endpoint& endpoint,
                                                     const std::string& api_key,
                                                     const HttpClientOptions& http,
                                                     const GrpcOptions& grpc, double timeout_s);

}  // namespace mamba::client
