#include "tests/support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <sstream>

namespace mamba::testing {
namespace {

using Clock = std::chrono::steady_clock;

int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(left.count(), 0));
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

nlohmann::json Response::Json() const { return nlohmann::json::parse(body, nullptr, false); }

std::string Response::Header(const std::string& name) const {
  auto it = headers.find(Lower(name));
  return it == headers.end() ? "" : it->second;
}

int Connect(int port, int receive_buffer) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (receive_buffer > 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::unique_ptr<Connection> Connection::Open(int port, bool tls, int rcvbuf) {
  std::unique_ptr<Connection> c(new Connection());
  c->fd_ = Connect(port, rcvbuf);
  if (c->fd_ < 0) return nullptr;
  int one = 1;
  ::setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (tls) {
    c->ctx_ = SSL_CTX_new(TLS_client_method());
    if (!c->ctx_) return nullptr;
    SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_NONE, nullptr);
    c->ssl_ = SSL_new(c->ctx_);
    SSL_set_fd(c->ssl_, c->fd_);
    if (SSL_connect(c->ssl_) != 1) return nullptr;
  }
  return c;
}

Connection::~Connection() { Close(); }

void Connection::Close() {
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (ctx_) {
    SSL_CTX_free(ctx_);
    ctx_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool Connection::Send(std::string_view bytes) {
  if (!ssl_) return SendAll(fd_, bytes);
  while (!bytes.empty()) {
    const int n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool Connection::Fill(Clock::time_point deadline) {
  if (fd_ < 0 || closed_) return false;
  char tmp[16384];
  for (;;) {
    if (!(ssl_ && SSL_pending(ssl_) > 0)) {
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, MillisLeft(deadline));
      if (r <= 0) return false;  // timeout or error
    }
    const ssize_t n = ssl_ ? SSL_read(ssl_, tmp, sizeof(tmp)) : ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
    if (ssl_ && SSL_get_error(ssl_, static_cast<int>(n)) == SSL_ERROR_WANT_READ) continue;
    closed_ = true;
    return false;
  }
}

bool Connection::Need(size_t n, Clock::time_point deadline) {
  while (buf_.size() < n) {
    if (!Fill(deadline)) return false;
  }
  return true;
}

std::optional<std::string> Connection::Line(Clock::time_point deadline) {
  for (;;) {
    const size_t eol = buf_.find("\r\n");
    if (eol != std::string::npos) {
      std::string line = buf_.substr(0, eol);
      buf_.erase(0, eol + 2);
      return line;
    }
    if (!Fill(deadline)) return std::nullopt;
  }
}

std::optional<Response> Connection::ReadHead(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::optional<std::string> status = Line(deadline);
  if (!status || status->size() < 12 || status->compare(0, 5, "HTTP/") != 0) return std::nullopt;
  Response r;
  r.status = std::atoi(status->c_str() + 9);
  for (;;) {
    std::optional<std::string> line = Line(deadline);
    if (!line) return std::nullopt;
    if (line->empty()) break;
    const size_t colon = line->find(':');
    if (colon == std::string::npos) return std::nullopt;
    std::string value = line->substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    r.headers[Lower(line->substr(0, colon))] = value;
  }
  return r;
}

std::optional<std::string> Connection::ReadBodySome(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::optional<std::string> size_line = Line(deadline);
  if (!size_line) return std::nullopt;
  const size_t size = std::strtoul(size_line->c_str(), nullptr, 16);
  if (!Need(size + 2, deadline)) return std::nullopt;
  std::string data = buf_.substr(0, size);
  buf_.erase(0, size + 2);
  if (size == 0) return std::nullopt;  // the last chunk
  return data;
}

std::optional<Response> Connection::Read(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::optional<Response> r;
  // Interim 1xx responses (100 Continue) come before the real one.
  do {
    r = ReadHead(timeout);
    if (!r) return std::nullopt;
  } while (r->status >= 100 && r->status < 200);
  if (Lower(r->Header("transfer-encoding")) == "chunked") {
    for (;;) {
      std::optional<std::string> size_line = Line(deadline);
      if (!size_line) return std::nullopt;
      const size_t size = std::strtoul(size_line->c_str(), nullptr, 16);
      if (!Need(size + 2, deadline)) return std::nullopt;
      r->body += buf_.substr(0, size);
      buf_.erase(0, size + 2);
      if (size == 0) return r;
    }
  }
  if (std::string len = r->Header("content-length"); !len.empty()) {
    const size_t n = std::strtoul(len.c_str(), nullptr, 10);
    if (!Need(n, deadline)) return std::nullopt;
    r->body = buf_.substr(0, n);
    buf_.erase(0, n);
    return r;
  }
  while (Fill(deadline)) {
  }
  if (!closed_) return std::nullopt;  // timed out before the close
  r->body = std::move(buf_);
  buf_.clear();
  return r;
}

bool Connection::WaitClosed(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    buf_.clear();
    if (!Fill(deadline)) return closed_;
  }
  return closed_;
}

std::string RawRequest(std::string_view method, std::string_view path, std::string_view body,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string r =
      std::string(method) + " " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (!body.empty() || method == "POST") {
    r +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  for (const auto& [name, value] : headers) r += name + ": " + value + "\r\n";
  r += "\r\n";
  r += body;
  return r;
}

std::optional<Response> Call(int port, std::string_view method, std::string_view path,
                             std::string_view body,
                             const std::vector<std::pair<std::string, std::string>>& headers,
                             bool tls) {
  std::unique_ptr<Connection> c = Connection::Open(port, tls);
  if (!c || !c->Send(RawRequest(method, path, body, headers))) return std::nullopt;
  return c->Read();
}

std::optional<Response> PostJson(int port, std::string_view path, const nlohmann::json& body,
                                 const std::vector<std::pair<std::string, std::string>>& headers) {
  return Call(port, "POST", path, body.dump(), headers);
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::string_view event(body.data() + pos, end - pos);
    if (event.substr(0, 6) == "data: ") out.emplace_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

std::optional<Response> HttpRequest(int port, const std::string& method, const std::string& path,
                                    const std::string& body,
                                    const std::vector<std::string>& headers,
                                    std::chrono::milliseconds timeout) {
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& h : headers) req += h + "\r\n";
  if (!body.empty() || method == "POST") {
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n" + body;
  std::unique_ptr<Connection> c = Connection::Open(port);
  if (!c || !c->Send(req)) return std::nullopt;
  return c->Read(timeout);
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

double Metric(int port, const std::string& name) {
  std::optional<Response> r =
      HttpRequest(port, "GET", "/metrics", "", {}, std::chrono::seconds(10));
  if (!r || r->status != 200) return -1;
  return MetricValue(r->body, name);
}

}  // namespace mamba::testing
