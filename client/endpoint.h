// Where a client talks to: a --target URL (grpc://, grpcs://, http://, https://) parsed into
// host, port, protocol, TLS and an optional HTTP base path.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mamba::client {

enum class Protocol { kGrpc, kHttp };

struct Endpoint {
  Protocol protocol = Protocol::kGrpc;
  bool tls = false;  // grpcs:// or https://
  std::string host;  // without brackets for IPv6 literals
  int port = 0;
  std::string base_path;  // HTTP only: prefix of every path, "" or "/something" (no trailing /)

  // "host:port", bracketing IPv6 literals (what gRPC channels and Host headers want).
  std::string Authority() const;
  // The URL back, for messages: "grpc://127.0.0.1:50051", "https://[::1]:8443/v1proxy".
  std::string ToString() const;
};

// Accepts grpc://HOST[:PORT] (default 50051), grpcs://HOST[:PORT] (TLS, default 443),
// http://HOST[:PORT][/BASE] (default 80), https://HOST[:PORT][/BASE] (TLS, default 443) and a bare
// HOST:PORT (gRPC).
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view url);

}  // namespace mamba::client
