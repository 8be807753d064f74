// 16-lane fp32 vectors (GCC vector extensions) and branch-free math on them. Compiled per target
// through target_clones in the kernels, so one source serves AVX-512, AVX2 and baseline x86-64.
#pragma once

#include <cstdint>
#include <cstring>

namespace mamba::kernels::cpu {

inline constexpr int kLanes = 16;
typedef float VecF __attribute__((vector_size(64)));
typedef int32_t VecI __attribute__((vector_size(64)));

#define MAMBA_INLINE inline __attribute__((always_inline))

MAMBA_INLINE VecF Load(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
MAMBA_INLINE void Store(float* p, VecF v) { std::memcpy(p, &v, sizeof(v)); }
MAMBA_INLINE VecF Splat(float x) { return VecF{} + x; }
// Lanes [0, n) of p, the rest zero; and its store counterpart (channel-count tails).
MAMBA_INLINE VecF LoadN(const float* p, int n) {
  if (n == kLanes) return Load(p);
  VecF v = Splat(0.0f);
  std::memcpy(&v, p, sizeof(float) * static_cast<size_t>(n));
  return v;
}
MAMBA_INLINE void StoreN(float* p, VecF v, int n) {
  if (n == kLanes) return Store(p, v);
  std::memcpy(p, &v, sizeof(float) * static_cast<size_t>(n));
}
MAMBA_INLINE VecF Max(VecF a, VecF b) { return a > b ? a : b; }
MAMBA_INLINE VecF Min(VecF a, VecF b) { return a < b ? a : b; }

// exp(x), relative error ~2 ulp on [-87, 88]; inputs beyond clamp to the range ends
// (exp(-87.3) ~ 1e-38, so underflow gives tiny normals instead of zero, harmless here).
MAMBA_INLINE VecF Exp(VecF x) {
  x = Min(Max(x, Splat(-87.3f)), Splat(88.37f));
  const VecF t = x * 1.44269504088896341f;
  // Round to nearest by the 1.5*2^23 trick (exact for |t| < 2^22).
  const VecF n = (t + 12582912.0f) - 12582912.0f;
  VecF r = x - n * 0.693359375f;  // Cody-Waite split of ln 2
  r = r - n * -2.12194440e-4f;
  VecF p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const VecI e = (__builtin_convertvector(n, VecI) + 127) << 23;
  return p * __builtin_bit_cast(VecF, e);
}

// 2^t for t <= 127.5 (Cephes exp2f polynomial, relative error ~2e-7); t < -126 flushes to the
// smallest normal's neighbourhood like Exp. The scan folds log2(e) into dt once per token, so
// each of its d_state decays costs one multiply less than Exp and no Cody-Waite split.
MAMBA_INLINE VecF Exp2(VecF t) {
  t = Max(t, Splat(-126.0f));
  const VecF n = (t + 12582912.0f) - 12582912.0f;
  const VecF r = t - n;  // exact, in [-0.5, 0.5]
  VecF p = Splat(1.535336188319500e-4f);
  p = p * r + 1.339887440266574e-3f;
  p = p * r + 9.618437357674640e-3f;
  p = p * r + 5.550332471162809e-2f;
  p = p * r + 2.402264791363012e-1f;
  p = p * r + 6.931472028550421e-1f;
  p = p * r + 1.0f;
  const VecI e = (__builtin_convertvector(n, VecI) + 127) << 23;
  return p * __builtin_bit_cast(VecF, e);
}

// log(x) for x > 0 normal (cephes logf), relative error ~1 ulp.
MAMBA_INLINE VecF Log(VecF x) {
  const VecI xi = __builtin_bit_cast(VecI, x);
  const VecI e = ((xi >> 23) & 0xff) - 126;
  const VecI mi = (xi & 0x007fffff) | 0x3f000000;  // mantissa in [0.5, 1)
  VecF m = __builtin_bit_cast(VecF, mi);
  const auto small = m < 0.707106781186547524f;
  VecF ef = __builtin_convertvector(e, VecF);
  ef = small ? ef - 1.0f : ef;
  m = small ? m + m - 1.0f : m - 1.0f;
  const VecF z = m * m;
  VecF y = Splat(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + ef * -2.12194440e-4f;
  y = y - z * 0.5f;
  return m + y + ef * 0.693359375f;
}

// softplus(x) = log1p(exp(x)), returning x for x > 20 like torch.nn.functional.softplus.
// log1p(e) = log(u) * e / (u - 1) with u = 1 + e keeps full relative accuracy for small e.
MAMBA_INLINE VecF Softplus(VecF x) {
  const VecF e = Exp(Min(x, Splat(20.0f)));
  const VecF u = e + 1.0f;
  const VecF d = u - 1.0f;
  const VecF lp = d == 0.0f ? e : Log(u) * (e / (d == 0.0f ? Splat(1.0f) : d));
  return x > 20.0f ? x : lp;
}

// silu(x) = x * sigmoid(x).
MAMBA_INLINE VecF Silu(VecF x) { return x / (Exp(-x) + 1.0f); }

MAMBA_INLINE float HorizontalSum(VecF v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

}  // namespace mamba::kernels::cpu

// Hot kernels are compiled for these targets and picked at load time. The build defines it
// empty with -DMAMBA_CPU_CLONES=OFF (ThreadSanitizer crashes in the ifunc resolvers).
#ifndef MAMBA_CPU_CLONES
#define MAMBA_CPU_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
