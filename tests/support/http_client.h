// The tests' one raw-socket HTTP/1.1 client (in-process front-end tests and the real server
// alike): raw sockets (optionally OpenSSL), every read bounded by a timeout, chunked bodies
// decoded, SSE events split, Prometheus samples read.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace mamba::testing {

using namespace std::chrono_literals;

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  nlohmann::json Json() const;  // discarded value when not JSON
  std::string Header(const std::string& name) const;
};

// A raw TCP connection to 127.0.0.1:port (for fault tests); -1 on failure. A positive
// `receive_buffer` sets SO_RCVBUF before connecting (a client whose kernel holds little).
int Connect(int port, int receive_buffer = 0);

// Writes all of `data` to a socket; false on error.
bool SendAll(int fd, std::string_view data);

class Connection {
 public:
  // Connects to 127.0.0.1:port (TLS when `tls` is set, without verifying the certificate).
  // `rcvbuf` > 0 shrinks the socket's receive buffer (to make a slow reader). Null on failure.
  static std::unique_ptr<Connection> Open(int port, bool tls = false, int rcvbuf = 0);
  ~Connection();

  bool Send(std::string_view bytes);
  // One whole response: head, then a Content-Length, chunked or until-close body.
  std::optional<Response> Read(std::chrono::milliseconds timeout = 30s);
  // Only the status line and headers (the body is left for ReadBodySome).
  std::optional<Response> ReadHead(std::chrono::milliseconds timeout = 30s);
  // Some decoded body bytes of a chunked response; nullopt at its end, on timeout or error.
  std::optional<std::string> ReadBodySome(std::chrono::milliseconds timeout = 30s);
  // Whether the peer closed the connection within `timeout` (reads and drops data meanwhile).
  bool WaitClosed(std::chrono::milliseconds timeout);
  void Close();

 private:
  Connection() = default;
  // Appends received bytes to buf_; false on timeout, error or close.
  bool Fill(std::chrono::steady_clock::time_point deadline);
  std::optional<std::string> Line(std::chrono::steady_clock::time_point deadline);
  bool Need(size_t n, std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
  bool closed_ = false;
};

// "METHOD path HTTP/1.1" with Host, Content-Length (when a body is given) and extra headers.
std::string RawRequest(std::string_view method, std::string_view path, std::string_view body = "",
                       const std::vector<std::pair<std::string, std::string>>& headers = {});

// One request on a fresh connection.
std::optional<Response> Call(int port, std::string_view method, std::string_view path,
                             std::string_view body = "",
                             const std::vector<std::pair<std::string, std::string>>& headers = {},
                             bool tls = false);
std::optional<Response> PostJson(
    int port, std::string_view path, const nlohmann::json& body,
    const std::vector<std::pair<std::string, std::string>>& headers = {});

// The payloads of an SSE body's `data: ` lines, in order.
std::vector<std::string> SseData(const std::string& body);

// One request on a fresh connection with "Connection: close" and raw "Name: value" headers,
// bounded by `timeout`. Nullopt on connection failure or timeout.
std::optional<Response> HttpRequest(int port, const std::string& method, const std::string& path,
                                    const std::string& body = "",
                                    const std::vector<std::string>& headers = {},
                                    std::chrono::milliseconds timeout = 60s);

// The value of a sample line `series value` in Prometheus text (-1 when absent).
double MetricValue(const std::string& text, const std::string& series);
// The value of an unlabelled sample from GET /metrics on 127.0.0.1:port, or -1.
double Metric(int port, const std::string& name);

}  // namespace mamba::testing
