// The in-process serving stack the HTTP and gRPC front-end tests put their server on: a tiny
// random model (d_model 32, vocab 50280 so that the real GPT-NeoX tokenizer fits), that
// tokenizer, a CPU Engine and the ServingState both front ends read. Every wait is bounded.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/engine.h"
#include "server/serving_state.h"

namespace mamba::testing {

// The tokenizer ($MAMBA_SOURCE_DIR/models/gpt-neox-20b/tokenizer.json), loaded once.
std::shared_ptr<const engine::Tokenizer> NeoXTokenizer();

// The tiny model (1 layer, seed 7), written and opened once per process; `perturbed` draws its
// constants (A_log, D, dt bias) at random too. Null (with a test failure) if it cannot be made.
std::shared_ptr<const engine::Checkpoint> TinyModel(bool perturbed);

// One request alone on `engine`, greedy and ignoring eos, without a session: what a cold run of
// the whole prompt gives (the oracle of the session tests, on an engine whose state cache is
// off). Fails the calling test if it does not finish within 60 s.
struct AloneResult {
  std::vector<engine::TokenId> ids;  // every generated token
  std::string text;
};
AloneResult RunAlone(engine::Engine& engine, std::vector<engine::TokenId> prompt,
                     int max_new_tokens);

struct ServingSetup {
  int num_slots = 4;
  engine::EngineOptions engine;
  bool with_tokenizer = true;
  bool perturbed_model = false;
  std::string model_name = "mamba-tiny";
  server::Health health = server::Health::kServing;
  engine::EngineObserver* observer = nullptr;  // e.g. the server's Metrics; must outlive this
};

class ServingHarness {
 public:
  // Fails the calling test (and returns null) if anything cannot start.
  static std::unique_ptr<ServingHarness> Start(const ServingSetup& setup);
  ~ServingHarness();  // stops the engine

  engine::Engine& engine() { return *engine_; }
  server::ServingState& state() { return state_; }
  const engine::Tokenizer& tokenizer() const { return *tokenizer_; }

  // Waits until the engine holds no slot and no request waits.
  bool WaitEngineIdle(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  ServingHarness() = default;
  std::shared_ptr<const engine::Tokenizer> tokenizer_;
  std::unique_ptr<engine::Engine> engine_;
  server::ServingState state_;
};

}  // namespace mamba::testing
