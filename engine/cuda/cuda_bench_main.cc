// mamba-cuda-bench: the CUDA engine on one model directory. Prefill tokens/s, decode step time
// per batch size (logits copied to the host, as Backend::Decode returns them, and kept on the
// device with greedy sampling there), against the floor set by reading the weights (and the
// states) once per step at the measured device-to-device copy bandwidth.
// Prints "RESULT key=value ..." lines for tests/gpu/run_all.sh, and optionally JSON.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>

#include "CLI/CLI.hpp"
#include "engine/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace {

using namespace mamba::engine;
using nlohmann::json;

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

// Device-to-device copy bandwidth in GB/s, counting bytes read + written (best of 5).
double CopyBandwidth() {
  const size_t bytes = size_t{512} << 20;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaGetLastError();
    if (a) cudaFree(a);
    return 0;
  }
  cudaMemset(a, 1, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float best = 1e30f;
  for (int i = 0; i < 6; ++i) {
    cudaEventRecord(e0);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i > 0) best = std::min(best, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (best * 1e-3) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark the CUDA engine on a model directory"};
  std::string model, dtype_name = "auto", json_path, label;
  int device = 0, slots = 256, decode_steps = 20;
  int64_t max_step_tokens = 2048, int8_group_size = 0;
  std::vector<int> batches = {1, 8, 64, 256};
  std::vector<int64_t> prefill_lens = {2048};
  bool no_graphs = false;
  app.add_option("--model", model, "Model directory")->required();
  app.add_option("--label", label, "Name in the RESULT lines (default: the directory name)");
  app.add_option("--device", device)->capture_default_str();
  app.add_option("--dtype", dtype_name,
                 "auto | float32 | bfloat16 | float16 | int8 (float weights quantized at load)")
      ->capture_default_str();
  app.add_option("--int8-group-size", int8_group_size,
                 "int8: inputs per scale, a multiple of 4 (0: one scale per output row)")
      ->capture_default_str();
  app.add_option("--slots", slots)->capture_default_str();
  app.add_option("--max-step-tokens", max_step_tokens)->capture_default_str();
  app.add_option("--batches", batches)->delimiter(',')->capture_default_str();
  app.add_option("--prefill", prefill_lens)->delimiter(',')->capture_default_str();
  app.add_option("--decode-steps", decode_steps)->capture_default_str();
  app.add_flag("--no-graphs", no_graphs, "Run decode steps without CUDA graphs");
  app.add_option("--json", json_path, "Also write the results as JSON");
  CLI11_PARSE(app, argc, argv);
  if (label.empty()) label = std::filesystem::path(model).filename().string();

  auto dtype = ParseComputeDType(dtype_name);
  if (!dtype.ok()) return Fail(dtype.status());
  auto ckpt = Checkpoint::Open(model);
  if (!ckpt.ok()) return Fail(ckpt.status());
  BackendOptions o;
  o.device = "cuda:" + std::to_string(device);
  o.dtype = *dtype;
  o.num_slots = slots;
  o.max_step_tokens = max_step_tokens;
  o.int8_group_size = int8_group_size;
  cuda::CudaBackendOptions co;
  co.cuda_graphs = !no_graphs;
  co.max_graph_batch = std::max(256, slots);
  const double t0 = Now();
  auto created = cuda::CudaBackend::Create(*ckpt, o, device, co);
  if (!created.ok()) return Fail(created.status());
  cuda::CudaBackend& b = **created;
  json out;
  out["model"] = model;
  out["engine"] = b.Describe();
  out["load_seconds"] = Now() - t0;
  const double bw = CopyBandwidth();
  out["d2d_copy_gbps"] = bw;
  std::printf("engine: %s\nload: %.2f s\nD2D copy bandwidth: %.0f GB/s\n", b.Describe().c_str(),
              out["load_seconds"].get<double>(), bw);
  const int64_t vocab = b.config().vocab_size;

  for (int64_t len : prefill_lens) {
    const auto toks = RandomTokens(len, vocab, 7);
    Logits logits;
    double best = 1e30;
    for (int r = 0; r < 4; ++r) {
      ChunkInput c{SlotId(0), toks, true, true};
      const double s0 = Now();
      if (absl::Status s = b.Prefill({&c, 1}, &logits); !s.ok()) return Fail(s);
      if (r > 0) best = std::min(best, Now() - s0);  // the first run loads kernels
    }
    out["prefill"][std::to_string(len)] = {{"seconds", best}, {"tokens_per_s", len / best}};
    std::printf("RESULT kind=prefill model=%s tokens=%lld seconds=%.4f tokens_per_s=%.0f\n",
                label.c_str(), static_cast<long long>(len), best, len / best);
  }

  const double weight_bytes = static_cast<double>(b.weight_bytes_per_token());
  const double state_bytes = static_cast<double>(b.state_bytes_per_slot());
  for (int batch : batches) {
    if (batch > b.num_slots()) continue;
    std::vector<SlotId> ids;
    std::vector<std::vector<TokenId>> prompts;
    std::vector<ChunkInput> chunks;
    for (int i = 0; i < batch; ++i) {
      ids.push_back(SlotId(i));
      prompts.push_back(RandomTokens(8, vocab, 100 + static_cast<uint64_t>(i)));
    }
    for (int i = 0; i < batch; ++i)
      chunks.push_back(
          ChunkInput{ids[static_cast<size_t>(i)], prompts[static_cast<size_t>(i)], true, false});
    Logits logits;
    if (absl::Status s = b.Prefill(chunks, &logits); !s.ok()) return Fail(s);
    std::vector<TokenId> tokens = RandomTokens(batch, vocab, 5);
    auto median = [&](bool on_device) -> absl::StatusOr<double> {
      std::vector<double> times;
      std::vector<SampledToken> sampled;
      for (int i = 0; i < decode_steps + 3; ++i) {  // the first steps capture the graph
        const double s0 = Now();
        absl::Status s = on_device ? b.DecodeOnDevice(ids, tokens) : b.Decode(ids, tokens, &logits);
        if (s.ok() && on_device) s = b.SampleGreedy(0, &sampled);
        if (!s.ok()) return s;
        if (i >= 3) times.push_back(Now() - s0);
      }
      std::sort(times.begin(), times.end());
      return times[times.size() / 2];
    };
    auto host = median(false);
    if (!host.ok()) return Fail(host.status());
    auto dev = median(true);
    if (!dev.ok()) return Fail(dev.status());
    // Floor: every weight read once, every state read and written once, at copy bandwidth.
    const double floor_s = bw > 0 ? (weight_bytes + 2 * state_bytes * batch) / (bw * 1e9) : 0;
    out["decode"][std::to_string(batch)] = {{"step_seconds", *host},
                                            {"step_seconds_device_sampling", *dev},
                                            {"floor_seconds", floor_s},
                                            {"tokens_per_s", batch / *dev}};
    std::printf(
        "RESULT kind=decode model=%s batch=%d step_ms=%.3f device_sampling_step_ms=%.3f "
        "floor_ms=%.3f x_floor=%.2f tokens_per_s=%.0f\n",
        label.c_str(), batch, *host * 1e3, *dev * 1e3, floor_s * 1e3,
        floor_s > 0 ? *dev / floor_s : 0.0, batch / *dev);
  }
  out["graphs_captured"] = b.graphs_captured();
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}
