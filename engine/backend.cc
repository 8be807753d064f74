#include "engine/backend.h"

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_backend.h"
#include "spdlog/spdlog.h"
#ifdef MAMBA_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace mamba::engine {

absl::StatusOr<ComputeDType> ParseComputeDType(std::string_view name) {
  if (name == "auto") return ComputeDType::kAuto;
  if (name == "float32" || name == "fp32" || name == "f32") return ComputeDType::kFloat32;
  if (name == "bfloat16" || name == "bf16") return ComputeDType::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return ComputeDType::kFloat16;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", std::string(name),
                                                 "' (auto, float32, bfloat16, float16)"));
}

const char* Name(ComputeDType t) {
  switch (t) {
    case ComputeDType::kAuto: return "auto";
    case ComputeDType::kFloat32: return "float32";
    case ComputeDType::kBFloat16: return "bfloat16";
    case ComputeDType::kFloat16: return "float16";
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

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Checkpoint> checkpoint,
                                                       const BackendOptions& options) {
  const std::string& dev = options.device;
  if (dev != "auto" && dev != "cpu" && dev.rfind("cuda", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("unknown device '", dev, "' (auto, cpu, cuda[:N])"));
  }
  std::string why = "requested";
  if (dev == "auto") {
#ifdef MAMBA_HAVE_CUDA
    std::string err;
    const int n = kernels::cuda::DeviceCount(&err);
    why = n > 0 ? absl::StrCat(n, " CUDA device(s) found, but the CUDA engine is not part of this "
                                  "build yet")
                : absl::StrCat("no usable CUDA device (", err, ")");
#else
    why = "built without CUDA";
#endif
  } else if (dev != "cpu") {
    return absl::UnimplementedError(
        absl::StrCat("device '", dev, "': the CUDA engine is not available in this build; use cpu"));
  }
  absl::StatusOr<std::unique_ptr<cpu::CpuBackend>> b = cpu::CpuBackend::Create(std::move(checkpoint), options);
  if (!b.ok()) return b.status();
  spdlog::info("engine: {} ({})", (*b)->Describe(), why);
  return std::unique_ptr<Backend>(std::move(*b));
}

}  // namespace mamba::engine
