// Test harness for the HTTP front end: an in-process engine over a tiny random model (d_model
// 32, vocab 50280 so that the real GPT-NeoX tokenizer fits), Metrics as its observer, and an
// HttpServer on 127.0.0.1 port 0. Every wait is bounded.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/http/http_server.h"
#include "server/metrics.h"
#include "server/serving_state.h"
#include "tests/server/http/http_test_client.h"

namespace mamba::server::http_testing {

inline constexpr char kModelName[] = "mamba-tiny";

// The tokenizer ($MAMBA_SOURCE_DIR/models/gpt-neox-20b/tokenizer.json), loaded once.
std::shared_ptr<const engine::Tokenizer> NeoXTokenizer();

struct ServerSetup {
  int num_slots = 4;
  engine::EngineOptions engine;
  FrontEndOptions front_end;
  bool with_tokenizer = true;
};

class HttpTestServer {
 public:
  // Fails the calling test (and returns null) if anything cannot start.
  static std::unique_ptr<HttpTestServer> Start(const ServerSetup& setup = {});
  ~HttpTestServer();  // the server first, then the engine, then the metrics

  int port() const { return server_->port(); }
  engine::Engine& engine() { return *engine_; }
  HttpServer& server() { return *server_; }
  ServingState& state() { return state_; }
  Metrics& metrics() { return *metrics_; }
  const engine::Tokenizer& tokenizer() const { return *tokenizer_; }

  // Shuts the HTTP server down and destroys it, leaving the engine running.
  void DestroyServer() { server_.reset(); }

  // Waits until the engine holds no slot and no request waits.
  bool WaitEngineIdle(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  HttpTestServer() = default;
  std::unique_ptr<Metrics> metrics_;
  std::shared_ptr<const engine::Tokenizer> tokenizer_;
  std::unique_ptr<engine::Engine> engine_;
  ServingState state_;
  std::unique_ptr<HttpServer> server_;
};

// Polls `done` every few milliseconds until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// The value of a sample line `name{labels} value` in Prometheus text (-1 when absent).
double MetricValue(const std::string& text, const std::string& series);

}  // namespace mamba::server::http_testing
