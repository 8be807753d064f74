#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mamba2_scan.h"

namespace mamba::kernels::cuda {
namespace {

using detail::Silu;
using detail::Softplus;

// A block owns one chunk (or decode row), one head and kColumns consecutive head_dim columns,
// a warp per column. Lane l holds the column's states n = l, l + 32, ... (kPerLane of them, in
// registers: 8 for d_state 256), so a token costs each lane kPerLane FMA pairs and the warp one
// shuffle reduction for y. A head's d_state x head_dim state (32 KiB for 128 x 64) is thus
// read from the slot once per chunk and written back once.
constexpr int kColumns = 8;
constexpr int kThreads = 32 * kColumns;
constexpr int kTile = 16;  // tokens whose inputs are staged in shared memory at once
static_assert(kTile <= kThreads, "one thread per token computes dt");

__host__ __device__ inline int64_t ColumnTiles(int64_t head_dim) {
  return (head_dim + kColumns - 1) / kColumns;
}

// The block's rows: chunk blockIdx.x of the table, or decode row blockIdx.x (slot -1 = padding).
struct Rows {
  int64_t begin = 0, length = 0;
  int32_t slot = -1;
};

__device__ __forceinline__ Rows BlockRows(const Mamba2ScanArgs& a) {
  if (a.slots != nullptr) return Rows{blockIdx.x, 1, a.slots[blockIdx.x]};
  const ChunkDesc ch = a.chunks[blockIdx.x];
  return Rows{ch.begin, ch.length, ch.slot};
}

// Shared memory: the dynamic part is bc[kTile][2][d_state] (B then C of each staged token).
template <int kPerLane>
__global__ void __launch_bounds__(kThreads) Mamba2ScanKernel(Mamba2ScanArgs a) {
  extern __shared__ float bc[];
  __shared__ float dt_tile[kTile], decay_tile[kTile];
  __shared__ float x_tile[kTile][kColumns], z_tile[kTile][kColumns];
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t P = a.head_dim, tiles = ColumnTiles(P);
  const int N = static_cast<int>(a.d_state);
  const int64_t h = blockIdx.y / tiles;
  const int64_t p0 = (blockIdx.y % tiles) * kColumns;
  const int64_t p = p0 + warp;
  const bool active = p < P;  // warp-uniform: a head_dim tail leaves whole warps idle
  const int64_t g = h / (a.heads / a.groups);
  const int64_t col = h * P;  // the head's first column in x, z and out rows
  const Rows rows = BlockRows(a);
  float* st = rows.slot >= 0
                  ? a.state + static_cast<int64_t>(rows.slot) * a.state_slot_stride + h * N * P
                  : nullptr;
  float s[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int n = lane + 32 * j;
    s[j] = active && st != nullptr && n < N ? st[n * P + p] : 0.0f;
  }
  const float a_h = a.a[h], dt_bias = a.dt_bias[h], d_skip = a.d_skip[h];

  for (int64_t t0 = 0; t0 < rows.length; t0 += kTile) {
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kTile), rows.length - t0));
    const int64_t row0 = rows.begin + t0;
    __syncthreads();  // the previous tile is no longer read
    for (int j = static_cast<int>(threadIdx.x); j < cnt * N; j += kThreads) {
      const int i = j / N, n = j % N;
      const int64_t at = (row0 + i) * a.bc_stride + g * N + n;
      bc[i * 2 * N + n] = a.b[at];
      bc[i * 2 * N + N + n] = a.c[at];
    }
    if (static_cast<int>(threadIdx.x) < cnt) {
      const int i = static_cast<int>(threadIdx.x);
      float dt = Softplus(a.dt[(row0 + i) * a.dt_stride + h] + dt_bias);
      dt = fmaxf(dt, a.dt_min);
      if (a.dt_max > 0.0f) dt = fminf(dt, a.dt_max);
      dt_tile[i] = dt;
      decay_tile[i] = expf(dt * a_h);
    }
    for (int j = static_cast<int>(threadIdx.x); j < cnt * kColumns; j += kThreads) {
      const int i = j / kColumns, w = j % kColumns;
      const bool in = p0 + w < P;
      x_tile[i][w] = in ? a.x[(row0 + i) * a.x_stride + col + p0 + w] : 0.0f;
      z_tile[i][w] = in ? a.z[(row0 + i) * a.z_stride + col + p0 + w] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;  // whole warp; it still reaches the next tile's barriers
    for (int i = 0; i < cnt; ++i) {
      const float x = x_tile[i][warp], dtx = dt_tile[i] * x, decay = decay_tile[i];
      const float* b = bc + i * 2 * N;
      const float* c = b + N;
      float y = 0.0f;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int n = lane + 32 * j;
        if (n < N) {
          s[j] = decay * s[j] + dtx * b[n];
          y += c[n] * s[j];
        }
      }
      y = detail::WarpSum(y);
      if (lane == 0) {
        a.out[(row0 + i) * a.out_stride + col + p] = (y + d_skip * x) * Silu(z_tile[i][warp]);
      }
    }
  }
  if (active && st != nullptr) {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int n = lane + 32 * j;
      if (n < N) st[n * P + p] = s[j];
    }
  }
}

