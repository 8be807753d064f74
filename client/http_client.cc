#include "client/http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/errors.h"
#include "client/strings.h"
#include "engine/status_macros.h"

namespace mamba::client {
namespace {

constexpr size_t kMaxHeadBytes = 64 * 1024;

// Milliseconds left for poll(): -1 = no deadline, 0 = passed.
int RemainingMs(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left, INT_MAX));
}

std::string Authority(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
}

bool HasHeader(const std::vector<HttpHeader>& headers, std::string_view name) {
  for (const HttpHeader& h : headers) {
    if (absl::EqualsIgnoreCase(h.name, AV(name))) return true;
  }
  return false;
}

}  // namespace

std::string HttpResult::Header(std::string_view name) const {
  for (const HttpHeader& h : headers) {
    if (absl::EqualsIgnoreCase(h.name, AV(name))) return h.value;
  }
  return "";
}

HttpClient::HttpClient(std::string host, int port, HttpClientOptions options)
    : host_(std::move(host)), port_(port), options_(options) {}

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_) stream_->Shutdown();
  stream_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
}

void HttpClient::AbortSocket() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);  // wakes a blocked poll; the call thread closes
}

absl::Status HttpClient::TransportError(std::string_view what, int err) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
  }
  const std::string where = Authority(host_, port_);
  if (err == ECONNRESET || err == EPIPE || err == 0) {
    return WithKind(absl::UnavailableError(
                        absl::StrCat(where, ": the server closed the connection (", AV(what), ")")),
                    "connection_closed");
  }
  return WithKind(
      absl::UnavailableError(absl::StrCat(where, ": ", AV(what), ": ", std::strerror(err))),
      "connection_closed");
}

absl::Status HttpClient::StreamError(std::string_view what, const Io& io) {
  if (io.message.empty()) return TransportError(what, io.err);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
  }
  return WithKind(absl::UnavailableError(absl::StrCat(Authority(host_, port_), ": TLS error (",
                                                      AV(what), "): ", io.message)),
                  "tls");
}

absl::StatusOr<bool> HttpClient::WaitReady(bool write, Clock::time_point deadline) {
  for (;;) {
    const int ms = RemainingMs(deadline);
    if (ms == 0) return false;
    pollfd p{fd_, static_cast<short>(write ? POLLOUT : POLLIN), 0};
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return TransportError("poll", errno);
  }
}

absl::Status HttpClient::StartStream(Clock::time_point deadline) {
  if (!options_.tls.enabled) {
    stream_ = MakePlainStream(fd_);
    return absl::OkStatus();
  }
  if (!tls_) {
    MAMBA_ASSIGN_OR_RETURN(tls_, TlsContext::Create(options_.tls));
  }
  const std::string& name = options_.tls.server_name.empty() ? host_ : options_.tls.server_name;
  MAMBA_ASSIGN_OR_RETURN(stream_, tls_->Wrap(fd_, name));
  const std::string where = Authority(host_, port_);
  for (;;) {
    const Io io = stream_->Handshake();
    if (io.status == Io::kDone) return absl::OkStatus();
    if (io.status == Io::kWantRead || io.status == Io::kWantWrite) {
      MAMBA_ASSIGN_OR_RETURN(bool ready, WaitReady(io.status == Io::kWantWrite, deadline));
      if (!ready) {
        return WithKind(absl::DeadlineExceededError(
                            absl::StrCat(where, ": the TLS handshake did not complete in time")),
                        "timeout");
      }
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_) return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
    }
    return WithKind(absl::UnavailableError(absl::StrCat(
                        where, ": TLS handshake failed: ", stream_->DescribeFailure(io))),
                    "tls");
  }
}

