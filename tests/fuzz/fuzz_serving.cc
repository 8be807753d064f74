#include "tests/fuzz/fuzz_serving.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "engine/engine.h"
#include "engine/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/engine/fake_backend.h"

namespace mamba::fuzz {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fuzz setup: %s\n", what.c_str());
  std::abort();
}

server::ServingState* Build() {
  std::ifstream in(SourcePath("models/kjv-mamba-4x192/config.json"));
  if (!in) Die("cannot open models/kjv-mamba-4x192/config.json (set MAMBA_SOURCE_DIR)");
  std::stringstream text;
  text << in.rdbuf();
  auto json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) Die("config.json is not JSON");
  absl::StatusOr<engine::ModelConfig> config = engine::ModelConfig::FromJson(json);
  if (!config.ok()) Die(std::string(config.status().message()));

  auto tok = engine::Tokenizer::FromFile(SourcePath("models/gpt-neox-20b/tokenizer.json"));
  if (!tok.ok()) Die(std::string(tok.status().message()));
  std::shared_ptr<const engine::Tokenizer> tokenizer(std::move(*tok));

  engine::EngineOptions options;
  options.max_prompt_tokens = kFuzzMaxPromptTokens;
  options.max_new_tokens_limit = kFuzzMaxNewTokensLimit;
  auto engine = engine::Engine::Create(
      std::make_unique<engine::testing::FakeBackend>(*config, kFuzzSlots), tokenizer, options);
  if (!engine.ok()) Die(std::string(engine.status().message()));
  // Submit validates first, then refuses as draining (UNAVAILABLE / 503): nothing is generated.
  (*engine)->StartDrain();

  auto* state = new server::ServingState;
  state->engine = engine->release();
  state->tokenizer = tokenizer.get();  // the engine keeps it alive
  state->model_name = "kjv-mamba-4x192";
  state->device = "cpu";
  state->health.store(server::Health::kServing);
  return state;
}

}  // namespace

std::string SourcePath(const std::string& relative) {
  const char* dir = std::getenv("MAMBA_SOURCE_DIR");
  return std::string(dir ? dir : ".") + "/" + relative;
}

server::ServingState& FuzzServingState() {
  static server::ServingState* state = Build();
  return *state;
}

}  // namespace mamba::fuzz
