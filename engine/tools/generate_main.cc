// mamba-generate: offline generation from a model directory. Prompt as token ids or as text
// (tokenizer.json in the model directory); greedy or sampled; prints ids and text. With
// --dump-logits, writes the prompt's last-token logits and a greedy continuation (optionally under
// a PEFT LoRA adapter, --lora) as JSON, for tests/gpu/hf_oracle.py to compare with transformers.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/generate.h"
#include "engine/lora/lora_adapter.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tools/tool_common.h"
#include "nlohmann/json.hpp"

namespace {

using namespace mamba::engine;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

// Greedy: the largest logit, ties to the lowest id (as Sampler and torch.argmax pick).
TokenId ArgMax(std::span<const float> row) {
  size_t best = 0;
  for (size_t i = 1; i < row.size(); ++i) {
    if (row[i] > row[best]) best = i;
  }
  return static_cast<TokenId>(best);
}

// The exactness dump: one sequence on slot 0, straight through the backend (no scheduler), so
// the logits are the backend's own. The prompt is one Prefill chunk; each greedy token is then a
// Decode step, or a one-token Prefill chunk under an adapter (Decode takes none, and the engine
// runs adapter decodes that way too). JSON: prompt_ids, logits (the prompt's last token, fp32),
// greedy_ids (max_new_tokens of them), device, dtype, adapter.
absl::Status DumpLogits(Backend& backend, const std::vector<TokenId>& ids, int64_t steps,
                        const std::string& lora_dir, const std::string& path) {
  if (ids.empty()) return absl::InvalidArgumentError("--dump-logits needs a non-empty prompt");
  std::shared_ptr<const LoraAdapter> host;
  std::shared_ptr<const AdapterWeights> adapter;
  if (!lora_dir.empty()) {
    auto loaded = LoraAdapter::Load(lora_dir, backend.config(), LoraLoadOptions{}, lora_dir);
    if (!loaded.ok()) return loaded.status();
    host = *loaded;
    auto weights = backend.LoadAdapter(*host);
    if (!weights.ok()) return weights.status();
    adapter = *weights;
  }
  Logits logits;
  ChunkInput prompt{.slot = SlotId(0), .tokens = ids, .start = true, .adapter = adapter.get()};
  if (absl::Status s = backend.Prefill({&prompt, 1}, &logits); !s.ok()) return s;
  const std::vector<float> last(logits.Row(0).begin(), logits.Row(0).end());
  std::vector<TokenId> greedy;
  TokenId next = ArgMax(last);
  for (int64_t i = 0; i < steps; ++i) {
    greedy.push_back(next);
    if (i + 1 == steps) break;
    const SlotId slot(0);
    absl::Status s;
    if (adapter) {
      ChunkInput one{.slot = slot, .tokens = {&next, 1}, .adapter = adapter.get()};
      s = backend.Prefill({&one, 1}, &logits);
    } else {
      s = backend.Decode({&slot, 1}, {&next, 1}, &logits);
    }
    if (!s.ok()) return s;
    next = ArgMax(logits.Row(0));
  }
  const BackendInfo info = backend.info();
  nlohmann::json j{{"prompt_ids", ids},
                   {"logits", last},
                   {"greedy_ids", greedy},
                   {"device", info.device},
                   {"dtype", mamba::kernels::Name(info.dtype)},
                   {"adapter", lora_dir}};
  std::ofstream f(path);
  f << j.dump() << "\n";
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Generate text with a Mamba model, offline (no server)"};
  tools::EngineFlags ef;
  SamplingParams sp;
  sp.temperature = 0.0f;
  sp.max_new_tokens = 30;
  std::string prompt, prompt_ids, dump_path, lora_dir;
  int count = 1;
  bool json_out = false;
  tools::AddEngineFlags(app, &ef);
  tools::AddSamplingFlags(app, &sp);
  app.add_option("--prompt", prompt, "Prompt text (needs tokenizer.json in the model directory)");
  app.add_option("--prompt-ids", prompt_ids, "Prompt as comma-separated token ids");
  app.add_option("-n,--count", count, "Completions of the prompt, generated as one batch");
  app.add_flag("--json", json_out, "Print one JSON object per completion");
  app.add_option("--dump-logits", dump_path,
                 "Write the prompt's last-token logits and --max-new-tokens greedy ids as JSON "
                 "(one sequence, straight through the backend; sampling flags are ignored)");
  app.add_option("--lora", lora_dir, "PEFT LoRA adapter directory (with --dump-logits)");
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
  if (!lora_dir.empty() && dump_path.empty()) {
    return Fail(absl::InvalidArgumentError("--lora is only supported with --dump-logits"));
  }
  auto backend = tools::LoadBackend(ef);
  if (!backend.ok()) return Fail(backend.status());
  if (!dump_path.empty()) {
    if (absl::Status s = DumpLogits(**backend, ids, sp.max_new_tokens, lora_dir, dump_path);
        !s.ok()) {
      return Fail(s);
    }
    std::printf("wrote %s (%s)\n", dump_path.c_str(), (*backend)->Describe().c_str());
    return 0;
  }
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
