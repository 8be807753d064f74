// CUDA multi-head SSM of Mamba-2 (HF Mamba2Mixer's recurrence) over packed chunks, and the same
// kernel for a decode batch (one token per row, slots by index). CPU twin:
// kernels/cpu/mamba2_scan.h, whose math and state layout this follows. Per head h (group
// g = h / (heads / groups)):
//   dt = clamp(softplus(dt_raw[h] + dt_bias[h]), dt_min, dt_max); dA = exp(dt * A[h])
//   S[n, p] = dA * S[n, p] + dt * B[g, n] * x[h, p];  y[h, p] = sum_n C[g, n] S[n, p]
//   out[h, p] = (y[h, p] + D[h] * x[h, p]) * silu(z[h, p])
// Sequential in time like the CPU kernel, so a prompt in any chunking equals token-by-token
// decoding bitwise on one device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/packed_chunks.h"

namespace mamba::kernels::cuda {

inline constexpr int64_t kMaxMamba2StateSize = 256;

// All pointers are device pointers; everything is fp32 (the gated RMS norm after the scan
// produces the out_proj input in the compute dtype). The state of slot s lives at
// state + s * state_slot_stride: [heads, d_state, head_dim].
struct Mamba2ScanArgs {
  const float* x = nullptr;  // [tokens, heads * head_dim] conv output, rows x_stride apart
  int64_t x_stride = 0;
  const float* dt = nullptr;  // [tokens, heads] raw dt (before its bias), rows dt_stride apart
  int64_t dt_stride = 0;
  const float* dt_bias = nullptr;  // [heads]
  const float* a = nullptr;        // [heads] = -exp(A_log)
  const float* b = nullptr;        // [tokens, groups * d_state], rows bc_stride apart
  const float* c = nullptr;        // [tokens, groups * d_state], rows bc_stride apart
  int64_t bc_stride = 0;
  const float* d_skip = nullptr;  // [heads]
  const float* z = nullptr;       // [tokens, heads * head_dim] gate, rows z_stride apart
  int64_t z_stride = 0;
  float* state = nullptr;
  int64_t state_slot_stride = 0;  // elements between consecutive slots
  float* out = nullptr;           // [tokens, heads * head_dim], rows out_stride apart
  int64_t out_stride = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  int64_t d_state = 0;  // 1..kMaxMamba2StateSize
  int64_t groups = 1;   // divides heads
  float dt_min = 0.0f;
  float dt_max = 0.0f;  // 0: no upper limit
  // Prefill: chunks back to back from row 0, distinct slots (as CausalConvArgs).
  const ChunkDesc* chunks = nullptr;  // device [num_chunks]
  int num_chunks = 0;
  int64_t tokens = 0;
  // Decode: row b is one token of slot slots[b] (distinct; -1 = padding: zero state, not
  // written); used instead of chunks by Mamba2ScanDecode.
  const int32_t* slots = nullptr;  // device [tokens]
};

// Whether the kernels take this shape: d_state in 1..kMaxMamba2StateSize and few enough
// (head, head_dim tile) blocks per token for the grid (Codestral's 128 x 64 needs 1024).
bool Mamba2ScanShapeSupported(int64_t heads, int64_t head_dim, int64_t d_state);

// Prefill. One block per (chunk, head, 8 head_dim columns); a warp owns a column and keeps its
// d_state states in registers (lanes over d_state), walking the chunk's tokens in order with
// B, C, dt, x and z staged in shared memory 16 tokens at a time.
cudaError_t Mamba2Scan(const Mamba2ScanArgs& a, cudaStream_t stream);

// Decode step: the same kernel with row b as a one-token chunk of slots[b], state in place.
cudaError_t Mamba2ScanDecode(const Mamba2ScanArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
