#include "tests/server/http/http_test_server.h"

#include <mutex>
#include <sstream>
#include <thread>

#include "engine/checkpoint.h"
#include "engine/checkpoint_writer.h"
#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"

namespace mamba::server::http_testing {
namespace {

// Written once per process; removed at exit.
std::shared_ptr<const engine::Checkpoint> TinyCheckpoint() {
  static engine::testing::TempDir* dir = new engine::testing::TempDir();
  static std::shared_ptr<const engine::Checkpoint> ck = [] {
    engine::RandomCheckpointOptions o;
    o.config = engine::testing::SmallConfig();
    o.config.vocab_size = 50280;
    o.config.num_hidden_layers = 1;
    o.seed = 7;
    const auto path = dir->path() / "tiny";
    absl::Status s = engine::WriteRandomCheckpoint(o, path);
    EXPECT_TRUE(s.ok()) << s;
    auto c = engine::Checkpoint::Open(path);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }();
  return ck;
}

}  // namespace

std::shared_ptr<const engine::Tokenizer> NeoXTokenizer() {
  static std::shared_ptr<const engine::Tokenizer> tok =
      []() -> std::shared_ptr<const engine::Tokenizer> {
    auto t = engine::Tokenizer::FromFile(engine::testing::SourceDir() /
                                         "models/gpt-neox-20b/tokenizer.json");
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return nullptr;
    return std::shared_ptr<const engine::Tokenizer>(std::move(*t));
  }();
  return tok;
}

std::unique_ptr<HttpTestServer> HttpTestServer::Start(const ServerSetup& setup) {
  std::unique_ptr<HttpTestServer> t(new HttpTestServer());
  t->metrics_ = std::make_unique<Metrics>();
  auto ck = TinyCheckpoint();
  if (!ck) return nullptr;
  if (setup.with_tokenizer) {
    t->tokenizer_ = NeoXTokenizer();
    if (!t->tokenizer_) return nullptr;
  }
  engine::BackendOptions bo;
  bo.num_slots = setup.num_slots;
  bo.num_threads = 1;
  auto backend = engine::cpu::CpuBackend::Create(ck, bo);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  auto engine =
      engine::Engine::Create(std::move(*backend), t->tokenizer_, setup.engine, t->metrics_.get());
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return nullptr;
  t->engine_ = std::move(*engine);
  t->state_.engine = t->engine_.get();
  t->state_.tokenizer = t->tokenizer_.get();
  t->state_.model_name = kModelName;
  t->state_.device = "cpu";
  t->state_.health = Health::kServing;
  FrontEndOptions fe = setup.front_end;
  fe.host = "127.0.0.1";
  fe.port = 0;
  auto server = HttpServer::Start(&t->state_, t->metrics_.get(), fe, 2);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  t->server_ = std::move(*server);
  return t;
}

HttpTestServer::~HttpTestServer() {
  if (server_) server_->Shutdown();
  server_.reset();
  engine_.reset();
  metrics_.reset();
}

bool HttpTestServer::WaitEngineIdle(std::chrono::milliseconds timeout) {
  return WaitFor(
      [&] {
        const engine::EngineStats s = engine_->Stats();
        return s.slots_used == 0 && s.waiting == 0 && s.running == 0;
      },
      timeout);
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

}  // namespace mamba::server::http_testing
