// int8 weights for the CPU engine (issue 17): W [n, k] quantized once at load to symmetric int8
// with an fp32 scale per output row (or per group of K inputs), packed for AVX-512 VNNI, and
// y [m, n] (+)= x [m, k] W^T (+ bias) with fp32 x and y.
//
// Paths (Int8Path): kVnni quantizes each activation row to int8 on the fly (one scale per row)
// and multiplies with vpdpbusd into exact int32 sums; kAvxVnni does the same with the 256-bit VEX
// vpdpbusd (AVX-VNNI), kAvx2 with vpmaddubsw on |w| and sign-adjusted x (exact: no pair reaches
// the int16 limit), both on the same packed weights; kDequantF32 keeps fp32 activations and
// converts the weights to fp32 in registers; kScalar is the portable fallback and does the same
// integer arithmetic. kAuto takes the first this CPU runs of kVnni, kAvxVnni, kAvx2, kScalar
// (no AMX-INT8 path: no machine here has AMX to test one on); kVnni for every m, including m = 1:
// at m = 1 it was faster than kDequantF32 on the 130m shapes (in_proj 59-77 vs 85-91 us, out_proj
// 18-20 vs 27-29 us) and equal on the 1.4b one (docs/PERF.md, "int8 GEMM kernels"), and since its
// integer sums are exact and every output goes through the same float steps, a row's bits do not
// depend on m, the tile or the thread (kScalar, kAvx2 and kAvxVnni give the same bits as kVnni).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace mamba::kernels::cpu {

inline constexpr int64_t kInt8Cols = 16;  // columns per packed block (one 512-bit vector)

struct Int8Weight {
  int64_t n = 0;
  int64_t k = 0;
  int64_t k_pad = 0;       // k rounded up to 4: a vpdpbusd lane sums 4 consecutive inputs
  int64_t n_pad = 0;       // n rounded up to kInt8Cols
  int64_t group_size = 0;  // inputs per scale, a multiple of 4; k_pad for one scale per row
  int64_t groups = 0;      // k_pad / group_size rounded up
  // int8 [n_pad / 16][k_pad / 4][16][4]: block, input quad, column, input within the quad.
  std::shared_ptr<std::byte[]> data;
  std::vector<float> scales;     // [groups][n_pad]; w[j][l] ~ q[j][l] * scales[l / group][j]
  std::vector<int32_t> offsets;  // [groups][n_pad]: 128 x the sum of q over the group: what
                                 // u8 activations (q + 128) add to the vpdpbusd sums
  int64_t bytes = 0;             // of data

  int8_t Q(int64_t j, int64_t l) const {  // quantized W[j][l]
    const int64_t off = (j / kInt8Cols) * k_pad * kInt8Cols + (l / 4) * 64 + (j % kInt8Cols) * 4;
    return static_cast<int8_t>(data[static_cast<size_t>(off + l % 4)]);
  }
  float Scale(int64_t j, int64_t l) const {
    return scales[static_cast<size_t>((l / group_size) * n_pad + j)];
  }
};

// Quantizes W [n, k] stored as `src_dtype`: per row and group, scale = max|w| / 127 and
// q = round-to-nearest-even(w * 127 / max|w|). group_size 0 means one group per row; otherwise a
// positive multiple of 4. Row blocks are converted in parallel.
absl::StatusOr<Int8Weight> QuantizeWeight(const void* src, DType src_dtype, int64_t n, int64_t k,
                                          int64_t group_size = 0);

// The number of scales per row of a [n, k] weight quantized with `group_size` (0: per row): the
// groups of Int8Weight, which cover k rounded up to 4 (k_pad). A quantized checkpoint's
// `X.weight_scale` tensors are [n, Int8GroupCount(k, group_size)].
// Inline: Checkpoint::Open checks scale shapes with it without linking the kernels.
inline int64_t Int8GroupCount(int64_t k, int64_t group_size) {
  if (k <= 0 || group_size < 0 || group_size % 4 != 0) return 0;
  const int64_t k_pad = (k + 3) / 4 * 4;
  const int64_t g = group_size == 0 ? k_pad : (group_size < k_pad ? group_size : k_pad);
  return (k_pad + g - 1) / g;
}

