#include "client/endpoint.h"

#include <charconv>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/strings.h"

namespace mamba::client {

std::string Endpoint::Authority() const {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

std::string Endpoint::ToString() const {
  const char* scheme =
      protocol == Protocol::kHttp ? (tls ? "https" : "http") : (tls ? "grpcs" : "grpc");
  return absl::StrCat(scheme, "://", Authority(), base_path);
}

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view url) {
  Endpoint e;
  std::string_view rest = url;
  int default_port = 50051;
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad target '", AV(url), "': ", AV(why),
                     " (expected grpc://HOST:PORT, grpcs://HOST:PORT, "
                     "http://HOST:PORT or https://HOST:PORT)"));
  };
  if (absl::StartsWithIgnoreCase(AV(rest), "grpc://")) {
    rest.remove_prefix(7);
  } else if (absl::StartsWithIgnoreCase(AV(rest), "grpcs://")) {
    rest.remove_prefix(8);
    e.tls = true;
    default_port = 443;
  } else if (absl::StartsWithIgnoreCase(AV(rest), "http://")) {
    rest.remove_prefix(7);
    e.protocol = Protocol::kHttp;
    default_port = 80;
  } else if (absl::StartsWithIgnoreCase(AV(rest), "https://")) {
    rest.remove_prefix(8);
    e.protocol = Protocol::kHttp;
    e.tls = true;
    default_port = 443;
  } else if (rest.find("://") != std::string_view::npos) {
    return bad("unknown scheme");
  }
  std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.size() < rest.size()) {
    if (e.protocol != Protocol::kHttp) return bad("a gRPC target has no path");
    std::string_view path = rest.substr(authority.size());
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    e.base_path = std::string(path);
  }
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '['");
    e.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("junk after ']'");
      port_text = after.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':') != colon) return bad("IPv6 addresses go in brackets: [::1]:PORT");
      port_text = authority.substr(colon + 1);
      authority = authority.substr(0, colon);
    }
    e.host = std::string(authority);
  }
  if (e.host.empty()) return bad("no host");
  e.port = default_port;
  if (!port_text.empty()) {
    int port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port < 1 ||
        port > 65535) {
      return bad("the port must be a number in [1, 65535]");
    }
    e.port = port;
  }
  return e;
}

}  // namespace mamba::client
