// Hardware reference points for the benchmark's roofline ratios: memory bandwidth (a STREAM-like
// triad) and what oneDNN alone reaches on a GEMM shape.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace mamba::engine::tools {

// Best-of-5 triad a[i] = b[i] + s * c[i] over 3 x 128 MiB fp32 arrays, in GB/s (12 bytes per
// element, STREAM's convention).
double MeasureTriadGBps();

// Seconds per call of oneDNN matmul [m, k] x [k, n] with weights reordered to oneDNN's preferred
// layout (its best case), activations and weights in `dtype`, fp32 output. Best of several runs.
double MeasureOneDnnGemmSeconds(int64_t m, int64_t n, int64_t k, kernels::DType dtype);

}  // namespace mamba::engine::tools
