// The gRPC front end: mamba.v1.MambaService (proto/mamba/v1/mamba.proto) plus the standard
// grpc.health.v1 health service and server reflection, on one port, optionally over TLS.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/serving_state.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace mamba::server {

class MambaServiceImpl;

// Called once per finished MambaService call (not health or reflection) with the method's short
// name ("Generate", "GenerateStream", "Tokenize", "Detokenize", "GetModelInfo") and the gRPC
// status code; on gRPC's threads, so it must be thread-safe and quick (e.g. a metrics counter).
using ResponseObserver = std::function<void(std::string_view method, int code)>;

class GrpcServer {
 public:
  // Binds options.host:options.port (0 picks a free port) and starts serving. TLS when both
  // options.tls_cert_file and options.tls_key_file are set (PEM). Health starts SERVING only if
  // state->health is already kServing; call SetServing after warm-up. `state` and its engine must
  // outlive the server. options.request_timeout_ms is the deadline of calls whose client set
  // none. Errors: InvalidArgument (one TLS file without the other, unreadable file), Unavailable
  // (the address cannot be bound).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(ServingState* state,
                                                           const FrontEndOptions& options,
                                                           ResponseObserver on_response = nullptr);
  ~GrpcServer();  // Shutdown(0 ms) if not done yet
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }

  // grpc.health.v1 status SERVING / NOT_SERVING for the overall server ("") and for
  // "mamba.v1.MambaService" (readiness). The service kLivenessService stays SERVING while the
  // process serves at all, draining included, so a liveness probe never turns a graceful drain
  // into a restart. Ignored after Shutdown (everything then reads NOT_SERVING).
  void SetServing(bool serving);
  static constexpr char kLivenessService[] = "liveness";

  // Stops accepting calls, lets running ones finish for up to `grace`, then cancels them, and
  // waits until every call is done. Idempotent; thread-safe.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  GrpcServer() = default;

  std::unique_ptr<MambaServiceImpl> service_;
  std::unique_ptr<::grpc::Server> server_;
  int port_ = 0;
  std::mutex shutdown_mu_;
  bool shut_down_ = false;
};

}  // namespace mamba::server