absl::Status HttpClient::Connect(Clock::time_point deadline) {
  deadline = std::min(deadline, Clock::now() + options_.connect_timeout);
  const std::string where = Authority(host_, port_);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = absl::StrCat(port_);
  if (int rc = getaddrinfo(host_.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return WithKind(
        absl::UnavailableError(absl::StrCat("cannot resolve ", host_, ": ", gai_strerror(rc))),
        "connect");
  }
  int last_err = ECONNREFUSED;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_err = errno;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_) {
        ::close(fd);
        freeaddrinfo(found);
        return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
      }
      fd_ = fd;
    }
    int err = 0;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        const int r = ::poll(&p, 1, RemainingMs(deadline));
        if (r == 0) {
          err = ETIMEDOUT;
        } else {
          socklen_t len = sizeof(err);
          err = 0;
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        }
      }
    }
    if (err == 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      ++connections_opened_;
      freeaddrinfo(found);
      absl::Status started = StartStream(deadline);
      if (!started.ok()) Close();
      return started;
    }
    last_err = err;
    std::lock_guard<std::mutex> lock(mu_);
    ::close(fd);
    fd_ = -1;
  }
  freeaddrinfo(found);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
  }
  return WithKind(absl::UnavailableError(
                      absl::StrCat("cannot connect to ", where, ": ", std::strerror(last_err))),
                  "connect");
}

absl::Status HttpClient::WriteAll(std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const Io io = stream_->Write(data.data(), data.size());
    if (io.status == Io::kDone) {
      data.remove_prefix(io.bytes);
      continue;
    }
    if (io.status == Io::kWantRead || io.status == Io::kWantWrite) {  // TLS may need to read
      MAMBA_ASSIGN_OR_RETURN(bool ready, WaitReady(io.status == Io::kWantWrite, deadline));
      if (!ready) break;
      continue;
    }
    return StreamError("send", io);  // kEof: the server ended the TLS session
  }
  if (!data.empty()) {
    return WithKind(absl::DeadlineExceededError(
                        absl::StrCat(Authority(host_, port_), ": timed out sending the request")),
                    "timeout");
  }
  return absl::OkStatus();
}

absl::StatusOr<HttpClient::ReadResult> HttpClient::Fill(Clock::time_point deadline) {
  auto timed_out = [&] {
    return WithKind(absl::DeadlineExceededError(absl::StrCat(
                        Authority(host_, port_), ": no complete answer within the deadline")),
                    "timeout");
  };
  // Checked before reading, so that a server that never stops sending still meets the deadline.
  if (RemainingMs(deadline) == 0) return timed_out();
  char chunk[64 * 1024];
  for (;;) {
    // Read first, wait after: TLS may hold decrypted bytes that poll() cannot see.
    const Io io = stream_->Read(chunk, sizeof(chunk));
    switch (io.status) {
      case Io::kDone:
        buffer_.append(chunk, io.bytes);
        return ReadResult::kData;
      case Io::kEof: {
        std::lock_guard<std::mutex> lock(mu_);
        if (aborted_) return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
        return ReadResult::kEof;
      }
      case Io::kWantRead:
      case Io::kWantWrite: {
        MAMBA_ASSIGN_OR_RETURN(bool ready, WaitReady(io.status == Io::kWantWrite, deadline));
        if (!ready) return timed_out();
        continue;
      }
      case Io::kError:
        return StreamError("recv", io);
    }
  }
}

