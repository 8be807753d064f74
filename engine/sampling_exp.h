// ExpNonPositive: the exp every sampling path computes its probabilities with. Shared so that
// whatever must reproduce the host's p bit for bit (the CUDA draw's tests) calls this one.
#pragma once

#include <bit>
#include <cstdint>

namespace mamba::engine {

// exp(x) for x in [-87, 0]; 0 for anything else that reaches it (below -87, -inf, NaN: tokens
// e^87 times less likely than the best one are never drawn). Cephes expf: x = n ln2 + r,
// degree-6 polynomial for e^r, 2^n built in the exponent bits; max relative error ~1e-7.
// Written with integer masks instead of float branches, which GCC will not if-convert under
// the default -ftrapping-math, so that the loops calling it vectorize.
inline float ExpNonPositive(float x) {
  constexpr uint32_t kMinus87 = 0xC2AE0000u;  // bits of -87.0f; larger bits = more negative
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t keep = ((bits >= 0x80000000u && bits <= kMinus87) || bits == 0u) ? ~0u : 0u;
  x = std::bit_cast<float>(bits & keep);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t scale = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(p * std::bit_cast<float>(scale)) & keep);
}

}  // namespace mamba::engine
