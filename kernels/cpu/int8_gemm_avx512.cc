// The AVX-512 int8 kernels (see int8_gemm.h): vpdpbusd on u8 activations x s8 weights, and fp32
// activations x weights converted to fp32 in registers. Each function carries its own target
// attribute, so the library builds for baseline x86-64 and dispatches at run time.
// GCC 12 reports the intrinsics' deliberately undefined pass-through operands (vpermb, the
// 128-bit extracts, the plain conversions) as maybe-uninitialized once they are inlined here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/int8_gemm_internal.h"

namespace mamba::kernels::cpu::int8_internal {
namespace {

#define MAMBA_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define MAMBA_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,fma")))

constexpr int kMr = 8;  // rows per micro-tile

MAMBA_VNNI inline __mmask16 Mask(int cols) {
  return cols >= 16 ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
}

// y[0, cols) = (bias +) v (+ y); bias is added by the caller when fused.
MAMBA_VNNI inline void Store(__m512 v, float* y, bool accumulate, int cols) {
  const __mmask16 mask = Mask(cols);
  if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y), v);
  _mm512_mask_storeu_ps(y, mask, v);
}

// MR rows x NR column blocks from block b. Per group: exact int32 sums of (q_x + 128) q_w, the
// offset removed with the group's offsets, scaled by the weight scales into fp32; at the end
// times the row's activation scale. These float steps are the same for every tile shape (and in
// the scalar path), so a row's bits do not depend on m.
template <int MR, int NR>
MAMBA_VNNI void VnniTile(const Job& job, int64_t r0, int64_t b, int last_cols) {
  const Int8Weight& w = *job.w;
  const int64_t k4 = w.k_pad / 4, g4 = w.group_size / 4, ps = w.k_pad * kInt8Cols;
  const std::byte* wp = w.data.get() + b * ps;
  const uint32_t* xq = job.xq + r0 * k4;
  __m512 facc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) facc[r][c] = _mm512_setzero_ps();
  for (int64_t g = 0; g < w.groups; ++g) {
    const int64_t kk0 = g * g4, kk1 = std::min(k4, kk0 + g4);
    __m512i acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_si512();
    for (int64_t kk = kk0; kk < kk1; ++kk) {
      __m512i wv[NR];
      for (int c = 0; c < NR; ++c) wv[c] = _mm512_loadu_si512(wp + c * ps + kk * 64);
      for (int r = 0; r < MR; ++r) {
        const __m512i xb = _mm512_set1_epi32(static_cast<int32_t>(xq[r * k4 + kk]));
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], xb, wv[c]);
      }
    }
    for (int c = 0; c < NR; ++c) {
      const int64_t off = g * w.n_pad + (b + c) * kInt8Cols;
      const __m512i corr = _mm512_loadu_si512(w.offsets.data() + off);
      const __m512 sc = _mm512_loadu_ps(w.scales.data() + off);
      for (int r = 0; r < MR; ++r) {
        const __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][c], corr));
        facc[r][c] = _mm512_fmadd_ps(f, sc, facc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    const __m512 xs = _mm512_set1_ps(job.xs[r0 + r]);
    float* y = job.y + (r0 + r) * job.ldy + b * kInt8Cols;
    for (int c = 0; c < NR; ++c) {
      const int cols = c == NR - 1 ? last_cols : 16;
      const float* bias = job.bias ? job.bias + (b + c) * kInt8Cols : nullptr;
      const __m512 v =
          bias ? _mm512_fmadd_ps(facc[r][c], xs, _mm512_maskz_loadu_ps(Mask(cols), bias))
               : _mm512_mul_ps(facc[r][c], xs);
      Store(v, y + c * 16, job.accumulate, cols);
    }
  }
}

template <int NR>
MAMBA_VNNI void VnniRows(const Job& job, int64_t b, int last_cols) {
  int64_t r = 0;
  for (; r + kMr <= job.m; r += kMr) VnniTile<kMr, NR>(job, r, b, last_cols);
  switch (job.m - r) {
#define MAMBA_TAIL(R)                      \
  case R:                                  \
    VnniTile<R, NR>(job, r, b, last_cols); \
    break;
    // clang-format off
    MAMBA_TAIL(1) MAMBA_TAIL(2) MAMBA_TAIL(3) MAMBA_TAIL(4) MAMBA_TAIL(5) MAMBA_TAIL(6)
    MAMBA_TAIL(7)
#undef MAMBA_TAIL
    default: break;
    // clang-format on
  }
}

// 16 int8 weights widened to fp32.
MAMBA_VBMI inline __m512 Widen(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)); }