// W [n, k] quantized exactly as QuantizeWeight does (the same per-row routine), but row-major for
// files: q [n, k] int8 and scales [n, Int8GroupCount(k, group_size)] fp32.
absl::Status QuantizeRowMajor(const void* src, DType src_dtype, int64_t n, int64_t k,
                              int64_t group_size, int8_t* q, float* scales);

// Row-major q [n, k] and scales [n, Int8GroupCount(k, group_size)] as QuantizeRowMajor writes
// them, dequantized to fp32 w [n, k] (q * scale), rows in parallel: a quantized checkpoint run in
// a float dtype. Refuses q = -128 (naming its position), as PackInt8Weight does.
absl::Status DequantizeRowMajor(const int8_t* q, const float* scales, int64_t n, int64_t k,
                                int64_t group_size, float* w);

// The packed Int8Weight (offsets included) of row-major q [n, k] and scales [n, groups] as
// QuantizeRowMajor writes them: PackInt8Weight(QuantizeRowMajor(W)) is QuantizeWeight(W), byte
// for byte. Refuses q = -128 (symmetric int8 is [-127, 127]) and negative or non-finite scales.
absl::StatusOr<Int8Weight> PackInt8Weight(const int8_t* q, const float* scales, int64_t n,
                                          int64_t k, int64_t group_size);

// W dequantized to fp32 [n, k] (q * scale).
std::vector<float> DequantizeWeight(const Int8Weight& w);

// One activation row x [k] to q [k] in [-127, 127]; returns its scale (max|x| / 127, 0 for a zero
// row, NaN for a row holding a NaN or an infinity, so that its outputs are NaN as in float),
// x ~ q * scale. Every path and the reference quantize with this rounding.
float QuantizeActivationRow(const float* x, int64_t k, int8_t* q);

enum class Int8Path : uint8_t { kAuto, kVnni, kDequantF32, kScalar, kAvx2, kAvxVnni };

// Whether this CPU runs `path` (kVnni: AVX-512 VNNI + BW; kDequantF32: AVX-512 VBMI + BW; kAvx2:
// AVX2 + FMA; kAvxVnni: those + AVX-VNNI).
bool Int8GemmSupported(Int8Path path);
// The path kAuto takes here: the first supported of kVnni, kAvxVnni, kAvx2, else kScalar.
Int8Path Int8AutoPath();
// "avx512-vnni", "avx-vnni", "avx2", "scalar", ... (for logs and benchmark labels).
const char* Int8PathName(Int8Path path);

struct Int8GemmArgs {
  const float* x = nullptr;  // [m, k], rows ldx apart
  int64_t ldx = 0;
  const Int8Weight* w = nullptr;
  const float* bias = nullptr;  // [n] or nullptr
  float* y = nullptr;           // [m, n], rows ldy apart
  int64_t ldy = 0;
  int64_t m = 0;
  bool accumulate = false;  // y += x W^T (+ bias)
  Int8Path path = Int8Path::kAuto;
};

absl::Status Int8Gemm(const Int8GemmArgs& a);

// Reference in T (double in the tests): W dequantized; x quantized per row first when
// `quantize_x` (what kVnni and kScalar compute, up to their fp32 rounding), else used as is
// (kDequantF32).
template <typename T>
void Int8GemmReference(const float* x, int64_t ldx, const Int8Weight& w, const float* bias, T* y,
                       int64_t ldy, int64_t m, bool accumulate, bool quantize_x) {
  std::vector<int8_t> q(static_cast<size_t>(w.k));
  std::vector<T> xr(static_cast<size_t>(w.k));
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * ldx;
    if (quantize_x) {
      const float s = QuantizeActivationRow(xi, w.k, q.data());
      for (int64_t l = 0; l < w.k; ++l) xr[l] = T(q[l]) * T(s);
    } else {
      for (int64_t l = 0; l < w.k; ++l) xr[l] = T(xi[l]);
    }
    for (int64_t j = 0; j < w.n; ++j) {
      T acc = bias ? T(bias[j]) : T(0);
      for (int64_t l = 0; l < w.k; ++l) acc += xr[l] * T(w.Q(j, l)) * T(w.Scale(j, l));
      y[i * ldy + j] = accumulate ? y[i * ldy + j] + acc : acc;
    }
  }
}

}  // namespace mamba::kernels::cpu
