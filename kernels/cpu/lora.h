// LoRA updates on the CPU (issue 15): y[row] += (x[row] A^T) (scale B)^T for some rows of a
// batch, in fp32. Each row is computed alone, always in the same order, so a row's result never
// depends on which other rows (or adapters) share the step.
#pragma once

#include <cstdint>
#include <span>

namespace mamba::kernels::cpu {

struct LoraRowsArgs {
  const float* x = nullptr;  // [rows, in], rows ldx apart (the base GEMM's input)
  int64_t ldx = 0;
  const float* a = nullptr;   // [rank, in]  (PEFT's lora_A.weight)
  const float* bt = nullptr;  // [rank, out] (PEFT's lora_B.weight transposed, times scale)
  float* y = nullptr;         // [rows, out], rows ldy apart: the base GEMM's output, added to
  int64_t ldy = 0;
  int64_t in = 0, out = 0, rank = 0;
  std::span<const int32_t> rows;  // which rows of x and y (distinct)
};

// For each listed row r: t = x[r] A^T (rank floats), then y[r] += t Bt. Threads split the rows.
void LoraAddRows(const LoraRowsArgs& args);
// Several such updates (e.g. one per adapter in a step; their rows distinct) in one parallel
// region: a step mixing adapters pays one fork-join per site, not one per adapter.
void LoraAddRows(std::span<const LoraRowsArgs> updates);

struct LoraEmbeddingArgs {
  const float* at = nullptr;        // [vocab, rank]: PEFT's lora_embedding_A transposed
  const float* bt = nullptr;        // [rank, out]:   lora_embedding_B transposed, times scale
  const int32_t* tokens = nullptr;  // token id of each row
  float* y = nullptr;               // [rows, out], rows ldy apart: the embeddings, added to
  int64_t ldy = 0;
  int64_t out = 0, rank = 0;
  std::span<const int32_t> rows;
};

// For each listed row r: y[r] += At[tokens[r]] Bt.
void LoraAddEmbeddingRows(const LoraEmbeddingArgs& args);

}  // namespace mamba::kernels::cpu
