// Helpers for the CUDA kernel tests: skip without a usable device, device arrays, and (from
// tests/kernels/kernel_test_util.h) random data, tolerance checks, chunk tables. Header-only;
// link mamba_kernels_cuda.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/packed_chunks.h"
#include "kernels/dtype.h"
#include "kernels/packed_chunks.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/support/gpu_required.h"

namespace mamba::kernels::cuda::testing {

using ::mamba::kernels::testing::Close;
using ::mamba::kernels::testing::Epsilon;
using ::mamba::kernels::testing::FromHalfBits;
using ::mamba::kernels::testing::MakeChunks;
using ::mamba::kernels::testing::Random;
using ::mamba::kernels::testing::RoundTo;
using ::mamba::kernels::testing::ToDouble;
using ::mamba::kernels::testing::ToHalfBits;

// GTEST_SKIP()s the current test when no device can run our kernels (sm_80+); fails it instead
// under MAMBA_REQUIRE_GPU=1 (tests/support/gpu_required.h).
#define MAMBA_SKIP_WITHOUT_GPU()                                                 \
  do {                                                                           \
    std::string mamba_why_;                                                      \
    if (::mamba::kernels::cuda::UsableDeviceCount(&mamba_why_) == 0) {           \
      if (::mamba::testing::GpuRequired())                                       \
        FAIL() << "no usable CUDA device (MAMBA_REQUIRE_GPU=1): " << mamba_why_; \
      GTEST_SKIP() << "no usable CUDA device: " << mamba_why_;                   \
    }                                                                            \
  } while (0)

#define MAMBA_CUDA_ASSERT(expr)                                                        \
  do {                                                                                 \
    const cudaError_t mamba_e_ = (expr);                                               \
    ASSERT_EQ(mamba_e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(mamba_e_); \
  } while (0)

// A device copy of a host vector (or n zeroed elements); freed on destruction.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    if (n_ == 0) return;
    ok_ = cudaMalloc(&ptr_, n_ * sizeof(T)) == cudaSuccess &&
          cudaMemset(ptr_, 0, n_ * sizeof(T)) == cudaSuccess;
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    if (ok_ && n_ > 0)
      ok_ = cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess;
  }
  ~DeviceArray() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return static_cast<T*>(ptr_); }
  bool ok() const { return ok_; }
  std::vector<T> Get() const {
    std::vector<T> host(n_);
    if (n_ > 0 &&
        cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) {
      ADD_FAILURE() << "cudaMemcpy to host failed";
    }
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_ = 0;
  bool ok_ = true;
};

inline std::vector<ChunkDesc> ToDesc(const std::vector<SeqChunk>& chunks) {
  std::vector<ChunkDesc> out;
  for (const SeqChunk& c : chunks) out.push_back({c.begin, c.length, c.slot});
  return out;
}

}  // namespace mamba::kernels::cuda::testing
