// CUDA LoRA kernels (issue 15): the low-rank update y += scale * (x A^T) B^T of PEFT's unmerged
// forward, segmented by adapter so that one launch serves every adapter of a pass. CPU twin:
// kernels/cpu/lora*.
//
// Layout: the rows of a pass that share an adapter's module form a segment (a run of rows; the
// engine merges neighbouring chunks on the same adapter). A launch takes a device array of
// segments, each naming its rows and its adapter's fp32 A, B, rank and scale, so a pass mixing
// adapters costs the same number of launches as one with a single adapter. Rows outside every
// segment (the base model's, or an adapter without this module) are not touched.
//
// Two steps per site: LoraShrink writes t[row, :rank] = scale * x[row] A^T (t fp32, ldt >=
// kMaxLoraRank columns), LoraExpand adds t[row, :rank] B^T to y[row]. Both sum their products in
// a fixed order (over k, then over j, sequentially in each thread) and tile rows within a
// segment only, so a row's result never depends on the other rows of the pass: a request gets
// bitwise the same update alone as batched with others (and no atomics are used).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace mamba::kernels::cuda {

inline constexpr int kMaxLoraRank = 64;

// One run of rows under one adapter's module. Device-side array elements (plain data: the host
// fills them in pinned memory and copies them over).
struct LoraSegment {
  int64_t row_begin = 0;  // first row of x, t and y
  int64_t rows = 0;
  // Linear: A [rank, in] row-major (lora_A.weight). Embedding: A transposed, [vocab, rank], so
  // that a token's column is one contiguous row.
  const float* a = nullptr;
  const float* b = nullptr;  // [out, rank] row-major (lora_B.weight, lora_embedding_B)
  int32_t rank = 0;          // 1..kMaxLoraRank (a segment outside that range is skipped)
  float scale = 0.0f;        // alpha / r (or / sqrt(r)), applied in the shrink
};

// t[row, j] = scale * sum_k x[row, k] * A[j, k] for the segments' rows and j < rank.
struct LoraShrinkArgs {
  const void* x = nullptr;  // [*, in] in x_dtype (fp32, bf16, fp16), rows ldx apart
  DType x_dtype = DType::kF32;
  int64_t ldx = 0;
  int64_t in = 0;
  const LoraSegment* segments = nullptr;  // device array [num_segments]
  int64_t num_segments = 0;
  int64_t max_rows = 0;  // the most rows of any segment (sizes the grid; host-known)
  float* t = nullptr;    // [*, ldt] fp32
  int64_t ldt = 0;       // >= kMaxLoraRank
};

cudaError_t LoraShrink(const LoraShrinkArgs& a, cudaStream_t stream);

// The embedding's shrink, a gather: t[row, j] = scale * A^T[tokens[row], j]. A token outside
// [0, vocab) gives a row of NaNs (as the Embedding kernel does; callers validate ids).
struct LoraEmbeddingShrinkArgs {
  const int32_t* tokens = nullptr;  // [*]
  int64_t vocab = 0;
  const LoraSegment* segments = nullptr;  // a: [vocab, rank] (transposed lora_embedding_A)
  int64_t num_segments = 0;
  int64_t max_rows = 0;
  float* t = nullptr;
  int64_t ldt = 0;
};

cudaError_t LoraEmbeddingShrink(const LoraEmbeddingShrinkArgs& a, cudaStream_t stream);

// y[row, o] += sum_j t[row, j] * B[o, j] for the segments' rows, o < out, j < rank.
struct LoraExpandArgs {
  const float* t = nullptr;  // LoraShrink's output
  int64_t ldt = 0;
  const LoraSegment* segments = nullptr;  // the same array the shrink took
  int64_t num_segments = 0;
  int64_t max_rows = 0;
  float* y = nullptr;  // [*, out] fp32, rows ldy apart
  int64_t ldy = 0;
  int64_t out = 0;
};

cudaError_t LoraExpand(const LoraExpandArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
