#include "engine/backend_factory.h"

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
