#include "tests/integration/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "nlohmann/json.hpp"

namespace mamba::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path BinaryPath(const std::string& name) {
  if (const char* env = std::getenv("MAMBA_SERVER_BIN"); env && name == "mamba-server") return env;
  return fs::read_symlink("/proc/self/exe").parent_path() / name;
}

std::optional<ServerProcess> ServerProcess::Start(std::vector<std::string> args,
                                                  std::chrono::seconds timeout) {
  ServerProcess p;
  std::random_device rd;
  p.dir_ = fs::temp_directory_path() / ("mamba-server-" + std::to_string(rd()));
  fs::create_directories(p.dir_);
  const fs::path ready = p.dir_ / "ready.json", log = p.dir_ / "server.log";
  std::vector<std::string> argv = {BinaryPath("mamba-server").string(), "--host", "127.0.0.1",
                                   "--ready-file", ready.string()};
  bool has_http = false, has_grpc = false;
  for (const auto& a : args) {
    has_http |= a == "--http-port";
    has_grpc |= a == "--grpc-port";
  }
  if (!has_http) argv.insert(argv.end(), {"--http-port", "0"});
  if (!has_grpc) argv.insert(argv.end(), {"--grpc-port", "0"});
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = fork();
  if (pid == 0) {
    // The server dies with the test (even a crashed one) and inherits none of its descriptors
    // (a held lock file, the test's own sockets), so its descriptor count is its own.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    close_range(3, ~0U, 0);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  p.pid_ = pid;
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (fs::exists(ready)) {
      std::ifstream in(ready);
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded() && j.contains("http_port")) {
        p.http_port_ = j["http_port"].get<int>();
        p.grpc_port_ = j["grpc_port"].get<int>();
        return p;
      }
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      p.pid_ = -1;
      std::cerr << "mamba-server exited early; log:\n" << p.Log() << "\n";
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::cerr << "mamba-server not ready in time; log:\n" << p.Log() << "\n";
  return std::nullopt;
}

ServerProcess::ServerProcess(ServerProcess&& o) noexcept
    : pid_(o.pid_), http_port_(o.http_port_), grpc_port_(o.grpc_port_), dir_(std::move(o.dir_)) {
  o.pid_ = -1;
  o.dir_.clear();
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::string ServerProcess::Log() const {
  std::ifstream in(dir_ / "server.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool ServerProcess::Running() {
  if (pid_ <= 0) return false;
  int status;
  return waitpid(pid_, &status, WNOHANG) == 0;
}

int ServerProcess::Terminate(std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

long ServerProcess::RssKb() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

int ServerProcess::OpenFds() const {
  int n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec);
       !ec && it != fs::directory_iterator(); ++it) {
    ++n;
  }
  return n;
}

int Connect(int port, int receive_buffer) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (receive_buffer > 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

double Metric(int port, const std::string& name) {
  auto r = HttpRequest(port, "GET", "/metrics", "", {}, std::chrono::seconds(10));
  if (!r || r->status != 200) return -1;
  std::istringstream in(r->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

namespace {

std::string Dechunk(const std::string& body) {
  std::string out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t eol = body.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t len = std::strtoul(body.substr(pos, eol - pos).c_str(), nullptr, 16);
    if (len == 0) break;
    out += body.substr(eol + 2, len);
    pos = eol + 2 + len + 2;
  }
  return out;
}

}  // namespace

std::optional<HttpResponse> HttpRequest(int port, const std::string& method,
                                        const std::string& path, const std::string& body,
                                        const std::vector<std::string>& headers,
                                        std::chrono::milliseconds timeout) {
  const int fd = Connect(port);
  if (fd < 0) return std::nullopt;
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& h : headers) req += h + "\r\n";
  if (!body.empty() || method == "POST") {
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n" + body;
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return std::nullopt;
  }
  std::string raw;
  const auto end = Clock::now() + timeout;
  char buf[65536];
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (left <= 0) {
      close(fd);
      return std::nullopt;
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (split == std::string::npos || raw.size() < 12) return std::nullopt;
  HttpResponse r;
  r.status = std::atoi(raw.c_str() + 9);
  r.headers = raw.substr(0, split);
  r.body = raw.substr(split + 4);
  std::string lower = r.headers;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("transfer-encoding: chunked") != std::string::npos) r.body = Dechunk(r.body);
  return r;
}

}  // namespace mamba::testing
