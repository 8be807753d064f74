// mamba-generate: offline generation from a model directory. Prompt as token ids or as text
// (tokenizer.json in the model directory); greedy or sampled; prints ids and text.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "engine/generate.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tools/tool_common.h"
#include "nlohmann/json.hpp"

namespace {

using namespace mamba::engine;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Generate text with a Mamba model, offline (no server)"};
  tools::EngineFlags ef;
  SamplingParams sp;
  sp.temperature = 0.0f;
  sp.max_new_tokens = 30;
  std::string prompt, prompt_ids;
  int count = 1;
  bool json_out = false;
  tools::AddEngineFlags(app, &ef);
  tools::AddSamplingFlags(app, &sp);
  app.add_option("--prompt", prompt, "Prompt text (needs tokenizer.json in the model directory)");
  app.add_option("--prompt-ids", prompt_ids, "Prompt as comma-separated token ids");
  app.add_option("-n,--count", count, "Completions of the prompt, generated as one batch");
  app.add_flag("--json", json_out, "Print one JSON object per completion");
  CLI11_PARSE(app, argc, argv);

  std::vector<TokenId> ids;
  std::unique_ptr<Tokenizer> tok;
  if (auto t = Tokenizer::FromFile(std::filesystem::path(ef.model_dir) / "tokenizer.json");
      t.ok()) {
    tok = std::move(*t);
  }
  if (!prompt_ids.empty()) {
    auto parsed = tools::ParseIdList(prompt_ids);
    if (!parsed.ok()) return Fail(parsed.status());
    ids = *parsed;
  } else if (!prompt.empty()) {
    if (!tok)
      return Fail(absl::FailedPreconditionError("no usable tokenizer.json in " + ef.model_dir));
    auto enc = tok->Encode(prompt);
    if (!enc.ok()) return Fail(enc.status());
    ids = *enc;
  } else {
    ids = {1898, 2656, 753};  // "And God said", for the bundled KJV model
    if (tok) std::cout << "prompt: And God said\n";
  }
  auto backend = tools::LoadBackend(ef);
  if (!backend.ok()) return Fail(backend.status());
  std::vector<GenerationRequest> reqs(static_cast<size_t>(std::max(1, count)));
  for (auto& r : reqs) {
    r.prompt = ids;
    r.params = sp;
  }
  auto results = Generate(**backend, reqs);
  if (!results.ok()) return Fail(results.status());
  for (size_t i = 0; i < results->size(); ++i) {
    const GenerationResult& r = (*results)[i];
    std::vector<TokenId> out;
    for (const SampledToken& t : r.tokens) out.push_back(t.id);
    std::string text;
    if (tok) {
      if (auto d = tok->Decode(out); d.ok()) text = *d;
    }
    if (json_out) {
      nlohmann::json j{
          {"prompt_ids", ids}, {"ids", out}, {"text", text}, {"finish_reason", Name(r.finish)}};
      if (sp.logprobs) {
        std::vector<float> lp;
        for (const SampledToken& t : r.tokens) lp.push_back(t.logprob);
        j["logprobs"] = lp;
      }
      std::cout << j.dump() << "\n";
    } else {
      std::cout << "ids: " << absl::StrJoin(out, ", ") << "\n";
      if (!text.empty()) std::cout << "text: " << text << "\n";
      std::cout << "finish: " << Name(r.finish) << "\n";
    }
  }
  return 0;
}