bool Valid(const Mamba2ScanArgs& a) {
  if (!Mamba2ScanShapeSupported(a.heads, a.head_dim, a.d_state) || a.groups < 1 ||
      a.heads % a.groups != 0 || a.tokens < 0 || !(a.dt_min >= 0.0f) || !(a.dt_max >= 0.0f)) {
    return false;
  }
  if (a.tokens == 0) return true;
  if (!a.x || !a.dt || !a.dt_bias || !a.a || !a.b || !a.c || !a.d_skip || !a.z || !a.state ||
      !a.out) {
    return false;
  }
  const int64_t e = a.heads * a.head_dim;
  return a.x_stride >= e && a.z_stride >= e && a.out_stride >= e && a.dt_stride >= a.heads &&
         a.bc_stride >= a.groups * a.d_state && a.state_slot_stride >= e * a.d_state;
}

cudaError_t Launch(const Mamba2ScanArgs& a, int64_t blocks_x, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(blocks_x),
                  static_cast<unsigned>(a.heads * ColumnTiles(a.head_dim)));
  const size_t smem = static_cast<size_t>(kTile * 2 * a.d_state) * sizeof(float);
  const int per_lane = static_cast<int>((a.d_state + 31) / 32);
  if (per_lane <= 1) {
    Mamba2ScanKernel<1><<<grid, kThreads, smem, stream>>>(a);
  } else if (per_lane <= 2) {
    Mamba2ScanKernel<2><<<grid, kThreads, smem, stream>>>(a);
  } else if (per_lane <= 4) {
    Mamba2ScanKernel<4><<<grid, kThreads, smem, stream>>>(a);
  } else {
    Mamba2ScanKernel<8><<<grid, kThreads, smem, stream>>>(a);
  }
  return cudaGetLastError();
}

// The grid's x dimension (chunks or decode rows).
constexpr int64_t kMaxGridX = 0x7fffffff;

}  // namespace

bool Mamba2ScanShapeSupported(int64_t heads, int64_t head_dim, int64_t d_state) {
  return heads >= 1 && head_dim >= 1 && d_state >= 1 && d_state <= kMaxMamba2StateSize &&
         heads * ColumnTiles(head_dim) <= detail::kMaxGridY;
}

cudaError_t Mamba2Scan(const Mamba2ScanArgs& a, cudaStream_t stream) {
  if (!Valid(a)) return cudaErrorInvalidValue;
  if (a.tokens == 0) return cudaSuccess;
  if (!a.chunks || a.num_chunks < 1) return cudaErrorInvalidValue;
  Mamba2ScanArgs prefill = a;
  prefill.slots = nullptr;  // the kernel reads chunks when no slot array is given
  return Launch(prefill, a.num_chunks, stream);
}

cudaError_t Mamba2ScanDecode(const Mamba2ScanArgs& a, cudaStream_t stream) {
  if (!Valid(a)) return cudaErrorInvalidValue;
  if (a.tokens == 0) return cudaSuccess;
  if (!a.slots || a.tokens > kMaxGridX) return cudaErrorInvalidValue;
  return Launch(a, a.tokens, stream);
}

}  // namespace mamba::kernels::cuda
