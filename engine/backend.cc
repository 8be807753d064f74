#include "engine/backend.h"

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/logging.h"
#include "spdlog/spdlog.h"
#ifdef MAMBA_HAVE_CUDA_ENGINE  // defined by linking mamba_engine_cuda (engine/cuda/)
#include "absl/strings/numbers.h"
#include "engine/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#endif

namespace mamba::engine {

absl::StatusOr<ComputeDType> ParseComputeDType(std::string_view name) {
  if (name == "auto") return ComputeDType::kAuto;
  if (name == "float32" || name == "fp32" || name == "f32") return ComputeDType::kFloat32;
  if (name == "bfloat16" || name == "bf16") return ComputeDType::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return ComputeDType::kFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", std::string(name), "' (auto, float32, bfloat16, float16)"));
}

const char* Name(ComputeDType t) {
  switch (t) {
    case ComputeDType::kAuto:
      return "auto";
    case ComputeDType::kFloat32:
      return "float32";
    case ComputeDType::kBFloat16:
      return "bfloat16";
    case ComputeDType::kFloat16:
      return "float16";
  }
  return "?";
}

absl::Status ValidateChunks(std::span<const ChunkInput> chunks, int num_slots, int64_t vocab_size) {
  std::unordered_set<int32_t> seen;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkInput& c = chunks[i];
    if (c.slot.value < 0 || c.slot.value >= num_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", i, ": slot ", c.slot.value, " out of range [0, ", num_slots, ")"));
    }
    if (!seen.insert(c.slot.value).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", i, ": slot ", c.slot.value, " appears twice in one step"));
    }
    if (c.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("chunk ", i, " is empty"));
    for (TokenId t : c.tokens) {
      if (t < 0 || t >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " out of range [0, ", vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ForEachPass(std::span<const ChunkInput> chunks, int64_t budget,
                         const std::function<absl::Status(const Pass&)>& run) {
  Pass pass;
  int64_t row = 0;
  auto flush = [&]() -> absl::Status {
    if (pass.chunks.empty()) return absl::OkStatus();
    absl::Status s = run(pass);
    pass.chunks.clear();
    pass.tokens.clear();
    pass.logit_chunks.clear();
    pass.first_row = row;
    return s;
  };
  for (const ChunkInput& c : chunks) {
    const auto n = static_cast<int64_t>(c.tokens.size());
    for (int64_t done = 0; done < n;) {
      if (static_cast<int64_t>(pass.tokens.size()) == budget) {
        if (absl::Status s = flush(); !s.ok()) return s;
      }
      const int64_t take = std::min(n - done, budget - static_cast<int64_t>(pass.tokens.size()));
      pass.chunks.push_back({static_cast<int64_t>(pass.tokens.size()), take, c.slot.value});
      pass.tokens.insert(pass.tokens.end(), c.tokens.begin() + done,
                         c.tokens.begin() + done + take);
      done += take;
      if (done == n && c.want_logits) {
        pass.logit_chunks.push_back(static_cast<int>(pass.chunks.size() - 1));
        ++row;
      }
    }
  }
  return flush();
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Checkpoint> checkpoint,
                                                       const BackendOptions& options) {
  const std::string& dev = options.device;
  if (checkpoint && !checkpoint->config().residual_in_fp32) {
    // Both engines keep every activation, the residual stream included, in fp32 whatever the
    // weight dtype: HF's float32 result exactly; in 16-bit, a rounding HF does and we do not.
    NamedLogger("engine")->warn(
        "config.json sets residual_in_fp32 = false: the residual stream stays in fp32 (as in HF "
        "float32; HF in bfloat16/float16 would round it to 16 bits after every layer)");
  }
  if (dev != "auto" && dev != "cpu" && dev.rfind("cuda", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device '", dev, "' (auto, cpu, cuda[:N])"));
  }
  std::string why = "requested";
  if (dev == "auto") {
#if defined(MAMBA_HAVE_CUDA_ENGINE)
    std::string err;
    if (kernels::cuda::UsableDeviceCount(&err) > 0) {
      auto b = cuda::CudaBackend::Create(checkpoint, options, 0);
      if (b.ok()) {
        NamedLogger("engine")->info("engine: {} (auto: a usable CUDA device exists)",
                                    (*b)->Describe());
        return std::unique_ptr<Backend>(std::move(*b));
      }
      why = absl::StrCat("CUDA device 0 could not be used: ", b.status().ToString());
      NamedLogger("engine")->warn("engine: {}; falling back to the CPU", why);
    } else {
      why = absl::StrCat("no usable CUDA device (", err, ")");
    }
#else
    why = "built without CUDA";
#endif
  } else if (dev != "cpu") {
#if defined(MAMBA_HAVE_CUDA_ENGINE)
    int index = 0;
    if (dev != "cuda" &&
        (dev.rfind("cuda:", 0) != 0 || !absl::SimpleAtoi(dev.substr(5), &index) || index < 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown device '", dev, "' (auto, cpu, cuda[:N])"));
    }
    auto b = cuda::CudaBackend::Create(std::move(checkpoint), options, index);
    if (!b.ok()) return b.status();
    NamedLogger("engine")->info("engine: {} ({})", (*b)->Describe(), why);
    return std::unique_ptr<Backend>(std::move(*b));
#else
    return absl::UnimplementedError(absl::StrCat(
        "device '", dev, "': the CUDA engine is not available in this build; use cpu"));
#endif
  }
  absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> b =
      cpu::CpuBackend::Create(std::move(checkpoint), options);
  if (!b.ok()) return b.status();
  NamedLogger("engine")->info("engine: {} ({})", (*b)->Describe(), why);
  return std::unique_ptr<Backend>(std::move(*b));
}

}  // namespace mamba::engine
