// CUDA selective scan (Mamba's SSM) with dt bias + softplus, D skip and SiLU(z) gating fused:
// prefill over packed chunks (parallel over time within a chunk), and the single-step state
// update of a decode batch. CPU twin: kernels/cpu/selective_scan.h.
//   dt = softplus(dt_raw + dt_bias); h = exp(dt*A) * h + dt*B*x; y = (C.h + D*x) * silu(z + z_bias)
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/packed_chunks.h"
#include "kernels/dtype.h"

namespace mamba::kernels::cuda {

inline constexpr int64_t kMaxStateSize = 256;

// All pointers are device pointers; activations and state are fp32 whatever the weight dtype.
// The state of slot s lives at state + s * state_slot_stride: [d_state, dim] fp32.
struct SelectiveScanArgs {
  const float* x = nullptr;  // [tokens, dim] conv output, rows x_stride apart
  int64_t x_stride = 0;
  const float* dt = nullptr;  // [tokens, dim] dt_proj output before its bias
  int64_t dt_stride = 0;
  const float* dt_bias = nullptr;  // [dim]
  const float* a = nullptr;        // [d_state, dim] = -exp(A_log), transposed
  const float* b = nullptr;        // [tokens, d_state], rows bc_stride apart
  const float* c = nullptr;        // [tokens, d_state], rows bc_stride apart
  int64_t bc_stride = 0;
  const float* d_skip = nullptr;  // [dim]
  const float* z = nullptr;       // [tokens, dim] gate, rows z_stride apart
  int64_t z_stride = 0;
  const float* z_bias = nullptr;  // [dim] added to z first (in_proj's bias) or nullptr
  float* state = nullptr;
  int64_t state_slot_stride = 0;  // elements between consecutive slots
  void* out = nullptr;            // [tokens, dim] in out_dtype, rows out_stride apart
  DType out_dtype = DType::kF32;
  int64_t out_stride = 0;
  int64_t dim = 0;
  int64_t d_state = 0;  // 1..kMaxStateSize
  // Prefill: chunks in order, back to back from row 0, distinct slots (as CausalConvArgs).
  const ChunkDesc* chunks = nullptr;  // device [num_chunks]
  int num_chunks = 0;
  int64_t tokens = 0;
  // Decode: row b is one token of slot slots[b] (distinct; -1 = padding: zero state, not
  // written); used instead of chunks by SelectiveScanDecode.
  const int32_t* slots = nullptr;  // device [tokens]
};

// Prefill. One block per (chunk, 8 channels); a warp owns a channel and scans 256-token
// sub-chunks in parallel over time (a warp scan of the (decay, input) pairs, carried from one
// sub-chunk to the next), so the cost per token does not grow with the chunk's length.
cudaError_t SelectiveScan(const SelectiveScanArgs& a, cudaStream_t stream);

// Decode step (selective_state_update): one thread per (row, channel), state in place.
cudaError_t SelectiveScanDecode(const SelectiveScanArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
