#include "tests/support/serving_harness.h"

#include <condition_variable>
#include <mutex>

#include "engine/checkpoint_writer.h"
#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace mamba::testing {
namespace {

std::shared_ptr<const engine::Checkpoint> MakeTinyModel(bool perturbed) {
  static TempDir* dir = new TempDir();  // leaked on purpose: outlives every test
  engine::RandomCheckpointOptions o;
  o.config = engine::testing::SmallConfig();
  o.config.vocab_size = 50280;
  o.config.num_hidden_layers = 1;
  o.seed = 7;
  o.perturb_constants = perturbed;
  auto c = engine::Checkpoint::Open(
      engine::testing::WriteModel(*dir, perturbed ? "tiny-perturbed" : "tiny", o));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : nullptr;
}

}  // namespace

std::shared_ptr<const engine::Tokenizer> NeoXTokenizer() {
  static std::shared_ptr<const engine::Tokenizer> tok =
      []() -> std::shared_ptr<const engine::Tokenizer> {
    auto t = engine::Tokenizer::FromFile(SourceDir() / "models/gpt-neox-20b/tokenizer.json");
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return nullptr;
    return std::shared_ptr<const engine::Tokenizer>(std::move(*t));
  }();
  return tok;
}

std::shared_ptr<const engine::Checkpoint> TinyModel(bool perturbed) {
  if (perturbed) {
    static std::shared_ptr<const engine::Checkpoint> random = MakeTinyModel(true);
    return random;
  }
  static std::shared_ptr<const engine::Checkpoint> plain = MakeTinyModel(false);
  return plain;
}

std::unique_ptr<ServingHarness> ServingHarness::Start(const ServingSetup& setup) {
  std::unique_ptr<ServingHarness> t(new ServingHarness());
  auto checkpoint = TinyModel(setup.perturbed_model);
  if (!checkpoint) return nullptr;
  if (setup.with_tokenizer) {
    t->tokenizer_ = NeoXTokenizer();
    if (!t->tokenizer_) return nullptr;
  }
  engine::BackendOptions bo;
  bo.num_slots = setup.num_slots;
  bo.num_threads = 1;
  auto backend = engine::cpu::CpuBackend::Create(checkpoint, bo);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  auto engine =
      engine::Engine::Create(std::move(*backend), t->tokenizer_, setup.engine, setup.observer);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return nullptr;
  t->engine_ = std::move(*engine);
  t->state_.engine = t->engine_.get();
  t->state_.tokenizer = t->tokenizer_.get();
  t->state_.model_name = setup.model_name;
  t->state_.device = "cpu";
  t->state_.health = setup.health;
  return t;
}

ServingHarness::~ServingHarness() { engine_.reset(); }

namespace {

class CollectingSink : public engine::RequestSink {
 public:
  void OnToken(const engine::TokenEvent& e) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_.ids.push_back(e.token.id);
    result_.text += e.text;
  }
  void OnFinish(const engine::FinishEvent& e) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_.text += e.text;
    status_ = e.status;
    done_ = true;
    cv_.notify_all();
  }
  bool Wait(AloneResult* out, absl::Status* status) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_; })) return false;
    *out = result_;
    *status = status_;
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  AloneResult result_;
  absl::Status status_;
  bool done_ = false;
};

}  // namespace

AloneResult RunAlone(engine::Engine& engine, std::vector<engine::TokenId> prompt,
                     int max_new_tokens) {
  engine::Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.ignore_eos = true;
  r.params.max_new_tokens = max_new_tokens;
  auto sink = std::make_shared<CollectingSink>();
  absl::StatusOr<engine::RequestId> id = engine.Submit(std::move(r), sink);
  EXPECT_TRUE(id.ok()) << id.status();
  AloneResult out;
  absl::Status status;
  if (!id.ok()) return out;
  EXPECT_TRUE(sink->Wait(&out, &status)) << "the request did not finish within 60 s";
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

bool ServingHarness::WaitEngineIdle(std::chrono::milliseconds timeout) {
  return WaitFor(
      [&] {
        const engine::EngineStats s = engine_->Stats();
        return s.slots_used == 0 && s.waiting == 0 && s.running == 0;
      },
      timeout, std::chrono::milliseconds(5));
}

}  // namespace mamba::testing
