#include "engine/cuda/cuda_util.h"

#include <cuda_runtime.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace mamba::engine::cuda {

absl::Status CudaStatus(int cuda_error, std::string_view what) {
  if (cuda_error == 0) return absl::OkStatus();
  const auto e = static_cast<cudaError_t>(cuda_error);
  return absl::InternalError(absl::StrCat("CUDA ", std::string(what), ": ", cudaGetErrorName(e),
                                          ": ", cudaGetErrorString(e)));
}

absl::StatusOr<void*> DeviceMemory::Allocate(size_t bytes, std::string_view what) {
  void* ptr = nullptr;
  if (const cudaError_t e = cudaMalloc(&ptr, bytes); e != cudaSuccess) {
    cudaGetLastError();  // out-of-memory is not sticky; do not leave it for the next check
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat(
        "cudaMalloc of ", bytes, " bytes for ", std::string(what), " failed (",
        cudaGetErrorString(e), "; ", free_bytes >> 20, " MiB free of ", total >> 20, " MiB)"));
  }
  return ptr;
}

void DeviceMemory::Free(void* ptr) { cudaFree(ptr); }

absl::StatusOr<void*> PinnedMemory::Allocate(size_t bytes, std::string_view what) {
  void* ptr = nullptr;
  if (const cudaError_t e = cudaMallocHost(&ptr, bytes); e != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cudaMallocHost of ", bytes, " bytes for ",
                                                     std::string(what),
                                                     " failed: ", cudaGetErrorString(e)));
  }
  return ptr;
}

void PinnedMemory::Free(void* ptr) { cudaFreeHost(ptr); }

}  // namespace mamba::engine::cuda
