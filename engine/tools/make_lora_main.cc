// mamba-make-lora: writes a seeded random PEFT LoRA adapter for a model directory or a preset
// (issue 15), in PEFT's exact layout, so that tests and benchmarks need no download.
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/checkpoint.h"
#include "engine/lora/lora_adapter.h"
#include "engine/lora/lora_writer.h"

namespace {

using namespace mamba::engine;

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return code;
}

// "a,b,c" -> {"a", "b", "c"}, empty pieces dropped.
std::vector<std::string> SplitList(const std::string& s) {
  return absl::StrSplit(s, ',', absl::SkipWhitespace());
}

// "k=v,k2=v2" in order; `parse` reads one value. False (with `error` set) on a malformed entry.
template <typename T, typename Parse>
bool ParsePattern(const std::string& flag, const std::string& s, Parse parse,
                  std::vector<std::pair<std::string, T>>* out, std::string* error) {
  for (const std::string& entry : SplitList(s)) {
    const size_t eq = entry.rfind('=');
    T value{};
    if (eq == std::string::npos || eq == 0 || !parse(entry.substr(eq + 1), &value)) {
      *error = absl::StrCat(flag, ": '", entry, "' is not NAME=VALUE");
      return false;
    }
    out->emplace_back(entry.substr(0, eq), value);
  }
  return true;
}

absl::StatusOr<ModelConfig> BaseConfig(const std::string& base, const std::string& preset) {
  if (base.empty() == preset.empty()) {
    return absl::InvalidArgumentError("give exactly one of --base DIR and --preset NAME");
  }
  if (!preset.empty()) return PresetConfig(preset);
  auto j = ReadJsonFile(std::filesystem::path(base) / "config.json");
  if (!j.ok()) return j.status();
  auto c = ModelConfig::FromJson(*j);
  if (!c.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(base, "/config.json: ", c.status().message()));
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mamba::engine;
  CLI::App app{"Write a seeded random PEFT LoRA adapter (adapter_config.json + weights)"};
  std::string base, preset, out, targets = "in_proj,x_proj,out_proj,embeddings";
  std::string dtype = "float32", format = "safetensors", rank_pattern, alpha_pattern, layers;
  RandomLoraOptions o;
  app.add_option("--base", base, "Base model directory (its config.json is read)");
  app.add_option("--preset", preset, absl::StrJoin(PresetNames(), " | "));
  app.add_option("--out", out, "Output directory")->required();
  app.add_option("--targets", targets,
                 "PEFT target_modules: in_proj, x_proj, dt_proj, out_proj, embeddings, lm_head")
      ->capture_default_str();
  app.add_option("--rank", o.rank, "r")->capture_default_str();
  app.add_option("--alpha", o.alpha, "lora_alpha")->capture_default_str();
  app.add_flag("--rslora", o.use_rslora, "use_rslora: scale alpha / sqrt(r)");
  app.add_option("--dtype", dtype, "float32 | bfloat16 | float16")->capture_default_str();
  app.add_option("--seed", o.seed)->capture_default_str();
  app.add_option("--rank-pattern", rank_pattern, "rank_pattern as NAME=R,... (in this order)");
  app.add_option("--alpha-pattern", alpha_pattern, "alpha_pattern as NAME=ALPHA,...");
  app.add_option("--layers", layers, "layers_to_transform, e.g. 0,2 (default: every layer)");
  app.add_option("--format", format, "safetensors | bin (adapter_model.bin as torch.save writes)")
      ->capture_default_str();
  app.add_option("--b-std", o.b_std,
                 "lora_B's std (default: an update of ~20% of the base output; 0: PEFT's zeros)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }

  absl::StatusOr<ModelConfig> config = BaseConfig(base, preset);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  o.config = *config;
  o.target_modules = SplitList(targets);
  if (o.target_modules.empty()) return Fail(2, "--targets names no module");
  if (o.rank <= 0) return Fail(2, "--rank must be positive");
  std::string error;
  if (!ParsePattern<int64_t>(
          "--rank-pattern", rank_pattern,
          [](const std::string& v, int64_t* r) { return absl::SimpleAtoi(v, r) && *r > 0; },
          &o.rank_pattern, &error) ||
      !ParsePattern<double>(
          "--alpha-pattern", alpha_pattern,
          [](const std::string& v, double* a) { return absl::SimpleAtod(v, a); }, &o.alpha_pattern,
          &error)) {
    return Fail(2, error);
  }
  for (const std::string& l : SplitList(layers)) {
    int64_t i = 0;
    if (!absl::SimpleAtoi(l, &i) || i < 0)
      return Fail(2, absl::StrCat("--layers: bad index '", l, "'"));
    o.layers_to_transform.push_back(i);
  }
  if (format == "bin") {
    o.format = LoraFileFormat::kPytorchBin;
  } else if (format != "safetensors") {
    return Fail(2, "--format must be safetensors or bin");
  }
  const auto stored = mamba::kernels::FloatDTypeFromName(dtype);
  if (!stored) return Fail(2, "--dtype must be float32, bfloat16 or float16");
  o.dtype = *stored;

  if (absl::Status s = WriteRandomLoraAdapter(o, out); !s.ok()) {
    // A bad target set or pattern is a bad flag; anything else (I/O) is not.
    return Fail(s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1, std::string(s.message()));
  }
  // Read back as a server would: what was written loads.
  LoraLoadOptions unlimited;
  unlimited.max_rank = INT64_MAX;
  auto adapter = LoraAdapter::Load(out, o.config, unlimited);
  if (!adapter.ok()) return Fail(1, std::string(adapter.status().message()));
  std::vector<std::string> kinds;
  for (LoraTarget t : (*adapter)->targets()) kinds.push_back(Name(t));
  std::printf("wrote %s (%s, max rank %lld, %s, %.2f MB as fp32, fingerprint %s)\n", out.c_str(),
              absl::StrJoin(kinds, ",").c_str(), static_cast<long long>((*adapter)->max_rank()),
              dtype.c_str(), static_cast<double>((*adapter)->bytes()) / 1e6,
              (*adapter)->fingerprint().c_str());
  return 0;
}
