// Test harness for the gRPC front end: the in-process serving stack (tests/support/) behind a
// GrpcServer on 127.0.0.1, plus client helpers. Every wait is bounded.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "mamba/v1/mamba.grpc.pb.h"
#include "server/grpc/grpc_server.h"
#include "server/serving_state.h"
#include "tests/support/serving_harness.h"
#include "tests/support/wait_for.h"

namespace mamba::server::testing {

using ::mamba::testing::NeoXTokenizer;
using ::mamba::testing::WaitFor;

struct ServerSetup {
  int num_slots = 4;
  engine::EngineOptions engine;
  FrontEndOptions front_end;
  bool with_tokenizer = true;
  bool serving = true;          // state.health = kServing before Start
  bool perturbed_model = true;  // false: the other tiny model (tests/support/serving_harness.h)
};

class TestServer {
 public:
  // Fails the calling test (and returns null) if anything cannot start.
  static std::unique_ptr<TestServer> Start(const ServerSetup& setup = {});
  ~TestServer();  // shuts the server down (1 s grace), then the engine

  engine::Engine& engine() { return serving_->engine(); }
  GrpcServer& server() { return *server_; }
  ServingState& state() { return serving_->state(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  std::shared_ptr<::grpc::Channel> Channel() const;  // insecure
  std::unique_ptr<v1::MambaService::Stub> Stub() const;

  // Waits (bounded) until the engine holds no slot and no request waits.
  bool WaitEngineIdle(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    return serving_->WaitEngineIdle(timeout);
  }

 private:
  TestServer() = default;
  std::unique_ptr<::mamba::testing::ServingHarness> serving_;
  std::unique_ptr<GrpcServer> server_;
};

// A client context with a deadline (default 60 s: no test call may hang).
std::unique_ptr<::grpc::ClientContext> Context(
    std::chrono::milliseconds deadline = std::chrono::seconds(60));

// Greedy request for `max_new_tokens` tokens of `text` that never stops early.
v1::GenerateRequest GreedyRequest(const std::string& text, int max_new_tokens);

// Everything one GenerateStream call returned.
struct StreamResult {
  std::vector<v1::GenerateStreamResponse> messages;
  ::grpc::Status status;
  // Per completion index: the concatenated text, the token ids, the end message count.
  std::string Text(int index) const;
  std::vector<int32_t> TokenIds(int index) const;
  int Ends(int index) const;
};
StreamResult ReadStream(v1::MambaService::Stub& stub, const v1::GenerateRequest& request,
                        ::grpc::ClientContext* context);

std::vector<int32_t> Ids(const v1::Completion& c);

}  // namespace mamba::server::testing
