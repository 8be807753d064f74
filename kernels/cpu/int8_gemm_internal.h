// Between int8_gemm.cc (quantization, dispatch, scalar path), int8_gemm_avx512.cc (the AVX-512
// kernels) and int8_gemm_avx2.cc (the 256-bit ones). Not for other callers.
#pragma once

#include <cstdint>

#include "kernels/cpu/int8_gemm.h"

namespace mamba::kernels::cpu::int8_internal {

// One slice of rows [m] of a product, its activations prepared for the kernels.
struct Job {
  // [m][k_pad / 4]: quads of q, pad q = 0; as u8 q + 128 for the vpdpbusd paths (kVnni, kAvxVnni),
  // as s8 q for kAvx2 and kScalar.
  const uint32_t* xq = nullptr;
  const float* xs = nullptr;  // [m] activation scales (the integer paths)
  const float* xf = nullptr;  // [m][k_pad] fp32, pad 0 (kDequantF32)
  int64_t m = 0;
  const Int8Weight* w = nullptr;
  const float* bias = nullptr;  // [n] or nullptr
  float* y = nullptr;           // [m, n], rows ldy apart
  int64_t ldy = 0;
  bool accumulate = false;
};

// Column blocks one kernel call covers side by side (more weight streams in flight for few rows);
// the dispatcher splits the blocks among threads in multiples of this.
inline int64_t BlocksPerTile(int64_t m) { return m <= 4 ? 4 : 2; }

// The float steps of every integer path (kVnni, kAvxVnni, kAvx2, kScalar), lane by lane, so that
// they give the same bits (int8_gemm_test holds them to it). With S_g = sum over group g of
// q_x q_w, exact in int32 (the vpdpbusd paths subtract the group's offset from their u8 sums):
//   facc = 0;  per group in order: facc = fma(float(S_g), w_scale[g][j], facc)
//   v = bias ? fma(facc, x_scale, bias[j]) : facc * x_scale;   y = accumulate ? y + v : v
// (kDequantF32 has its own float sums and is not bitwise equal to these.)

// Output column blocks [b0, b1) (16 columns each) of all the job's rows.
void VnniBlocks(const Job& job, int64_t b0, int64_t b1);
void DequantF32Blocks(const Job& job, int64_t b0, int64_t b1);
void Avx2Blocks(const Job& job, int64_t b0, int64_t b1);     // AVX2 + FMA
void AvxVnniBlocks(const Job& job, int64_t b0, int64_t b1);  // AVX2 + FMA + AVX-VNNI

}  // namespace mamba::kernels::cpu::int8_internal