// One fp32 row x NR column blocks: the 64 bytes of a block's input quad ([16 columns][4 inputs])
// are transposed with vpermb to [4 inputs][16 columns], each quarter widened to 16 fp32 and
// multiplied by the broadcast input; one accumulator per (block, input in the quad) so that no
// FMA waits on the previous one.
template <int NR>
MAMBA_VBMI void DequantTile(const Job& job, int64_t r, int64_t b, int last_cols) {
  const Int8Weight& w = *job.w;
  const int64_t k4 = w.k_pad / 4, g4 = w.group_size / 4, ps = w.k_pad * kInt8Cols;
  const std::byte* wp = w.data.get() + b * ps;
  const float* x = job.xf + r * w.k_pad;
  alignas(64) static constexpr uint8_t kIdx[64] = {
      0,  4,  8,  12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 1,  5,  9,  13, 17, 21,
      25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 2,  6,  10, 14, 18, 22, 26, 30, 34, 38, 42, 46,
      50, 54, 58, 62, 3,  7,  11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59, 63};
  const __m512i idx = _mm512_load_si512(kIdx);
  __m512 facc[NR];
  for (int c = 0; c < NR; ++c) facc[c] = _mm512_setzero_ps();
  for (int64_t g = 0; g < w.groups; ++g) {
    const int64_t kk0 = g * g4, kk1 = std::min(k4, kk0 + g4);
    __m512 acc[NR][4];
    for (int c = 0; c < NR; ++c)
      for (int j = 0; j < 4; ++j) acc[c][j] = _mm512_setzero_ps();
    for (int64_t kk = kk0; kk < kk1; ++kk) {
      const __m512 x0 = _mm512_set1_ps(x[4 * kk]), x1 = _mm512_set1_ps(x[4 * kk + 1]),
                   x2 = _mm512_set1_ps(x[4 * kk + 2]), x3 = _mm512_set1_ps(x[4 * kk + 3]);
      for (int c = 0; c < NR; ++c) {
        const __m512i t = _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(wp + c * ps + kk * 64));
        acc[c][0] = _mm512_fmadd_ps(Widen(_mm512_castsi512_si128(t)), x0, acc[c][0]);
        acc[c][1] = _mm512_fmadd_ps(Widen(_mm512_extracti32x4_epi32(t, 1)), x1, acc[c][1]);
        acc[c][2] = _mm512_fmadd_ps(Widen(_mm512_extracti32x4_epi32(t, 2)), x2, acc[c][2]);
        acc[c][3] = _mm512_fmadd_ps(Widen(_mm512_extracti32x4_epi32(t, 3)), x3, acc[c][3]);
      }
    }
    for (int c = 0; c < NR; ++c) {
      const __m512 sum =
          _mm512_add_ps(_mm512_add_ps(acc[c][0], acc[c][1]), _mm512_add_ps(acc[c][2], acc[c][3]));
      const __m512 sc = _mm512_loadu_ps(w.scales.data() + g * w.n_pad + (b + c) * kInt8Cols);
      facc[c] = _mm512_fmadd_ps(sum, sc, facc[c]);
    }
  }
  float* y = job.y + r * job.ldy + b * kInt8Cols;
  for (int c = 0; c < NR; ++c) {
    const int cols = c == NR - 1 ? last_cols : 16;
    __m512 v = facc[c];
    if (job.bias) {
      v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(Mask(cols), job.bias + (b + c) * kInt8Cols));
    }
    Store(v, y + c * 16, job.accumulate, cols);
  }
}

}  // namespace

void VnniBlocks(const Job& job, int64_t b0, int64_t b1) {
  const int64_t per = BlocksPerTile(job.m), n = job.w->n;
  for (int64_t b = b0; b < b1; b += per) {
    const int nr = static_cast<int>(std::min(per, b1 - b));
    const int last_cols = static_cast<int>(std::min<int64_t>(16, n - (b + nr - 1) * kInt8Cols));
    switch (nr) {
      case 1:
        VnniRows<1>(job, b, last_cols);
        break;
      case 2:
        VnniRows<2>(job, b, last_cols);
        break;
      case 3:
        VnniRows<3>(job, b, last_cols);
        break;
      default:
        VnniRows<4>(job, b, last_cols);
        break;
    }
  }
}

void DequantF32Blocks(const Job& job, int64_t b0, int64_t b1) {
  const int64_t n = job.w->n;
  for (int64_t b = b0; b < b1; b += 4) {
    const int nr = static_cast<int>(std::min<int64_t>(4, b1 - b));
    const int last_cols = static_cast<int>(std::min<int64_t>(16, n - (b + nr - 1) * kInt8Cols));
    for (int64_t r = 0; r < job.m; ++r) {
      switch (nr) {
        case 1:
          DequantTile<1>(job, r, b, last_cols);
          break;
        case 2:
          DequantTile<2>(job, r, b, last_cols);
          break;
        case 3:
          DequantTile<3>(job, r, b, last_cols);
          break;
        default:
          DequantTile<4>(job, r, b, last_cols);
          break;
      }
    }
  }
}

}  // namespace mamba::kernels::cpu::int8_internal
