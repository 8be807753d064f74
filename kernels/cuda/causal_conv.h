// CUDA causal depthwise conv1d + bias + SiLU (the Mamba mixer's conv1d): prefill over packed
// chunks, and the decode step over a batch of slots. CPU twin: kernels/cpu/causal_conv.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/packed_chunks.h"
#include "kernels/dtype.h"

namespace mamba::kernels::cuda {

inline constexpr int kMaxConvWidth = 8;

// All pointers are device pointers. The state of slot s lives at state + s * state_slot_stride:
// [width-1, dim] fp32, the slot's last width-1 inputs (x + x_bias), oldest first.
struct CausalConvArgs {
  const float* x = nullptr;  // [tokens, dim], rows x_stride apart (in_proj's x half)
  int64_t x_stride = 0;
  const float* x_bias = nullptr;  // [dim] added to x first (in_proj's bias) or nullptr
  const float* weight = nullptr;  // [width, dim]: weight[k*dim + d] = conv1d.weight[d, 0, k];
                                  // k = width-1 multiplies the current token
  const float* bias = nullptr;    // [dim] or nullptr
  float* state = nullptr;
  int64_t state_slot_stride = 0;  // elements between consecutive slots
  float* out = nullptr;           // [tokens, dim] = silu(conv + bias), rows out_stride apart
  int64_t out_stride = 0;
  void* out_lowp = nullptr;  // optional copy of out in out_lowp_dtype (a GEMM input)
  DType out_lowp_dtype = DType::kBF16;
  int64_t out_lowp_stride = 0;
  int64_t dim = 0;
  int width = 4;  // 1..kMaxConvWidth
  // Prefill: chunks in order, back to back from row 0 (chunk i begins where i-1 ends), each
  // with a distinct slot; tokens = sum of lengths.
  const ChunkDesc* chunks = nullptr;  // device [num_chunks]
  int num_chunks = 0;
  int64_t tokens = 0;
  // Decode: row b is one token of slot slots[b] (distinct; -1 = padding row: zero history,
  // state untouched); used instead of chunks by CausalConvDecode.
  const int32_t* slots = nullptr;  // device [tokens]
};

// Prefill: two kernels (outputs, then the state write-back), enqueued on `stream`. Returns the
// launch error, or cudaErrorInvalidValue for arguments out of range.
cudaError_t CausalConv(const CausalConvArgs& a, cudaStream_t stream);

// Decode step: one token per row, state shifted in place through `slots`.
cudaError_t CausalConvDecode(const CausalConvArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
