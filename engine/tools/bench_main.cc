// mamba-bench: engine benchmark. Load time, prefill tokens/s (512 and 2048 tokens), decode
// tokens/s at several batch sizes, peak memory, and roofline ratios against the measured memory
// bandwidth and oneDNN's own GEMM throughput on the model's shapes.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>

#include "CLI/CLI.hpp"
#include "engine/checkpoint_writer.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/lora/lora_adapter.h"
#include "engine/lora/lora_writer.h"
#include "engine/tools/bench_reference.h"
#include "engine/tools/tool_common.h"
#include "nlohmann/json.hpp"

namespace {

using namespace mamba::engine;
using nlohmann::json;
namespace fs = std::filesystem;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

std::vector<TokenId> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TokenId> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<TokenId>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

std::map<std::string, double> OpMap(const Backend& b) {
  std::map<std::string, double> m;
  for (auto& [k, v] : b.OpSeconds()) m[k] = v;
  return m;
}
json OpDelta(const std::map<std::string, double>& before, const Backend& b, double scale) {
  json j = json::object();
  for (auto& [k, v] : b.OpSeconds()) j[k] = (v - before.at(k)) * scale;
  return j;
}

// Seconds per Prefill of a `len`-token prompt (best of `reps`); `all_logits`: every position's
// logits (prompt log-probs), else the last token's.
// `adapter`: under that LoRA adapter.
absl::StatusOr<double> TimePrefill(Backend& b, int64_t len, int reps, bool all_logits = false,
                                   const AdapterWeights* adapter = nullptr) {
  auto toks = RandomTokens(len, b.config().vocab_size, 7);
  Logits logits;
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    ChunkInput c{SlotId(0), toks, true, true, all_logits, adapter};
    const double t0 = Now();
    if (absl::Status s = b.Prefill({&c, 1}, &logits); !s.ok()) return s;
    best = std::min(best, Now() - t0);
  }
  return best;
}

