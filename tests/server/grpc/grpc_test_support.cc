#include "tests/server/grpc/grpc_test_support.h"

#include <thread>

#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"

namespace mamba::server::testing {

using engine::testing::SourceDir;
using engine::testing::TempDir;

const std::string& TinyModelDir() {
  static TempDir* dir = new TempDir();  // leaked on purpose: outlives every test
  static const std::string path = [] {
    engine::RandomCheckpointOptions o;
    o.config = engine::testing::SmallConfig();
    o.config.vocab_size = 50280;
    o.config.num_hidden_layers = 1;
    o.seed = 7;
    o.perturb_constants = true;
    return engine::testing::WriteModel(*dir, "tiny", o).string();
  }();
  return path;
}

std::shared_ptr<const engine::Tokenizer> NeoXTokenizer() {
  static std::shared_ptr<const engine::Tokenizer> tok = [] {
    auto t = engine::Tokenizer::FromFile(SourceDir() / "models/gpt-neox-20b/tokenizer.json");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::shared_ptr<const engine::Tokenizer>(std::move(*t)) : nullptr;
  }();
  return tok;
}

std::unique_ptr<TestServer> TestServer::Start(const ServerSetup& setup) {
  std::unique_ptr<TestServer> t(new TestServer());
  auto checkpoint = engine::Checkpoint::Open(TinyModelDir());
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  if (!checkpoint.ok()) return nullptr;
  engine::BackendOptions bo;
  bo.device = "cpu";
  bo.num_threads = 1;
  bo.num_slots = setup.num_slots;
  auto backend = engine::cpu::CpuBackend::Create(*checkpoint, bo);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  if (setup.with_tokenizer) t->tokenizer_ = NeoXTokenizer();
  auto eng = engine::Engine::Create(std::move(*backend), t->tokenizer_, setup.engine);
  EXPECT_TRUE(eng.ok()) << eng.status();
  if (!eng.ok()) return nullptr;
  t->engine_ = std::move(*eng);
  t->state_.engine = t->engine_.get();
  t->state_.tokenizer = t->tokenizer_.get();
  t->state_.model_name = "tiny-random";
  t->state_.device = "cpu";
  t->state_.health = setup.serving ? Health::kServing : Health::kStarting;
  FrontEndOptions fo = setup.front_end;
  fo.host = "127.0.0.1";
  fo.port = 0;
  auto server = GrpcServer::Start(&t->state_, fo);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  t->server_ = std::move(*server);
  return t;
}

TestServer::~TestServer() {
  if (server_) server_->Shutdown(std::chrono::seconds(1));
  engine_.reset();
}

std::shared_ptr<::grpc::Channel> TestServer::Channel() const {
  return ::grpc::CreateChannel(address(), ::grpc::InsecureChannelCredentials());
}

std::unique_ptr<v1::MambaService::Stub> TestServer::Stub() const {
  return v1::MambaService::NewStub(Channel());
}

bool TestServer::WaitEngineIdle(std::chrono::milliseconds timeout) {
  return WaitFor(
      [&] {
        const engine::EngineStats s = engine_->Stats();
        return s.slots_used == 0 && s.waiting == 0 && s.running == 0;
      },
      timeout);
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::unique_ptr<::grpc::ClientContext> Context(std::chrono::milliseconds deadline) {
  auto c = std::make_unique<::grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + deadline);
  return c;
}

v1::GenerateRequest GreedyRequest(const std::string& text, int max_new_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_stopping()->set_max_new_tokens(max_new_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  return r;
}

std::string StreamResult::Text(int index) const {
  std::string text;
  for (const auto& m : messages) {
    if (m.index() == index && !m.has_prompt()) text += m.text();
  }
  return text;
}

std::vector<int32_t> StreamResult::TokenIds(int index) const {
  std::vector<int32_t> ids;
  for (const auto& m : messages) {
    if (m.index() == index && m.has_token()) ids.push_back(m.token().id());
  }
  return ids;
}

int StreamResult::Ends(int index) const {
  int ends = 0;
  for (const auto& m : messages) ends += m.index() == index && m.has_end();
  return ends;
}

StreamResult ReadStream(v1::MambaService::Stub& stub, const v1::GenerateRequest& request,
                        ::grpc::ClientContext* context) {
  StreamResult result;
  auto reader = stub.GenerateStream(context, request);
  v1::GenerateStreamResponse m;
  while (reader->Read(&m)) result.messages.push_back(m);
  result.status = reader->Finish();
  return result;
}

std::vector<int32_t> Ids(const v1::Completion& c) {
  return {c.token_ids().begin(), c.token_ids().end()};
}

}  // namespace mamba::server::testing
