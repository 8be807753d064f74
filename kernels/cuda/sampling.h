// Greedy sampling on the GPU: per row of logits, the argmax (ties -> lowest id), its log-prob
// and the top-n log-probs, so that only [rows, 1 + top_n] values cross PCIe instead of whole
// rows. Log-probs are log_softmax of the raw row, as engine/sampling.h reports them.
//
// This is the first version: temperature / top-k / top-p / min-p / penalties still run on the
// host (engine/sampling.h's Sampler over a copied row); see docs of CudaBackend::SampleGreedy.
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

}  // namespace mamba::kernels::cuda
