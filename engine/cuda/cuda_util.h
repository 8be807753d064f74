// Small helpers of the CUDA engine: owned device and pinned host buffers, and CUDA errors as
// absl::Status naming what failed. No CUDA headers needed by includers.
#pragma once

#include <cstddef>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mamba::engine::cuda {

// InternalError "CUDA <what>: <error name>: <error text>" for a cudaError_t value != 0; ok for 0.
absl::Status CudaStatus(int cuda_error, std::string_view what);

// Where a Buffer's memory comes from. Allocate fails with ResourceExhausted naming `what` and
// the size (and, for the device, the free memory); never called with 0 bytes.
struct DeviceMemory {  // cudaMalloc / cudaFree
  static absl::StatusOr<void*> Allocate(size_t bytes, std::string_view what);
  static void Free(void* ptr);
};
struct PinnedMemory {  // cudaMallocHost / cudaFreeHost: page-locked, for asynchronous copies
  static absl::StatusOr<void*> Allocate(size_t bytes, std::string_view what);
  static void Free(void* ptr);
};

// Owned memory, freed on destruction. Move-only. Zero bytes: empty (null).
template <class Memory>
class Buffer {
 public:
  Buffer() = default;
  static absl::StatusOr<Buffer> Allocate(size_t bytes, std::string_view what) {
    Buffer b;
    if (bytes == 0) return b;
    absl::StatusOr<void*> ptr = Memory::Allocate(bytes, what);
    if (!ptr.ok()) return ptr.status();
    b.ptr_ = *ptr;
    b.bytes_ = bytes;
    return b;
  }
  ~Buffer() { Reset(); }
  Buffer(Buffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Reset() {
    if (ptr_) Memory::Free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = Buffer<DeviceMemory>;
using PinnedBuffer = Buffer<PinnedMemory>;

}  // namespace mamba::engine::cuda