// Seconds per decode step at `batch` (median of `steps` after warm-up). With `adapters`, row i
// runs under adapters[i % size] (null: the base model) through Prefill's one-token chunks, the
// path the engine's steps take (the CPU engine's Decode is the same path).
absl::StatusOr<double> TimeDecode(Backend& b, int batch, int steps,
                                  std::span<const AdapterWeights* const> adapters = {}) {
  std::vector<SlotId> slots;
  std::vector<std::vector<TokenId>> prompts;
  std::vector<ChunkInput> chunks;
  for (int i = 0; i < batch; ++i) {
    slots.push_back(SlotId(i));
    prompts.push_back(RandomTokens(8, b.config().vocab_size, 100 + i));
  }
  auto adapter = [&](int i) { return adapters.empty() ? nullptr : adapters[i % adapters.size()]; };
  for (int i = 0; i < batch; ++i)
    chunks.push_back(ChunkInput{slots[i], prompts[i], true, false, false, adapter(i)});
  Logits logits;
  if (absl::Status s = b.Prefill(chunks, &logits); !s.ok()) return s;
  std::vector<TokenId> tokens = RandomTokens(batch, b.config().vocab_size, 5);
  chunks.clear();
  for (int i = 0; i < batch; ++i) {
    chunks.push_back(ChunkInput{slots[i], {&tokens[i], 1}, false, true, false, adapter(i)});
  }
  std::vector<double> times;
  for (int i = 0; i < steps + 2; ++i) {
    const double t0 = Now();
    absl::Status s =
        adapters.empty() ? b.Decode(slots, tokens, &logits) : b.Prefill(chunks, &logits);
    if (!s.ok()) return s;
    if (i >= 2) times.push_back(Now() - t0);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// GEMM flops of one prefill of `len` tokens (logits for the last token only).
double PrefillFlops(const ModelConfig& c, int64_t len) {
  const double d = c.hidden_size, e = c.intermediate_size, n = c.state_size, r = c.time_step_rank;
  const double per_token =
      c.is_mamba2() ? 2 * (static_cast<double>(c.in_proj_size()) * d + d * (c.mlp_size + e))
                    : 2 * (2 * e * d + (r + 2 * n) * e + e * r + d * e);
  return per_token * len * c.num_hidden_layers + 2.0 * c.vocab_size * d;
}

double OneDnnPrefillSeconds(const ModelConfig& c, int64_t len, mamba::kernels::DType dt) {
  using tools::MeasureOneDnnGemmSeconds;
  const int64_t d = c.hidden_size, e = c.intermediate_size, n = c.state_size, r = c.time_step_rank;
  if (c.is_mamba2()) {
    const double layer = MeasureOneDnnGemmSeconds(len, c.in_proj_size(), d, dt) +
                         MeasureOneDnnGemmSeconds(len, d, c.mlp_size + e, dt);
    return layer * c.num_hidden_layers + MeasureOneDnnGemmSeconds(1, c.vocab_size, d, dt);
  }
  const double layer = MeasureOneDnnGemmSeconds(len, 2 * e, d, dt) +
                       MeasureOneDnnGemmSeconds(len, r + 2 * n, e, dt) +
                       MeasureOneDnnGemmSeconds(len, e, r, dt) +
                       MeasureOneDnnGemmSeconds(len, d, e, dt);
  return layer * c.num_hidden_layers + MeasureOneDnnGemmSeconds(1, c.vocab_size, d, dt);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Base vs LoRA, alternated `rounds` times per measurement (memory bandwidth drifts minute to
// minute on shared hosts): tokens/s of each and the median ratio LoRA / base.
absl::Status CompareLora(Backend& b, const std::string& model_dir, int n, int64_t rank,
                         const std::vector<std::string>& targets,
                         const std::vector<int64_t>& prefill_lens, const std::vector<int>& batches,
                         int steps, int rounds, bool profile, json* out) {
  std::vector<std::shared_ptr<const AdapterWeights>> held;
  std::vector<const AdapterWeights*> adapters;
  int64_t adapter_bytes = 0;
  for (int i = 0; i < n; ++i) {
    RandomLoraOptions o;
    o.config = b.config();
    o.target_modules = targets;
    o.rank = rank;
    o.seed = 1000 + static_cast<uint64_t>(i);
    const fs::path dir =
        fs::path(model_dir) / "lora" / ("r" + std::to_string(rank) + "-" + std::to_string(i));
    if (absl::Status s = WriteRandomLoraAdapter(o, dir); !s.ok()) return s;
    auto host = LoraAdapter::Load(dir, b.config(), {.max_rank = rank});
    if (!host.ok()) return host.status();
    auto w = b.LoadAdapter(**host);
    if (!w.ok()) return w.status();
    adapter_bytes += (*w)->bytes();
    held.push_back(*w);
    adapters.push_back(w->get());
  }
  const AdapterWeights* const none = nullptr;
  (*out)["adapters"] = n;
  (*out)["rank"] = rank;
  (*out)["targets"] = targets;
  (*out)["adapter_mib"] = static_cast<double>(adapter_bytes) / (1 << 20);
  std::printf("LoRA: %d adapters, r %lld on %zu targets, %.1f MiB each\n", n,
              static_cast<long long>(rank), targets.size(),
              static_cast<double>(adapter_bytes) / n / (1 << 20));
  auto report = [&](json& j, const char* what, double work, std::vector<double>& base,
                    std::vector<double>& lora) {
    std::vector<double> ratios;
    for (size_t i = 0; i < base.size(); ++i) ratios.push_back(base[i] / lora[i]);
    j = {{"base_tokens_per_s", work / Median(base)},
         {"lora_tokens_per_s", work / Median(lora)},
         {"ratio_median", Median(ratios)},
         {"ratio_min", *std::min_element(ratios.begin(), ratios.end())},
         {"ratio_max", *std::max_element(ratios.begin(), ratios.end())}};
    std::printf("%s: base %.1f tokens/s, LoRA %.1f tokens/s: %.1f%% (rounds %.1f-%.1f%%)\n", what,
                work / Median(base), work / Median(lora), 100 * Median(ratios),
                100 * j["ratio_min"].get<double>(), 100 * j["ratio_max"].get<double>());
  };
  for (int64_t len : prefill_lens) {
    std::vector<double> base, lora;
    const auto before = OpMap(b);
    for (int r = 0; r < rounds; ++r) {
      auto tb = TimePrefill(b, len, 2, false, nullptr);
      if (!tb.ok()) return tb.status();
      auto tl = TimePrefill(b, len, 2, false, adapters[0]);
      if (!tl.ok()) return tl.status();
      base.push_back(*tb);
      lora.push_back(*tl);
    }
    json& j = (*out)["prefill"][std::to_string(len)];
    report(j, ("prefill " + std::to_string(len)).c_str(), static_cast<double>(len), base, lora);
    if (profile) {  // the adapter's share of a LoRA run
      j["lora_op_seconds_per_run"] = (OpMap(b).at("lora") - before.at("lora")) / (2 * rounds);
    }
  }
  for (int batch : batches) {
    if (batch > b.num_slots()) continue;
    std::vector<double> base, lora;
    const auto before = OpMap(b);
    for (int r = 0; r < rounds; ++r) {
      auto tb = TimeDecode(b, batch, steps, {&none, 1});
      if (!tb.ok()) return tb.status();
      auto tl = TimeDecode(b, batch, steps, adapters);
      if (!tl.ok()) return tl.status();
      base.push_back(*tb);
      lora.push_back(*tl);
    }
    json& j = (*out)["decode"][std::to_string(batch)];
    report(j, ("decode batch " + std::to_string(batch)).c_str(), batch, base, lora);
    if (profile) {  // includes the 8-token prompt each round prefills first
      j["lora_op_seconds_per_step"] =
          (OpMap(b).at("lora") - before.at("lora")) / (rounds * (steps + 2));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the engine on a model directory or a random-weight preset"};
  tools::EngineFlags ef;
  ef.slots = 128;
  std::string preset, cache_dir = "/tmp/mamba-bench-models", json_path;
  std::vector<int> batches = {1, 8, 32, 128};
  std::vector<int64_t> prefill_lens = {512, 2048};
  int decode_steps = 20;
  bool profile = false, roofline = true;
  tools::AddEngineFlags(app, &ef);
  app.add_option("--preset", preset, "Random-weight preset instead of --model (130m, 1.4b, ...)");
  app.add_option("--cache-dir", cache_dir, "Where preset checkpoints are written")
      ->capture_default_str();
  app.add_option("--batches", batches, "Decode batch sizes")->delimiter(',')->capture_default_str();
  app.add_option("--prefill", prefill_lens, "Prefill lengths")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--decode-steps", decode_steps)->capture_default_str();
  app.add_flag("--profile", profile, "Report time per op");
  bool all_logits = false;
  app.add_flag("--all-logits", all_logits,
               "Also time each prefill with logits at every position (prompt log-probs)");
  app.add_flag("!--no-roofline", roofline, "Skip the bandwidth / oneDNN reference measurements");
  app.add_option("--json", json_path, "Also write the results as JSON to this file");
  int lora_adapters = 0, lora_rounds = 5;
  int64_t lora_rank = 8;
  std::vector<std::string> lora_targets = {"in_proj", "x_proj", "out_proj", "embeddings"};
  app.add_option("--lora-adapters", lora_adapters,
                 "Also compare with N random LoRA adapters (decode rows spread over them; prefill "
                 "under the first), base and LoRA runs alternated")
      ->check(CLI::Range(0, 64));
  app.add_option("--lora-rank", lora_rank)->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--lora-targets", lora_targets)->delimiter(',')->capture_default_str();
  app.add_option("--lora-rounds", lora_rounds, "Alternated base / LoRA rounds per measurement")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  json out;
  if (!preset.empty()) {
    auto cfg = PresetConfig(preset);
    if (!cfg.ok()) return Fail(cfg.status());
    auto dt = ParseComputeDType(ef.dtype);
    if (!dt.ok()) return Fail(dt.status());
    RandomCheckpointOptions o;
    o.config = *cfg;
    o.untied_head = !cfg->tie_word_embeddings;  // falcon-mamba-7b
    // int8 quantizes a bf16 checkpoint at load (as from a bf16 hub checkpoint).
    o.dtype = *dt == ComputeDType::kBFloat16 || *dt == ComputeDType::kInt8
                  ? mamba::kernels::DType::kBF16
              : *dt == ComputeDType::kFloat16 ? mamba::kernels::DType::kF16
                                              : mamba::kernels::DType::kF32;
    ef.model_dir = (fs::path(cache_dir) / (preset + "-" + mamba::kernels::Name(o.dtype))).string();
    if (!fs::exists(fs::path(ef.model_dir) / "config.json")) {
      std::fprintf(stderr, "writing %s ...\n", ef.model_dir.c_str());
      if (absl::Status s = WriteRandomCheckpoint(o, ef.model_dir); !s.ok()) return Fail(s);
    }
    out["preset"] = preset;
  }
  const double t0 = Now();
  auto backend = tools::LoadBackend(ef, profile);
  if (!backend.ok()) return Fail(backend.status());
  Backend& b = **backend;
  out["model"] = ef.model_dir;
  out["engine"] = b.Describe();
  out["load_seconds"] = Now() - t0;
  std::printf("engine: %s\nload: %.2f s\n", b.Describe().c_str(),
              out["load_seconds"].get<double>());
  const auto* cpu = dynamic_cast<const cpu::CpuBackend*>(&b);
  const double weight_bytes = cpu ? static_cast<double>(cpu->weight_bytes_per_token()) : 0.0;

  for (int64_t len : prefill_lens) {
    const auto before = OpMap(b);
    auto t = TimePrefill(b, len, 3);
    if (!t.ok()) return Fail(t.status());
    const double tps = static_cast<double>(len) / *t;
    json& p = out["prefill"][std::to_string(len)];
    p = {{"seconds", *t},
         {"tokens_per_s", tps},
         {"gflops", PrefillFlops(b.config(), len) / *t / 1e9}};
    if (profile) p["op_seconds_per_run"] = OpDelta(before, b, 1.0 / 3);
    std::printf("prefill %5lld tokens: %8.1f tokens/s  (%.3f s, %.0f GEMM GFLOP/s)\n",
                static_cast<long long>(len), tps, *t, p["gflops"].get<double>());
    if (!all_logits) continue;
    auto ta = TimePrefill(b, len, 3, true);
    if (!ta.ok()) return Fail(ta.status());
    p["all_logits_seconds"] = *ta;
    std::printf(
        "prefill %5lld tokens, logits at every position: %8.1f tokens/s  (%.2fx the time)\n",
        static_cast<long long>(len), static_cast<double>(len) / *ta, *ta / *t);
  }
  for (int batch : batches) {
    if (batch > b.num_slots()) continue;
    const auto before = OpMap(b);
    auto t = TimeDecode(b, batch, decode_steps);
    if (!t.ok()) return Fail(t.status());
    json& d = out["decode"][std::to_string(batch)];
    d = {{"step_seconds", *t}, {"tokens_per_s", batch / *t}};
    if (profile) d["op_seconds_per_step"] = OpDelta(before, b, 1.0 / (decode_steps + 2));
    std::printf("decode batch %3d: %9.1f tokens/s  (%.2f ms/step)\n", batch, batch / *t, *t * 1e3);
  }
  if (lora_adapters > 0) {
    absl::Status s =
        CompareLora(b, ef.model_dir, lora_adapters, lora_rank, lora_targets, prefill_lens, batches,
                    decode_steps, lora_rounds, profile, &out["lora"]);
    if (!s.ok()) return Fail(s);
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  out["peak_rss_mib"] = ru.ru_maxrss / 1024.0;
  std::printf("peak RSS: %.0f MiB\n", ru.ru_maxrss / 1024.0);

  if (roofline) {
    const double bw = tools::MeasureTriadGBps();
    out["triad_gbps"] = bw;
    std::printf("memory bandwidth (triad): %.1f GB/s\n", bw);
    if (out["decode"].contains("1") && weight_bytes > 0) {
      const double gbps = weight_bytes / out["decode"]["1"]["step_seconds"].get<double>() / 1e9;
      out["decode_b1_weight_gbps"] = gbps;
      out["decode_b1_bandwidth_ratio"] = gbps / bw;
      std::printf("decode b1: %.0f MB weights/token -> %.1f GB/s = %.0f%% of triad\n",
                  weight_bytes / 1e6, gbps, 100 * gbps / bw);
    }
    if (out["decode"].contains("1") && out["decode"].contains("32")) {
      const double r = out["decode"]["32"]["tokens_per_s"].get<double>() /
                       out["decode"]["1"]["tokens_per_s"].get<double>();
      out["decode_b32_over_b1"] = r;
      std::printf("decode b32 / b1: %.1fx\n", r);
    }
    if (out["prefill"].contains("512") && b.compute_dtype() != mamba::kernels::DType::kI8) {
      const double ref = OneDnnPrefillSeconds(b.config(), 512, b.compute_dtype());
      const double ours = out["prefill"]["512"]["seconds"].get<double>();
      out["onednn_gemm_only_prefill512_seconds"] = ref;
      out["prefill512_vs_onednn_gemm"] = ref / ours;
      std::printf(
          "prefill 512: oneDNN GEMMs alone %.3f s -> engine reaches %.0f%% of GEMM throughput\n",
          ref, 100 * ref / ours);
    }
  }
  if (!json_path.empty()) {
    std::ofstream(json_path) << out.dump(2) << "\n";
  }
  return 0;
}
