// Runs the real mamba-server binary for integration tests: ephemeral ports on 127.0.0.1, a
// ready file to learn them, logs to a file, bounded waits, SIGTERM and the exit code.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mamba::testing {

class ServerProcess {
 public:
  // Starts build/bin/mamba-server (MAMBA_SERVER_BIN overrides) with `args` plus host, ports and
  // ready file. Returns nullopt (and says why on stderr) if it does not become ready in time.
  static std::optional<ServerProcess> Start(
      std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(60));
  ServerProcess(ServerProcess&& other) noexcept;
  ~ServerProcess();  // SIGKILL if still running

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  pid_t pid() const { return pid_; }
  std::string Log() const;  // everything the server printed so far

  // Sends SIGTERM and waits (bounded) for the exit; returns the exit code, or -1 on timeout /
  // death by signal.
  int Terminate(std::chrono::seconds timeout = std::chrono::seconds(60));
  bool Running();

  // Resident memory (kB) and open file descriptors of the server process.
  long RssKb() const;
  int OpenFds() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int http_port_ = -1;
  int grpc_port_ = -1;
  std::filesystem::path dir_;
};

// Path of a binary in the build tree (the test binaries live in the same bin/ folder).
std::filesystem::path BinaryPath(const std::string& name);

struct HttpResponse {
  int status = 0;
  std::string headers;  // raw header block
  std::string body;     // de-chunked
};

// One HTTP/1.1 request over a fresh connection to 127.0.0.1:port ("Connection: close"), with a
// deadline. Returns nullopt on connection failure or timeout.
std::optional<HttpResponse> HttpRequest(
    int port, const std::string& method, const std::string& path, const std::string& body = "",
    const std::vector<std::string>& headers = {},
    std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A raw TCP connection to 127.0.0.1:port (for fault tests); -1 on failure. A positive
// `receive_buffer` sets SO_RCVBUF before connecting (a client whose kernel holds little).
int Connect(int port, int receive_buffer = 0);

// The value of an unlabelled Prometheus sample from GET /metrics, or -1.
double Metric(int port, const std::string& name);

// Polls `pred` every 20 ms until it holds or `timeout` passes; returns its last value.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

}  // namespace mamba::testing
