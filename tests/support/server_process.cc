#include "tests/support/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "nlohmann/json.hpp"

namespace mamba::testing {

std::string RunCommand(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return "popen failed";
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path BinaryPath(const std::string& name) {
  if (const char* env = std::getenv("MAMBA_SERVER_BIN"); env && *env && name == "mamba-server") {
    return env;
  }
  return fs::read_symlink("/proc/self/exe").parent_path() / name;
}

std::string ServerProcess::FindBinary() {
  std::vector<std::string> candidates = {BinaryPath("mamba-server").string()};
#ifdef MAMBA_BINARY_DIR
  candidates.push_back(std::string(MAMBA_BINARY_DIR) + "/bin/mamba-server");
#endif
  candidates.push_back((SourceDir() / "build/bin/mamba-server").string());
  for (const std::string& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) return c;
  }
  return "";
}

std::unique_ptr<ServerProcess> ServerProcess::Start(std::vector<std::string> args,
                                                    std::chrono::seconds timeout,
                                                    std::string* error) {
  auto fail = [error](const std::string& why) -> std::unique_ptr<ServerProcess> {
    if (error) {
      *error = why;
    } else {
      std::cerr << why << "\n";
    }
    return nullptr;
  };
  const std::string bin = FindBinary();
  if (bin.empty()) {
    return fail("no mamba-server binary (set MAMBA_SERVER_BIN or build build/bin/mamba-server)");
  }
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  const fs::path ready = p->dir_.path() / "ready.json", log = p->dir_.path() / "server.log";
  std::vector<std::string> argv = {bin, "--host", "127.0.0.1", "--ready-file", ready.string()};
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
  p->pid_ = pid;
  const auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (fs::exists(ready)) {
      std::ifstream in(ready);
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded() && j.contains("http_port") && j.contains("grpc_port")) {
        p->http_port_ = j["http_port"].get<int>();
        p->grpc_port_ = j["grpc_port"].get<int>();
        return p;
      }
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      p->pid_ = -1;
      return fail("mamba-server exited before it was ready; log:\n" + p->Log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fail("mamba-server not ready in time; log:\n" + p->Log());  // the destructor kills it
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::string ServerProcess::Log() const {
  std::ifstream in(dir_.path() / "server.log");
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
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
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

}  // namespace mamba::testing
