// Helpers shared by the CPU and CUDA kernel tests: random data, values rounded to a storage
// dtype and its relative rounding error, chunk tables over shuffled slots, and allclose with a
// label. Header-only; CPU code only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/packed_chunks.h"
#include "tests/support/all_close.h"

namespace mamba::kernels::testing {

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
// Relative rounding error of one value stored in t: the per-dtype unit the kernel tests scale
// their tolerances by.
inline double Epsilon(DType t) {
  return t == DType::kF32 ? 1e-6 : t == DType::kBF16 ? 1.0 / 128 : 1.0 / 1024;
}

// AllClose (tests/support/all_close.h), the failure labelled with `what`.
inline ::testing::AssertionResult Close(const std::vector<float>& got,
                                        const std::vector<double>& want, double atol, double rtol,
                                        const char* what) {
  ::testing::AssertionResult r = ::mamba::testing::AllClose(got, want, atol, rtol);
  if (!r) r << " (" << what << ")";
  return r;
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

}  // namespace mamba::kernels::testing
