// Between int8_gemm.cc (quantization, dispatch, scalar path) and int8_gemm_avx512.cc (the
// AVX-512 kernels). Not for other callers.
#pragma once

#include <cstdint>

#include "kernels/cpu/int8_gemm.h"

namespace mamba::kernels::cpu::int8_internal {

// One slice of rows [m] of a product, its activations prepared for the kernels.
struct Job {
  const uint32_t* xq = nullptr;  // [m][k_pad / 4]: quads of u8 (q + 128), pad q = 0 (kVnni)
  const float* xs = nullptr;     // [m] activation scales (kVnni)
  const float* xf = nullptr;     // [m][k_pad] fp32, pad 0 (kDequantF32)
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

// Output column blocks [b0, b1) (16 columns each) of all the job's rows.
void VnniBlocks(const Job& job, int64_t b0, int64_t b1);
void DequantF32Blocks(const Job& job, int64_t b0, int64_t b1);

}  // namespace mamba::kernels::cpu::int8_internal
