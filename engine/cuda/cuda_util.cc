#include "engine/cuda/cuda_util.h"

#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mamba::engine::cuda {

absl::Status CudaStatus(int cuda_error, std::string_view what) {
  if (cuda_error == 0) return absl::OkStatus();
  const auto e = static_cast<cudaError_t>(cuda_error);
  return absl::InternalError(absl::StrCat("CUDA ", std::string(what), ": ", cudaGetErrorName(e),
                                          ": ", cudaGetErrorString(e)));
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes, std::string_view what) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  if (const cudaError_t e = cudaMalloc(&b.ptr_, bytes); e != cudaSuccess) {
    b.ptr_ = nullptr;
    cudaGetLastError();  // out-of-memory is not sticky; do not leave it for the next check
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaMalloc of ", bytes, " bytes for ", std::string(what), " failed (",
                     cudaGetErrorString(e), "; ", free_bytes >> 20, " MiB free of ", total >> 20,
                     " MiB)"));
  }
  b.bytes_ = bytes;
  return b;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes, std::string_view what) {
  PinnedBuffer b;
  if (bytes == 0) return b;
  if (const cudaError_t e = cudaMallocHost(&b.ptr_, bytes); e != cudaSuccess) {
    b.ptr_ = nullptr;
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cudaMallocHost of ", bytes, " bytes for ",
                                                     std::string(what), " failed: ",
                                                     cudaGetErrorString(e)));
  }
  b.bytes_ = bytes;
  return b;
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

}  // namespace mamba::engine::cuda
