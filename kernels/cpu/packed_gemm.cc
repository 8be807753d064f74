#include "kernels/cpu/packed_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/memory.h"
#include "kernels/cpu/threading.h"

namespace mamba::kernels::cpu {
namespace {

constexpr int kMr = 8;            // rows per micro-tile
constexpr int kNr = 2;            // 16-column blocks per micro-tile
constexpr int kNrSmallM = 4;      // for m <= kMr/2: more weight streams in flight per thread
constexpr int64_t kMBlock = 128;  // rows whose activations stay in L2 while a panel streams

#define MAMBA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))

// Stores one 16-wide accumulator into y (first `cols` lanes), adding bias / old y.
MAMBA_AVX512 inline void StoreBlock(__m512 acc, float* y, const float* bias, bool accumulate,
                                    int cols) {
  const __mmask16 mask = cols >= 16 ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
  if (bias) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, bias));
  if (accumulate) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, y));
  _mm512_mask_storeu_ps(y, mask, acc);
}

// MR rows x NR column blocks. xs: activations (bf16 pairs as int32, or fp32), row stride xs_ld
// elements; wp: the first column block's panel, next block at wp + panel_stride.
template <int MR, int NR, bool kBf16>
MAMBA_AVX512 void MicroKernel(const void* xs, int64_t xs_ld, const std::byte* wp,
                              int64_t panel_stride, int64_t kp, float* y, int64_t ldy,
                              const float* bias, bool accumulate, int last_cols) {
  __m512 acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < kp; ++kk) {
    __m512 w[NR];
    for (int c = 0; c < NR; ++c) {
      w[c] = _mm512_loadu_ps(reinterpret_cast<const float*>(wp + c * panel_stride) + kk * 16);
    }
    for (int r = 0; r < MR; ++r) {
      if constexpr (kBf16) {
        const __m512i xb = _mm512_set1_epi32(static_cast<const int32_t*>(xs)[r * xs_ld + kk]);
        for (int c = 0; c < NR; ++c) {
          acc[r][c] =
              _mm512_dpbf16_ps(acc[r][c], (__m512bh)xb, (__m512bh)_mm512_castps_si512(w[c]));
        }
      } else {
        const __m512 xb = _mm512_set1_ps(static_cast<const float*>(xs)[r * xs_ld + kk]);
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_fmadd_ps(xb, w[c], acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) {
      StoreBlock(acc[r][c], y + r * ldy + c * 16, bias ? bias + c * 16 : nullptr, accumulate,
                 c == NR - 1 ? last_cols : 16);
    }
  }
}

template <int NR, bool kBf16>
MAMBA_AVX512 void RowTiles(const void* xs, int64_t xs_ld, int64_t m, const std::byte* wp,
                           int64_t panel_stride, int64_t kp, float* y, int64_t ldy,
                           const float* bias, bool accumulate, int last_cols) {
  const size_t esz = 4;  // both layouts hold 4-byte units per row step (pair of bf16 or fp32)
  int64_t r = 0;
  for (; r + kMr <= m; r += kMr) {
    MicroKernel<kMr, NR, kBf16>(static_cast<const std::byte*>(xs) + r * xs_ld * esz, xs_ld, wp,
                                panel_stride, kp, y + r * ldy, ldy, bias, accumulate, last_cols);
  }
  const auto* xr = static_cast<const std::byte*>(xs) + r * xs_ld * esz;
  float* yr = y + r * ldy;
  switch (m - r) {
#define MAMBA_TAIL(R)                                                                     \
  case R:                                                                                 \
    MicroKernel<R, NR, kBf16>(xr, xs_ld, wp, panel_stride, kp, yr, ldy, bias, accumulate, \
                              last_cols);                                                 \
    break;
    // clang-format off
    MAMBA_TAIL(1) MAMBA_TAIL(2) MAMBA_TAIL(3) MAMBA_TAIL(4) MAMBA_TAIL(5) MAMBA_TAIL(6)
    MAMBA_TAIL(7)
#undef MAMBA_TAIL
    default: break;
    // clang-format on
  }
}

// Activations in the kernel's unit: bf16 pairs (odd k padded with 0) or fp32 copied densely.
const void* PrepareActivations(const PackedGemmArgs& a, std::vector<uint32_t>* buf) {
  const PackedWeight& w = *a.w;
  buf->resize(static_cast<size_t>(a.m * w.k_packed));
  for (int64_t i = 0; i < a.m; ++i) {
    const float* src = a.x + i * a.ldx;
    uint32_t* dst = buf->data() + i * w.k_packed;
    if (w.dtype == DType::kF32) {
      std::memcpy(dst, src, static_cast<size_t>(w.k) * 4);
      continue;
    }
    for (int64_t p = 0; p < w.k_packed; ++p) {
      const uint32_t lo = F32ToBf16(src[2 * p]);
      const uint32_t hi = 2 * p + 1 < w.k ? F32ToBf16(src[2 * p + 1]) : 0u;
      dst[p] = lo | hi << 16;
    }
  }
  return buf->data();
}

}  // namespace

