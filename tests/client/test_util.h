// Test helpers for the client tools: a scripted HTTP/1.1 server on 127.0.0.1 and running a
// program with a time limit. The real server, sockets and temp dirs come from tests/support/.
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

#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"

namespace mamba::client::testing {

using ::mamba::testing::SendAll;
using ::mamba::testing::ServerProcess;
using ::mamba::testing::TempDir;
using ::mamba::testing::UnusedPort;

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

}  // namespace mamba::client::testing