absl::Status HttpClient::ReadHead(HttpResult* result, Clock::time_point deadline, bool* keep_alive,
                                  bool* nothing_received) {
  for (;;) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (buffer_.size() > kMaxHeadBytes) {
        return WithKind(absl::InternalError("the response head is over 64 KiB"), "protocol");
      }
      MAMBA_ASSIGN_OR_RETURN(ReadResult r, Fill(deadline));
      if (r == ReadResult::kEof) return TransportError("before a complete response head", 0);
      *nothing_received = false;
    }
    absl::string_view head(buffer_.data(), end);
    const size_t line_end = head.find("\r\n");
    absl::string_view status_line = head.substr(0, line_end);
    // "HTTP/1.1 200 OK"
    int status = 0;
    const bool http10 = absl::StartsWith(status_line, "HTTP/1.0 ");
    if (!absl::StartsWith(status_line, "HTTP/1.") || status_line.size() < 12 ||
        !absl::SimpleAtoi(status_line.substr(9, 3), &status)) {
      return WithKind(absl::InternalError(absl::StrCat("not an HTTP/1.x response: '",
                                                       status_line.substr(0, 60), "'")),
                      "protocol");
    }
    result->status = status;
    result->headers.clear();
    absl::string_view rest = line_end == absl::string_view::npos ? "" : head.substr(line_end + 2);
    while (!rest.empty()) {
      const size_t eol = rest.find("\r\n");
      absl::string_view line = rest.substr(0, eol);
      rest = eol == absl::string_view::npos ? "" : rest.substr(eol + 2);
      const size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      result->headers.push_back({std::string(absl::StripAsciiWhitespace(line.substr(0, colon))),
                                 std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)))});
    }
    buffer_.erase(0, end + 4);
    if (status >= 100 && status < 200) continue;  // 100 Continue and friends: the real head follows
    const std::string connection = absl::AsciiStrToLower(result->Header("Connection"));
    *keep_alive = http10 ? absl::StrContains(connection, "keep-alive")
                         : !absl::StrContains(connection, "close");
    return absl::OkStatus();
  }
}

absl::Status HttpClient::ReadChunked(const HttpCall& call,
                                     const std::function<bool(std::string_view)>& sink,
                                     bool* stopped) {
  auto need = [&](size_t bytes) -> absl::Status {
    while (buffer_.size() < bytes) {
      MAMBA_ASSIGN_OR_RETURN(ReadResult r, Fill(call.deadline));
      if (r == ReadResult::kEof) return TransportError("in the middle of a chunked body", 0);
    }
    return absl::OkStatus();
  };
  auto read_line = [&](std::string* line) -> absl::Status {
    size_t eol;
    while ((eol = buffer_.find("\r\n")) == std::string::npos) {
      if (buffer_.size() > 8192)
        return WithKind(absl::InternalError("a chunk line is too long"), "protocol");
      MAMBA_RETURN_IF_ERROR(need(buffer_.size() + 1));
    }
    line->assign(buffer_, 0, eol);
    buffer_.erase(0, eol + 2);
    return absl::OkStatus();
  };
  for (;;) {
    std::string line;
    MAMBA_RETURN_IF_ERROR(read_line(&line));
    absl::string_view size_text = line;
    size_text = size_text.substr(0, size_text.find(';'));
    size_text = absl::StripAsciiWhitespace(size_text);
    uint64_t size = 0;
    auto [ptr, ec] =
        std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (ec != std::errc() || ptr != size_text.data() + size_text.size()) {
      return WithKind(absl::InternalError(absl::StrCat("bad chunk size '", line, "'")), "protocol");
    }
    if (size == 0) {  // trailers, then an empty line
      do {
        MAMBA_RETURN_IF_ERROR(read_line(&line));
      } while (!line.empty());
      return absl::OkStatus();
    }
    while (size > 0) {
      if (buffer_.empty()) MAMBA_RETURN_IF_ERROR(need(1));
      const size_t n = static_cast<size_t>(std::min<uint64_t>(size, buffer_.size()));
      if (!sink(std::string_view(buffer_.data(), n))) {
        *stopped = true;
        return absl::OkStatus();
      }
      buffer_.erase(0, n);
      size -= n;
    }
    MAMBA_RETURN_IF_ERROR(need(2));
    if (buffer_.compare(0, 2, "\r\n") != 0) {
      return WithKind(absl::InternalError("a chunk does not end with CRLF"), "protocol");
    }
    buffer_.erase(0, 2);
  }
}

