// The 256-bit int8 kernels (see int8_gemm.h) on the AVX-512 path's packed layout, half a block
// ([8 columns][4 inputs], 32 bytes) per vector: kAvx2 (AVX2 + FMA, signed activations) and
// kAvxVnni (VEX vpdpbusd on u8 activations, as kVnni). Both give kScalar's bits: exact int32 sums,
// then the float steps of int8_gemm_internal.h lane by lane. Each function carries its own target
// attribute (as in int8_gemm_avx512.cc), so no inline code of a shared header is compiled for AVX2
// here and picked by the linker for baseline callers.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/int8_gemm_internal.h"

namespace mamba::kernels::cpu::int8_internal {
namespace {

#define MAMBA_AVX2 __attribute__((target("avx2,fma")))
#define MAMBA_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

constexpr int kMr = 4;  // rows per micro-tile

// int32 sums of 8 columns x 4 inputs, added to acc. AVX2: vpmaddubsw multiplies u8 by s8 and adds
// pairs into int16 with saturation, so it gets |w| (<= 128 as u8, also for q = -128) and x with
// w's sign (|x| <= 127: activations are quantized to [-127, 127]); a pair is at most
// 2 * 128 * 127 = 32512 < 32767, exact; vpmaddwd with ones adds the pairs into int32.
MAMBA_AVX2 inline __m256i DotAvx2(__m256i acc, __m256i x, __m256i w_abs, __m256i w) {
  const __m256i p16 = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// y[0, cols) (+)= v, 0 < cols <= 8; a partial half goes through a buffer, without scalar float
// arithmetic (which the compiler could contract differently from the vector steps).
MAMBA_AVX2 inline void StoreHalf(__m256 v, float* y, bool accumulate, int cols) {
  if (cols == 8) {
    if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(y), v);
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float buf[8] = {};
  if (accumulate) {
    std::memcpy(buf, y, static_cast<size_t>(cols) * 4);
    v = _mm256_add_ps(_mm256_load_ps(buf), v);
  }
  _mm256_store_ps(buf, v);
  std::memcpy(y, buf, static_cast<size_t>(cols) * 4);
}

MAMBA_AVX2 inline __m256 LoadHalf(const float* p, int cols) {
  if (cols == 8) return _mm256_loadu_ps(p);
  alignas(32) float buf[8] = {};
  std::memcpy(buf, p, static_cast<size_t>(cols) * 4);
  return _mm256_load_ps(buf);
}

}  // namespace

namespace avx2 {
constexpr bool kVnniDot = false;
#define MAMBA_TARGET MAMBA_AVX2
#include "kernels/cpu/int8_gemm_avx2_tiles.inc"
#undef MAMBA_TARGET
}  // namespace avx2

namespace avxvnni {
constexpr bool kVnniDot = true;
#define MAMBA_TARGET MAMBA_AVXVNNI
#include "kernels/cpu/int8_gemm_avx2_tiles.inc"
#undef MAMBA_TARGET
}  // namespace avxvnni

void Avx2Blocks(const Job& job, int64_t b0, int64_t b1) { avx2::Blocks(job, b0, b1); }
void AvxVnniBlocks(const Job& job, int64_t b0, int64_t b1) { avxvnni::Blocks(job, b0, b1); }

}  // namespace mamba::kernels::cpu::int8_internal
