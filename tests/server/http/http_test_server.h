// Test harness for the HTTP front end: the in-process serving stack (tests/support/), Metrics as
// its observer, and an HttpServer on 127.0.0.1 port 0, driven by the raw-socket client of
// tests/support/http_client.h. Every wait is bounded.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/http/http_server.h"
#include "server/metrics.h"
#include "server/serving_state.h"
#include "tests/support/http_client.h"
#include "tests/support/serving_harness.h"
#include "tests/support/wait_for.h"

namespace mamba::server::http_testing {

using ::mamba::testing::Call;
using ::mamba::testing::Connection;
using ::mamba::testing::MetricValue;
using ::mamba::testing::NeoXTokenizer;
using ::mamba::testing::PostJson;
using ::mamba::testing::RawRequest;
using ::mamba::testing::Response;
using ::mamba::testing::SseData;
using ::mamba::testing::WaitFor;
using namespace std::chrono_literals;

inline constexpr char kModelName[] = "mamba-tiny";

struct ServerSetup {
  int num_slots = 4;
  engine::EngineOptions engine;
  FrontEndOptions front_end;
  bool with_tokenizer = true;
  bool perturbed_model = false;  // another model (tests/support/serving_harness.h TinyModel)
  std::vector<std::string> served_model_names;  // ServingState's (empty: kModelName alone)
  bool strict_model_name = false;
  engine::GenerationDefaults generation_defaults;  // the model's sampling defaults
};

class HttpTestServer {
 public:
  // Fails the calling test (and returns null) if anything cannot start.
  static std::unique_ptr<HttpTestServer> Start(const ServerSetup& setup = {});
  ~HttpTestServer();  // the server first, then the engine, then the metrics

  int port() const { return server_->port(); }
  engine::Engine& engine() { return serving_->engine(); }
  HttpServer& server() { return *server_; }
  ServingState& state() { return serving_->state(); }
  Metrics& metrics() { return *metrics_; }
  const engine::Tokenizer& tokenizer() const { return serving_->tokenizer(); }

  // Shuts the HTTP server down and destroys it, leaving the engine running.
  void DestroyServer() { server_.reset(); }

  // Waits until the engine holds no slot and no request waits.
  bool WaitEngineIdle(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    return serving_->WaitEngineIdle(timeout);
  }

 private:
  HttpTestServer() = default;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<::mamba::testing::ServingHarness> serving_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace mamba::server::http_testing