absl::Status HttpClient::ReadBody(const HttpCall& call, HttpResult* result, bool* keep_alive) {
  const int status = result->status;
  if (call.method == "HEAD" || status == 204 || status == 304) return absl::OkStatus();
  bool too_big = false;
  const bool streaming = call.on_body && status / 100 == 2;
  std::function<bool(std::string_view)> collect = [&](std::string_view data) {
    if (result->body.size() + data.size() > options_.max_body_bytes) {
      too_big = true;
      return false;
    }
    result->body.append(data);
    return true;
  };
  const std::function<bool(std::string_view)>& sink = streaming ? call.on_body : collect;
  bool stopped = false;
  const std::string encoding = absl::AsciiStrToLower(result->Header("Transfer-Encoding"));
  const std::string length_text = result->Header("Content-Length");
  if (absl::StrContains(encoding, "chunked")) {
    MAMBA_RETURN_IF_ERROR(ReadChunked(call, sink, &stopped));
  } else if (!length_text.empty()) {
    uint64_t left = 0;
    if (!absl::SimpleAtoi(length_text, &left)) {
      return WithKind(absl::InternalError(absl::StrCat("bad Content-Length '", length_text, "'")),
                      "protocol");
    }
    while (left > 0 && !stopped) {
      if (buffer_.empty()) {
        MAMBA_ASSIGN_OR_RETURN(ReadResult r, Fill(call.deadline));
        if (r == ReadResult::kEof) return TransportError("before the end of the body", 0);
      }
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buffer_.size()));
      stopped = !sink(std::string_view(buffer_.data(), n));
      buffer_.erase(0, n);
      left -= n;
    }
  } else {  // delimited by the end of the connection
    *keep_alive = false;
    for (;;) {
      if (!buffer_.empty()) {
        stopped = !sink(buffer_);
        buffer_.clear();
        if (stopped) break;
      }
      MAMBA_ASSIGN_OR_RETURN(ReadResult r, Fill(call.deadline));
      if (r == ReadResult::kEof) break;
    }
  }
  if (too_big) {
    return WithKind(absl::ResourceExhaustedError(absl::StrCat("the response body is over ",
                                                              options_.max_body_bytes, " bytes")),
                    "protocol");
  }
  if (stopped) *keep_alive = false;
  return absl::OkStatus();
}

absl::StatusOr<HttpResult> HttpClient::SendOnce(const HttpCall& call, bool* nothing_received) {
  *nothing_received = true;
  if (fd_ < 0) MAMBA_RETURN_IF_ERROR(Connect(call.deadline));
  buffer_.clear();
  std::string request =
      absl::StrCat(call.method, " ", call.path, " HTTP/1.1\r\nHost: ", Authority(host_, port_),
                   "\r\nUser-Agent: mamba-client/0.1\r\n");
  if (!HasHeader(call.headers, "Accept")) request += "Accept: */*\r\n";
  for (const HttpHeader& h : call.headers) absl::StrAppend(&request, h.name, ": ", h.value, "\r\n");
  if (!call.body.empty() || call.method == "POST" || call.method == "PUT" ||
      call.method == "PATCH") {
    absl::StrAppend(&request, "Content-Length: ", call.body.size(), "\r\n");
  }
  request += "\r\n";
  request += call.body;
  MAMBA_RETURN_IF_ERROR(WriteAll(request, call.deadline));
  HttpResult result;
  bool keep_alive = true;
  MAMBA_RETURN_IF_ERROR(ReadHead(&result, call.deadline, &keep_alive, nothing_received));
  MAMBA_RETURN_IF_ERROR(ReadBody(call, &result, &keep_alive));
  if (!keep_alive) Close();
  return result;
}

absl::StatusOr<HttpResult> HttpClient::Send(const HttpCall& call) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = false;
  }
  ScopedCancelHandler handler(call.cancel, [this] { AbortSocket(); });
  if (!handler.installed()) {
    return WithKind(absl::CancelledError("cancelled before it was sent"), "cancelled");
  }
  const bool reused = fd_ >= 0;
  bool nothing_received = true;
  absl::StatusOr<HttpResult> result = SendOnce(call, &nothing_received);
  if (!result.ok() && reused && nothing_received &&
      ErrorKind(result.status()) == "connection_closed") {
    Close();  // the server closed the idle connection: one retry on a fresh one
    result = SendOnce(call, &nothing_received);
  }
  if (!result.ok()) Close();
  return result;
}

}  // namespace mamba::client
