// A small blocking HTTP/1.1 client on POSIX sockets: one keep-alive connection to one server,
// plain or TLS (https://, the server's certificate always verified), Content-Length, chunked and
// close-delimited bodies, a response body streamed to a callback as it arrives (for SSE), a
// deadline per call, and cancellation from another thread. No proxies, no redirects: it talks
// only to the address it is given.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/byte_stream.h"
#include "client/cancel.h"

namespace mamba::client {

using Clock = std::chrono::steady_clock;

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpCall {
  std::string method = "GET";
  std::string path = "/";  // origin-form target, starting with '/'
  std::string body;        // sent with Content-Length when non-empty or the method is POST/PUT
  std::vector<HttpHeader> headers;  // besides Host, Content-Length, User-Agent, Accept
  Clock::time_point deadline = Clock::time_point::max();  // for the whole call
  // When set, the (de-chunked) body of a 2xx response goes here as it arrives instead of into
  // HttpResult::body; return false to stop early (the connection is then closed). Error
  // responses are always collected so that their message can be read.
  std::function<bool(std::string_view)> on_body;
  CancelToken* cancel = nullptr;  // Cancel() aborts the call (status CANCELLED, kind "cancelled")
};

struct HttpResult {
  int status = 0;
  std::vector<HttpHeader> headers;
  std::string body;
  // The first header of that name (case-insensitive), or "".
  std::string Header(std::string_view name) const;
};

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{10000};  // TCP connect plus the TLS handshake
  size_t max_body_bytes = size_t{256} << 20;  // a collected body larger than this is an error
  TlsOptions tls;                             // tls.enabled: HTTPS
};

// Not thread-safe except for cancellation through HttpCall::cancel: one call at a time.
class HttpClient {
 public:
  HttpClient(std::string host, int port, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends the call and reads the whole response. Transport failures are errors with kinds
  // "connect", "tls" (a failed handshake: the certificate refused, no TLS on the port; or a TLS
  // error later), "timeout", "connection_closed", "protocol", "cancelled"; an HTTP error status is
  // NOT an error here (the caller reads HttpResult::status). A reused keep-alive connection that
  // the server closed while idle is replaced and the call retried once, when no byte of the
  // response had arrived.
  absl::StatusOr<HttpResult> Send(const HttpCall& call);

  void Close();
  int connections_opened() const { return connections_opened_; }
  const std::string& host() const { return host_; }
  int port() const { return port_; }

 private:
  enum class ReadResult { kData, kEof, kError };

  absl::Status Connect(Clock::time_point deadline);
  // The byte stream over the connected fd_: plain, or TLS after a handshake.
  absl::Status StartStream(Clock::time_point deadline);
  // Waits until the socket can be read (or written); false when the deadline passed first.
  absl::StatusOr<bool> WaitReady(bool write, Clock::time_point deadline);
  absl::StatusOr<HttpResult> SendOnce(const HttpCall& call, bool* nothing_received);
  absl::Status WriteAll(std::string_view data, Clock::time_point deadline);
  // Appends what arrives to buffer_; waits until the deadline.
  absl::StatusOr<ReadResult> Fill(Clock::time_point deadline);
  absl::Status ReadHead(HttpResult* result, Clock::time_point deadline, bool* keep_alive,
                        bool* nothing_received);
  absl::Status ReadBody(const HttpCall& call, HttpResult* result, bool* keep_alive);
  absl::Status ReadChunked(const HttpCall& call, const std::function<bool(std::string_view)>& sink,
                           bool* stopped);
  absl::Status TransportError(std::string_view what, int err);
  absl::Status StreamError(std::string_view what, const Io& io);  // a socket or TLS failure
  void AbortSocket();

  std::string host_;
  int port_;
  HttpClientOptions options_;
  std::mutex mu_;  // guards fd_ against AbortSocket from another thread
  int fd_ = -1;
  std::unique_ptr<ByteStream> stream_;  // over fd_, from StartStream
  std::shared_ptr<TlsContext> tls_;     // made at the first HTTPS connection, kept for the next
  bool aborted_ = false;                // AbortSocket ran during the current call
  std::string buffer_;                  // received, not yet consumed bytes
  int connections_opened_ = 0;
};

}  // namespace mamba::client
