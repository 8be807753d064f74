// mamba-quantize: writes a model directory's int8 twin (issue 17): the large matrices as int8
// with fp32 scales, quantized as `--dtype int8` would at load, so that start-up does not.
#include <algorithm>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "engine/checkpoint.h"
#include "engine/checkpoint_quantizer.h"

int main(int argc, char** argv) {
  using namespace mamba::engine;
  CLI::App app{
      "Write an int8 copy of a Mamba checkpoint (in_proj, x_proj, dt_proj, out_proj and the LM "
      "head as int8 with fp32 scales; the CPU engine loads it without quantizing)"};
  std::string model, out;
  QuantizeCheckpointOptions o;
  app.add_option("--model", model, "Input model directory (safetensors or pytorch_model.bin)")
      ->required();
  app.add_option("--out", out, "Output directory (must not exist, or be empty)")->required();
  app.add_option("--group-size", o.group_size,
                 "Inputs per scale, a multiple of 4 (0 = one scale per output row)")
      ->capture_default_str();
  app.add_option("--max-shard-bytes", o.max_shard_bytes,
                 "Split model.safetensors into shards of at most this size")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto ckpt = Checkpoint::Open(model);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(ckpt.status().message()).c_str());
    return 1;
  }
  auto r = WriteInt8Checkpoint(**ckpt, out, o);
  if (!r.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  const double mb = 1e6;
  std::printf(
      "wrote %s: %lld matrices int8 (group size %lld), %d file(s); tensors %.1f MB -> %.1f MB "
      "(%.2fx)\n",
      out.c_str(), static_cast<long long>(r->matrices), static_cast<long long>(o.group_size),
      r->shards, static_cast<double>(r->bytes_before) / mb,
      static_cast<double>(r->bytes_after) / mb,
      static_cast<double>(r->bytes_after) /
          static_cast<double>(std::max<int64_t>(1, r->bytes_before)));
  return 0;
}
