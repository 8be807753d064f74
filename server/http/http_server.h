// The HTTP front end: OpenAI-compatible /v1/completions and /v1/models, TGI-compatible
// /generate and /generate_stream, /tokenize, /detokenize, /health and /metrics, over HTTP/1.1
// keep-alive (Boost.Beast), optionally TLS. Routes are in router.h; this owns sockets and threads.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "server/serving_state.h"

namespace mamba::server {

class Metrics;

class HttpServer {
 public:
  // Binds options.host:options.port (0 = any free port) and serves on `threads` I/O threads.
  // TLS when both options.tls_cert_file and options.tls_key_file are set (PEM files).
  // `state` and `metrics` (may be null: /metrics then answers 404) must outlive the server.
  // Errors: InvalidArgument (bad host, TLS files, threads < 1), Unavailable (cannot bind).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(ServingState* state, Metrics* metrics,
                                                           const FrontEndOptions& options,
                                                           int threads = 2);
  ~HttpServer();  // Shutdown()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;  // the bound port
  // Waits until every byte already queued to clients has been written (finished responses of a
  // drain reach slow readers before Shutdown closes their connections). False on timeout.
  bool WaitForPendingOutput(std::chrono::milliseconds timeout);
  // Stops accepting, closes every connection (cancelling their engine requests), joins the
  // I/O threads. Idempotent.
  void Shutdown();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mamba::server