bool PackedGemmSupported(DType dtype) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return false;
  if (dtype == DType::kBF16) return __builtin_cpu_supports("avx512bf16");
  return dtype == DType::kF32;
}

absl::StatusOr<PackedWeight> PackWeight(const void* src, DType src_dtype, int64_t n, int64_t k,
                                        DType dtype) {
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("packed GEMM has no ", Name(dtype), " kernel"));
  }
  PackedWeight w;
  w.dtype = dtype;
  w.n = n;
  w.k = k;
  w.k_packed = dtype == DType::kF32 ? k : (k + 1) / 2;
  const int64_t blocks = (n + kPackCols - 1) / kPackCols;
  w.bytes = blocks * w.k_packed * kPackCols * 4;
  w.data =
      std::shared_ptr<std::byte[]>(AllocateStreamed(static_cast<size_t>(w.bytes)), FreeDeleter());
  if (!w.data) return absl::ResourceExhaustedError("out of memory packing weights");
  const size_t src_row = static_cast<size_t>(k) * SizeOf(src_dtype);
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t b = b0; b < b1; ++b) {
      auto* panel = reinterpret_cast<uint32_t*>(w.data.get()) + b * w.k_packed * kPackCols;
      for (int64_t c = 0; c < kPackCols; ++c) {
        const int64_t col = b * kPackCols + c;
        if (col < n) {
          ConvertToF32(static_cast<const std::byte*>(src) + col * src_row, src_dtype, row.data(),
                       k);
        } else {
          std::fill(row.begin(), row.end(), 0.0f);
        }
        for (int64_t p = 0; p < w.k_packed; ++p) {
          uint32_t v;
          if (dtype == DType::kF32) {
            std::memcpy(&v, &row[static_cast<size_t>(p)], 4);
          } else {
            const uint32_t lo = F32ToBf16(row[static_cast<size_t>(2 * p)]);
            const uint32_t hi = 2 * p + 1 < k ? F32ToBf16(row[static_cast<size_t>(2 * p + 1)]) : 0u;
            v = lo | hi << 16;
          }
          panel[p * kPackCols + c] = v;
        }
      }
    }
  });
  return w;
}

absl::Status PackedGemm(const PackedGemmArgs& a) {
  const PackedWeight& w = *a.w;
  if (a.m == 0) return absl::OkStatus();
  if (!PackedGemmSupported(w.dtype)) {
    return absl::FailedPreconditionError("packed GEMM needs AVX-512 on this CPU");
  }
  thread_local std::vector<uint32_t> buf;
  const void* xs = PrepareActivations(a, &buf);
  const int64_t blocks = (w.n + kPackCols - 1) / kPackCols;
  const int64_t panel_stride = w.k_packed * kPackCols * 4;  // bytes per column block
  const auto* base = w.data.get();
  for (int64_t m0 = 0; m0 < a.m; m0 += kMBlock) {
    const int64_t mb = std::min(kMBlock, a.m - m0);
    const auto* xm = reinterpret_cast<const std::byte*>(xs) + m0 * w.k_packed * 4;
    const int nr_max = mb <= kMr / 2 ? kNrSmallM : kNr;
    const int64_t groups = (blocks + nr_max - 1) / nr_max;
    auto run = [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t b = g * nr_max;
        const int nr = static_cast<int>(std::min<int64_t>(nr_max, blocks - b));
        const int64_t col = b * kPackCols;
        const int last_cols =
            static_cast<int>(std::min<int64_t>(16, w.n - (b + nr - 1) * kPackCols));
        const float* bias = a.bias ? a.bias + col : nullptr;
        float* y = a.y + m0 * a.ldy + col;
        const std::byte* wp = base + b * panel_stride;
        const bool bf16 = w.dtype == DType::kBF16;
        switch (nr * 2 + (bf16 ? 1 : 0)) {
#define MAMBA_NR(NR)                                                                      \
  case NR * 2 + 1:                                                                        \
    RowTiles<NR, true>(xm, w.k_packed, mb, wp, panel_stride, w.k_packed, y, a.ldy, bias,  \
                       a.accumulate, last_cols);                                          \
    break;                                                                                \
  case NR * 2:                                                                            \
    RowTiles<NR, false>(xm, w.k_packed, mb, wp, panel_stride, w.k_packed, y, a.ldy, bias, \
                        a.accumulate, last_cols);                                         \
    break;
          // clang-format off
          MAMBA_NR(1) MAMBA_NR(2) MAMBA_NR(3) MAMBA_NR(4)
#undef MAMBA_NR
          default: break;
          // clang-format on
        }
      }
    };
    // Only a tiny product runs on one thread: the small decode products (dt_proj, x_proj:
    // 0.1-0.3 MB of weights) read from memory, and two threads read them faster even after the
    // fork (measured: 15 -> 10 us per dt_proj at batch 1 on the 130m shape).
    if (mb * w.n * w.k < (1 << 14)) {
      run(0, groups);
    } else {
      ParallelFor(groups, run);
    }
  }
  return absl::OkStatus();
}

}  // namespace mamba::kernels::cpu
