// Test harness for the gRPC front end: an in-process engine over a tiny random model (d_model 32,
// vocab 50280 so that the real GPT-NeoX tokenizer fits) and a GrpcServer on 127.0.0.1, plus
// client helpers. Every wait is bounded.
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

namespace mamba::server::testing {

// The model directory (written once per process) and the tokenizer
// ($MAMBA_SOURCE_DIR/models/gpt-neox-20b/tokenizer.json).
const std::string& TinyModelDir();
std::shared_ptr<const engine::Tokenizer> NeoXTokenizer();

struct ServerSetup {
  int num_slots = 4;
  engine::EngineOptions engine;
  FrontEndOptions front_end;
  bool with_tokenizer = true;
  bool serving = true;  // state.health = kServing before Start
};

class TestServer {
 public:
  // Fails the calling test (and returns null) if anything cannot start.
  static std::unique_ptr<TestServer> Start(const ServerSetup& setup = {});
  ~TestServer();  // shuts the server down (1 s grace), then the engine

  engine::Engine& engine() { return *engine_; }
  GrpcServer& server() { return *server_; }
  ServingState& state() { return state_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  std::shared_ptr<::grpc::Channel> Channel() const;  // insecure
  std::unique_ptr<v1::MambaService::Stub> Stub() const;

  // Waits (bounded) until the engine holds no slot and no request waits.
  bool WaitEngineIdle(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  TestServer() = default;
  std::shared_ptr<const engine::Tokenizer> tokenizer_;
  std::unique_ptr<engine::Engine> engine_;
  ServingState state_;
  std::unique_ptr<GrpcServer> server_;
};

// Polls `done` every few milliseconds until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout);

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
