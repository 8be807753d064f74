// Helpers for the CUDA kernel tests: skip without a usable device, device arrays, random data,
// tolerance checks, chunk tables. Header-only; link mamba_kernels_cuda.
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

namespace mamba::kernels::cuda::testing {

// GTEST_SKIP()s the current test when no device can run our kernels (sm_80+).
#define MAMBA_SKIP_WITHOUT_GPU()                                       \
  do {                                                                 \
    std::string mamba_why_;                                            \
    if (::mamba::kernels::cuda::UsableDeviceCount(&mamba_why_) == 0) { \
      GTEST_SKIP() << "no usable CUDA device: " << mamba_why_;         \
    }                                                                  \
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

inline std::vector<float> Random(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// fp32 values stored as `t` (uint16 bits for bf16/fp16), and back.
inline std::vector<uint16_t> ToHalfBits(const std::vector<float>& v, DType t) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = t == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
  return out;
}
inline float FromHalfBits(uint16_t h, DType t) {
  return t == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
}
// v rounded to dtype t (identity for fp32).
inline std::vector<float> RoundTo(const std::vector<float>& v, DType t) {
  if (t == DType::kF32) return v;
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = FromHalfBits(t == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]), t);
  return out;
}
// Relative rounding error of one value stored in t.
inline double Epsilon(DType t) {
  return t == DType::kF32 ? 1e-6 : t == DType::kBF16 ? 1.0 / 128 : 1.0 / 1024;
}

// |got - want| <= atol + rtol*|want| elementwise over the listed indices; NaN never passes.
inline ::testing::AssertionResult Close(const std::vector<float>& got,
                                        const std::vector<double>& want, double atol, double rtol,
                                        const char* what) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " vs " << want.size();
  }
  int bad = 0;
  ::testing::AssertionResult r = ::testing::AssertionFailure();
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= atol + rtol * std::fabs(want[i]))) {
      if (++bad <= 5) r << what << "[" << i << "]: got " << got[i] << " want " << want[i] << "\n";
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return r << bad << " of " << got.size() << " elements out of tolerance";
}

// Chunks of the given lengths over shuffled distinct slots in [0, num_slots), back to back.
inline std::vector<SeqChunk> MakeChunks(const std::vector<int64_t>& lengths, int num_slots,
                                        uint64_t seed) {
  std::vector<int32_t> slots(static_cast<size_t>(num_slots));
  for (int i = 0; i < num_slots; ++i) slots[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<SeqChunk> chunks;
  int64_t begin = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    chunks.push_back({begin, lengths[i], slots[i]});
    begin += lengths[i];
  }
  return chunks;
}

inline std::vector<ChunkDesc> ToDesc(const std::vector<SeqChunk>& chunks) {
  std::vector<ChunkDesc> out;
  for (const SeqChunk& c : chunks) out.push_back({c.begin, c.length, c.slot});
  return out;
}

}  // namespace mamba::kernels::cuda::testing
