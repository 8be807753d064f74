// Sampling on the GPU, so that only token ids and requested log-probs cross PCIe instead of
// whole [rows, vocab] logits. GreedySample: argmax + log-probs of every row. DrawSample: one
// draw per listed row by engine::DrawByRule's definition (greedy, or temperature / top-k / top-p
// / min-p with a given uniform), deterministic per row whatever the batch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace mamba::kernels::cuda {

inline constexpr int kMaxTopN = 20;  // engine::kMaxTopLogprobs

struct GreedyArgs {
  const float* logits = nullptr;  // [rows, vocab], rows logits_stride apart (device)
  int64_t logits_stride = 0;
  int64_t rows = 0;
  int64_t vocab = 0;
  int top_n = 0;                  // 0..kMaxTopN
  int32_t* token = nullptr;       // [rows] argmax; NaNs are never chosen (all-NaN row: 0)
  float* logprob = nullptr;       // [rows] log_softmax at the argmax
  int32_t* top_ids = nullptr;     // [rows, top_n] best first, ties -> lowest id; -1 past vocab
  float* top_logprobs = nullptr;  // [rows, top_n]
};

cudaError_t GreedySample(const GreedyArgs& a, cudaStream_t stream);

// One draw's rule (engine::DrawRule, device layout): 40 bytes, uploaded as an array.
struct DrawRow {
  double uniform = 0.0;      // [0, 1); unused when greedy
  float temperature = 0.0f;  // below 1e-5: greedy (argmax)
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // [0, 1]; 1: off
  float min_p = 0.0f;        // 0: off
  int32_t row = 0;           // which logits row to draw from
  int32_t top_n = 0;         // 0..top_stride alternatives to report
  int32_t want_logprob = 0;  // nonzero: fill logprob
  int32_t unused = 0;
};
static_assert(sizeof(DrawRow) == 40, "DrawRow is uploaded as raw bytes");

struct DrawArgs {
  const float* logits = nullptr;  // [logits_rows, vocab], rows logits_stride apart (device)
  int64_t logits_stride = 0;
  int64_t logits_rows = 0;
  int64_t vocab = 0;               // < 2^31 - 1
  const DrawRow* rules = nullptr;  // [draws] (device)
  int64_t draws = 0;
  int top_stride = 0;             // 0..kMaxTopN: columns of top_ids / top_logprobs
  int32_t* token = nullptr;       // [draws]; -1 where a rule's row is out of range
  float* logprob = nullptr;       // [draws] log_softmax at the token (want_logprob rows)
  int32_t* top_ids = nullptr;     // [draws, top_stride]: the top_n best finite entries, best
  float* top_logprobs = nullptr;  // first (ties -> lower id), -1 / -inf past them
};

// One block per draw. Greedy: the argmax (ties -> lowest id, NaN never chosen). Otherwise the
// kept set of DrawByRule (p = exp((logit - max) / T) over finite logits, ranked by logit then
// id; top_k, then the smallest prefix holding top_p of its mass, then p >= min_p) found by
// bisection over the logits' order-preserving keys, and the inverse-CDF walk over it in id
// order. p is computed bit for bit as the host does; masses are float64 sums in a fixed order
// (so a row's draw does not depend on the batch), which differ from the host's sequential
// float64 sums by rounding only (relative ~1e-12).
cudaError_t DrawSample(const DrawArgs& a, cudaStream_t stream);

}  // namespace mamba::kernels::cuda
