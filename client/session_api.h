// Session management (MambaServe's conversations kept by id) over either protocol: HTTP
// (/v1/sessions...) or gRPC (MambaService's session RPCs), behind one interface for mamba-client.
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

// A session as the server reports it. Times are Unix seconds.
struct SessionInfo {
  std::string id;
  int64_t tokens = 0;
  int64_t bytes = 0;
  int64_t created = 0, last_used = 0, expires_at = 0;
  bool in_use = false;

  // The HTTP API's shape: {"id", "object": "session", "tokens", "bytes", "created", "last_used",
  // "expires_at", "in_use"}, whichever protocol it came over.
  Json ToJson() const;
};

// Errors as every client call's (errors.h): "HTTP 404: ..." / "gRPC NOT_FOUND: ...".
class SessionApi {
 public:
  virtual ~SessionApi() = default;
  virtual absl::StatusOr<SessionInfo> Get(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<SessionInfo>> List() = 0;
  virtual absl::Status Delete(const std::string& id) = 0;
  // new_id empty: the server picks one.
  virtual absl::StatusOr<SessionInfo> Fork(const std::string& id, const std::string& new_id) = 0;
  // The session file (safetensors).
  virtual absl::StatusOr<std::string> Export(const std::string& id) = 0;
  // Creates or replaces `id`; *created says which.
  virtual absl::StatusOr<SessionInfo> Import(const std::string& id, const std::string& file,
                                             bool* created) = 0;
};

// Over HTTP (options.tls for https://) or gRPC, by the endpoint's protocol; every call bounded
// by timeout_s (0 = none).
absl::StatusOr<std::unique_ptr<SessionApi>> MakeSessionApi(const Endpoint& endpoint,
                                                           const std::string& api_key,
                                                           const HttpClientOptions& http,
                                                           const GrpcOptions& grpc,
                                                           double timeout_s);

}  // namespace mamba::client
