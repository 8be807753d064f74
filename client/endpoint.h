// Where a client talks to: a --target URL (grpc://, grpcs://, http://) parsed into host, port,
// protocol and an optional HTTP base path.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mamba::client {

enum class Protocol { kGrpc, kHttp };

struct Endpoint {
  Protocol protocol = Protocol::kGrpc;
  bool tls = false;          // grpcs:// (HTTP TLS is not implemented)
  std::string host;          // without brackets for IPv6 literals
  int port = 0;
  std::string base_path;     // HTTP only: prefix of every path, "" or "/something" (no trailing /)

  // "host:port", bracketing IPv6 literals (what gRPC channels and Host headers want).
  std::string Authority() const;
  // The URL back, for messages: "grpc://127.0.0.1:50051", "http://[::1]:8000/v1proxy".
  std::string ToString() const;
};

// Accepts grpc://HOST[:PORT] (default 50051), grpcs://HOST[:PORT] (TLS, default 443),
// http://HOST[:PORT][/BASE] (default 80) and a bare HOST:PORT (gRPC). https:// is refused with a
// message (no TLS for HTTP).
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view url);

}  // namespace mamba::client
