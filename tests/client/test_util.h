// Test helpers for the client tools: a scripted HTTP/1.1 server on 127.0.0.1, running a
// program with a time limit, and the real mamba-server started on free ports.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mamba::client::testing {

// Writes all of `data` to a socket (best effort; false on error).
bool WriteAll(int fd, const std::string& data);

struct FakeRequest {
  std::string method, path, head, body;
  std::string Header(const std::string& name) const;  // case-insensitive, "" if absent
};

// Accepts connections and hands each request to `handler`, which writes the raw response to
// `fd` (as many writes and pauses as it likes) and returns whether to keep the connection.
class FakeHttpServer {
 public:
  using Handler = std::function<bool(const FakeRequest& request, int fd)>;
  explicit FakeHttpServer(Handler handler);
  ~FakeHttpServer();
  int port() const { return port_; }
  int connections() const { return connections_.load(); }
  int requests() const { return requests_.load(); }

 private:
  void Accept();
  void Serve(int fd);

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0}, requests_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::vector<int> fds_;
};

// "HTTP/1.1 <status> X\r\nContent-Type: <type>\r\nContent-Length: N\r\n\r\n<body>".
std::string Response(int status, const std::string& body,
                     const std::string& type = "application/json",
                     const std::string& extra_headers = "");
// One chunk of a chunked body.
std::string Chunk(const std::string& data);

struct ProcessResult {
  int exit_code = -1;  // -1: killed at the time limit
  std::string out, err;
};

// Runs argv[0] with the arguments, stdin from `input`, for at most `limit`.
ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& input = "",
                         std::chrono::seconds limit = std::chrono::seconds(120));

// The real server, started on free ports with --ready-file, stopped with SIGTERM.
class ServerProcess {
 public:
  // The binary: $MAMBA_SERVER_BIN, else <binary dir>/bin/mamba-server, else
  // <source>/build/bin/mamba-server. Empty when none exists.
  static std::string FindBinary();
  // Starts it with `extra` flags; waits up to 120 s for the ready file. nullptr (with the reason
  // in *error) on failure.
  static std::unique_ptr<ServerProcess> Start(const std::vector<std::string>& extra,
                                              std::string* error);
  ~ServerProcess();  // SIGTERM, then SIGKILL after 30 s

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  std::string http() const { return "http://127.0.0.1:" + std::to_string(http_port_); }
  std::string grpc() const { return "grpc://127.0.0.1:" + std::to_string(grpc_port_); }
  // Stops the server; returns its exit code (-1 if it had to be killed).
  int Stop();
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  int http_port_ = 0, grpc_port_ = 0;
  std::string dir_;
};

// A port nobody listens on (bound, then closed).
int UnusedPort();

// A fresh temporary directory.
std::string TempDir();

}  // namespace mamba::client::testing
