#include "tests/client/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace mamba::client::testing {
namespace fs = std::filesystem;

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string FakeRequest::Header(const std::string& name) const {
  std::istringstream in(head);
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (absl::EqualsIgnoreCase(line.substr(0, colon), name)) {
      return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "";
}

FakeHttpServer::FakeHttpServer(Handler handler) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(listen_fd_, 64);
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  accept_thread_ = std::thread([this] { Accept(); });
}

FakeHttpServer::~FakeHttpServer() {
  stop_ = true;
  accept_thread_.join();
  ::close(listen_fd_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) {
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    }
  }
  for (std::thread& t : threads_) t.join();
}

void FakeHttpServer::Accept() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ++connections_;
    std::lock_guard<std::mutex> lock(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void FakeHttpServer::Serve(int fd) {
  std::string buffer;
  char chunk[65536];
  auto fill = [&]() {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      const int r = ::poll(&p, 1, 20);
      if (r == 0) continue;
      if (r < 0) return false;
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n <= 0) return false;
      buffer.append(chunk, static_cast<size_t>(n));
      return true;
    }
    return false;
  };
  for (;;) {
    size_t end;
    bool alive = true;
    while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) {
        alive = false;
        break;
      }
    }
    if (!alive) break;
    FakeRequest request;
    request.head = buffer.substr(0, end);
    buffer.erase(0, end + 4);
    std::istringstream first(request.head);
    first >> request.method >> request.path;
    const std::string length = request.Header("Content-Length");
    const size_t n = length.empty() ? 0 : std::stoul(length);
    while (buffer.size() < n) {
      if (!fill()) {
        alive = false;
        break;
      }
    }
    if (!alive) break;
    request.body = buffer.substr(0, n);
    buffer.erase(0, n);
    ++requests_;
    if (!handler_(request, fd)) break;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ::shutdown(fd, SHUT_RDWR);
  // The fd is closed here only; the destructor shuts down the ones still open.
  for (int& f : fds_) {
    if (f == fd) f = -1;
  }
  ::close(fd);
}

std::string Response(int status, const std::string& body, const std::string& type,
                     const std::string& extra_headers) {
  return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\n", extra_headers, "\r\n", body);
}

std::string Chunk(const std::string& data) {
  std::ostringstream out;
  out << std::hex << data.size() << "\r\n" << data << "\r\n";
  return out.str();
}

std::string TempDir() {
  char tmpl[] = "/tmp/mamba-client-test-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  return dir ? dir : "/tmp";
}

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits for `pid` until `deadline`; the exit code, or nullopt at the deadline.
std::optional<int> WaitUntil(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& input,
                         std::chrono::seconds limit) {
  const std::string dir = TempDir();
  const std::string in_path = dir + "/stdin", out_path = dir + "/stdout",
                    err_path = dir + "/stderr";
  std::ofstream(in_path, std::ios::binary) << input;
  const pid_t pid = fork();
  if (pid == 0) {
    const int in = ::open(in_path.c_str(), O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  ProcessResult result;
  std::optional<int> code = WaitUntil(pid, std::chrono::steady_clock::now() + limit);
  if (!code) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    result.exit_code = -1;
  } else {
    result.exit_code = *code;
  }
  result.out = ReadFile(out_path);
  result.err = ReadFile(err_path);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return result;
}

std::string ServerProcess::FindBinary() {
  if (const char* env = std::getenv("MAMBA_SERVER_BIN"); env != nullptr && *env) return env;
  std::vector<std::string> candidates;
#ifdef MAMBA_BINARY_DIR
  candidates.push_back(std::string(MAMBA_BINARY_DIR) + "/bin/mamba-server");
#endif
  const char* source = std::getenv("MAMBA_SOURCE_DIR");
  candidates.push_back(std::string(source ? source : ".") + "/build/bin/mamba-server");
  for (const std::string& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
}

std::unique_ptr<ServerProcess> ServerProcess::Start(const std::vector<std::string>& extra,
                                                    std::string* error) {
  const std::string bin = FindBinary();
  if (bin.empty()) {
    *error = "no mamba-server binary (set MAMBA_SERVER_BIN or build build/bin/mamba-server)";
    return nullptr;
  }
  std::unique_ptr<ServerProcess> s(new ServerProcess());
  s->dir_ = TempDir();
  const std::string ready = s->dir_ + "/ready.json", log = s->dir_ + "/server.log";
  std::vector<std::string> argv = {bin,           "--host", "127.0.0.1",    "--http-port", "0",
                                   "--grpc-port", "0",      "--ready-file", ready};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const pid_t pid = fork();
  if (pid == 0) {
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(out, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  s->pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      s->pid_ = -1;
      *error = "mamba-server exited before it was ready:\n" + s->Log();
      return nullptr;
    }
    nlohmann::json j = nlohmann::json::parse(ReadFile(ready), nullptr, false);
    if (j.is_object() && j.contains("http_port") && j.contains("grpc_port")) {
      s->http_port_ = j["http_port"].get<int>();
      s->grpc_port_ = j["grpc_port"].get<int>();
      return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *error = "mamba-server was not ready within 120 s:\n" + s->Log();
  return nullptr;  // the destructor stops it
}

int ServerProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  std::optional<int> code =
      WaitUntil(pid_, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  if (!code) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
  return code.value_or(-1);
}

ServerProcess::~ServerProcess() {
  Stop();
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

std::string ServerProcess::Log() const { return ReadFile(dir_ + "/server.log"); }

int UnusedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

}  // namespace mamba::client::testing
