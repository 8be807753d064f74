// Runs the real mamba-server binary for the integration and client tests: ephemeral ports on
// 127.0.0.1, a ready file to learn them, logs to a file, bounded waits, SIGTERM and the exit code.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace mamba::testing {

// Runs `cmd` through the shell, stdout and stderr together; *status gets pclose's wait status.
std::string RunCommand(const std::string& cmd, int* status);

class ServerProcess {
 public:
  // The binary: $MAMBA_SERVER_BIN, else mamba-server beside the test binary, else
  // <binary dir>/bin/mamba-server, else <source>/build/bin/mamba-server. Empty when none exists.
  static std::string FindBinary();

  // Starts the binary with `args` plus host, ports (0 unless `args` name them) and ready file.
  // Null if it does not become ready within `timeout`; the reason (with the server's log) goes to
  // *error when given, else to stderr. The server dies with the test and inherits none of its
  // descriptors.
  static std::unique_ptr<ServerProcess> Start(
      std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(60),
      std::string* error = nullptr);
  ~ServerProcess();  // SIGKILL if still running

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  std::string http() const { return "http://127.0.0.1:" + std::to_string(http_port_); }
  std::string grpc() const { return "grpc://127.0.0.1:" + std::to_string(grpc_port_); }
  pid_t pid() const { return pid_; }
  std::string Log() const;  // everything the server printed so far

  // Sends SIGTERM and waits (bounded) for the exit; returns the exit code, or -1 on timeout
  // (the process is then killed) or death by a signal.
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
  TempDir dir_;
};

// Path of a binary in the build tree (the test binaries live in the same bin/ folder).
std::filesystem::path BinaryPath(const std::string& name);

// A port nobody listens on (bound, then closed).
int UnusedPort();

}  // namespace mamba::testing
