// Greedy sampling (GreedySample) and draws by engine::DrawByRule's definition (DrawSample) on
// the GPU; see sampling.h. Every reduction has a fixed order and no float atomics, so a row's
// result depends only on the row and its rule.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sampling.h"

namespace mamba::kernels::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kMinTemperature = 1e-5f;      // engine/sampling.cc: below it, greedy
constexpr uint32_t kKeyNegInf = 0x007FFFFFu;  // Key(-inf): every finite value's key is larger

struct Best {
  float v;
  int32_t id;  // INT_MAX = none
};

// a ranks before b: larger value, then lower id.
__device__ __forceinline__ bool Before(const Best& a, const Best& b) {
  return a.id != INT_MAX && (b.id == INT_MAX || a.v > b.v || (a.v == b.v && a.id < b.id));
}

// Best of the block (every thread gets it); `scratch` holds 32 entries.
__device__ Best BlockBest(Best mine, Best* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const Best o{__shfl_xor_sync(kFullMask, mine.v, off), __shfl_xor_sync(kFullMask, mine.id, off)};
    if (Before(o, mine)) mine = o;
  }
  __syncthreads();
  if (lane == 0) scratch[warp] = mine;
  __syncthreads();
  mine = lane < kWarps ? scratch[lane] : Best{0.0f, INT_MAX};
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const Best o{__shfl_xor_sync(kFullMask, mine.v, off), __shfl_xor_sync(kFullMask, mine.id, off)};
    if (Before(o, mine)) mine = o;
  }
  return mine;
}

// The best entry of the row ranked strictly after `prev` (value descending, id ascending;
// prev.id == INT_MAX: the best of all). NaN never counts; with finite_only, -inf neither (as
// the host's top log-probs). One read of the row (from L2 after the first).
__device__ Best NextBest(const float* row, int64_t vocab, Best prev, bool finite_only,
                         Best* scratch) {
  Best mine{0.0f, INT_MAX};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = row[i];
    if (finite_only ? !(v > -INFINITY) : isnan(v)) continue;
    const Best c{v, static_cast<int32_t>(i)};
    const bool after = prev.id == INT_MAX || v < prev.v || (v == prev.v && c.id > prev.id);
    if (after && Before(c, mine)) mine = c;
  }
  return BlockBest(mine, scratch);
}

// After a round that found nothing: a `prev` that nothing ranks after.
__device__ __forceinline__ Best NextPrev(const Best& found) {
  return found.id == INT_MAX ? Best{-INFINITY, INT_MAX - 1} : found;
}

// One block per row. Round 0 finds the argmax; round k the k-th of the top list.
__global__ void __launch_bounds__(kThreads) GreedyKernel(GreedyArgs a) {
  __shared__ Best best_scratch[32];
  __shared__ float sum_scratch[32];
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* row = a.logits + r * a.logits_stride;
    Best prev{0.0f, INT_MAX};
    float lse = 0.0f;
    const int rounds = a.top_n > 0 ? a.top_n : 1;
    for (int k = 0; k < rounds; ++k) {
      const Best best = NextBest(row, a.vocab, prev, /*finite_only=*/false, best_scratch);
      if (k == 0) {
        // log-sum-exp around the maximum
        const float mx = best.id == INT_MAX ? 0.0f : best.v;
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
          const float v = row[i];
          if (!isnan(v)) s += expf(v - mx);
        }
        s = detail::BlockSum(s, sum_scratch);
        lse = mx + logf(s);
        if (threadIdx.x == 0) {
          a.token[r] = best.id == INT_MAX ? 0 : best.id;
          a.logprob[r] = best.id == INT_MAX ? nanf("") : best.v - lse;
        }
      }
      if (a.top_n > 0 && threadIdx.x == 0) {
        a.top_ids[r * a.top_n + k] = best.id == INT_MAX ? -1 : best.id;
        a.top_logprobs[r * a.top_n + k] = best.id == INT_MAX ? -INFINITY : best.v - lse;
      }
      prev = NextPrev(best);
    }
  }
}

// ---- DrawSample ----

// engine/sampling_exp.h's ExpNonPositive operation for operation (no contraction into FMAs), so
// that p is bit for bit the host's: exp(x) for x in [-87, 0], 0 otherwise (NaN included).
__device__ __forceinline__ float ExpNonPositive(float x) {
  constexpr uint32_t kMinus87 = 0xC2AE0000u;
  const uint32_t bits = __float_as_uint(x);
  const uint32_t keep = ((bits >= 0x80000000u && bits <= kMinus87) || bits == 0u) ? ~0u : 0u;
  x = __uint_as_float(bits & keep);
  const float n =
      __fsub_rn(__fadd_rn(__fmul_rn(x, 1.44269504088896341f), 12582912.0f), 12582912.0f);
  const float r = __fadd_rn(__fsub_rn(x, __fmul_rn(n, 0.693359375f)), __fmul_rn(n, 2.12194440e-4f));
  float p = 1.9875691500e-4f;
  p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
  p = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.0f);
  const uint32_t scale = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  return __uint_as_float(__float_as_uint(__fmul_rn(p, __uint_as_float(scale))) & keep);
}

// Order-preserving key of a non-NaN float (larger value, larger key); -0 keys as +0, since the
// host ranks them as equal values.
__device__ __forceinline__ uint32_t Key(float v) {
  const uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float FromKey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// The row being drawn from: p(v) = ExpNonPositive((v - max) * inv_t), as the host computes it.
struct RowCtx {
  const float* row;
  int64_t vocab;
  float max;
  float inv_t;
};
__device__ __forceinline__ float P(const RowCtx& c, float v) {
  return ExpNonPositive(__fmul_rn(__fsub_rn(v, c.max), c.inv_t));
}

// Count and mass of the finite entries whose key is >= t (ge) and > t (gt).
struct Tally {
  int32_t ge, gt;
  double ge_mass, gt_mass;
};

__device__ __forceinline__ void WarpTally(Tally& t) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    t.ge += __shfl_xor_sync(kFullMask, t.ge, off);
    t.gt += __shfl_xor_sync(kFullMask, t.gt, off);
    t.ge_mass += __shfl_xor_sync(kFullMask, t.ge_mass, off);
    t.gt_mass += __shfl_xor_sync(kFullMask, t.gt_mass, off);
  }
}

// Sum over the block (every thread gets the same bits: a butterfly of commutative additions).
__device__ Tally BlockTally(Tally mine, Tally* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  WarpTally(mine);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = mine;
  __syncthreads();
  mine = lane < kWarps ? scratch[lane] : Tally{0, 0, 0.0, 0.0};
  WarpTally(mine);
  return mine;
}

__device__ Tally TallyAt(const RowCtx& c, uint32_t t, Tally* scratch) {
  Tally mine{0, 0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < c.vocab; i += kThreads) {
    const float v = c.row[i];
    if (!(v > -INFINITY)) continue;  // -inf and NaN are never drawn
    const uint32_t k = Key(v);
    if (k < t) continue;
    const double p = P(c, v);
    ++mine.ge;
    mine.ge_mass += p;
    if (k > t) {
      ++mine.gt;
      mine.gt_mass += p;
    }
  }
  return BlockTally(mine, scratch);
}

// Finite entries with p >= min_p.
__device__ int32_t CountAtLeast(const RowCtx& c, float min_p, Tally* scratch) {
  Tally mine{0, 0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < c.vocab; i += kThreads) {
    const float v = c.row[i];
    if (v > -INFINITY && P(c, v) >= min_p) ++mine.ge;
  }
  return BlockTally(mine, scratch).ge;
}

// A prefix of the ranking (logit descending, id ascending): every finite entry with a key
// above `key`, plus the m lowest ids among those with exactly `key` (each of mass p).
// key == kKeyNegInf, m == 0: all finite entries.
struct Cut {
  uint32_t key;
  int32_t m;
  int32_t above;
  double mass_above;
  float p;
};
__device__ __forceinline__ double Mass(const Cut& c) {
  return c.mass_above + static_cast<double>(c.m) * static_cast<double>(c.p);
}

// The first `count` ranked entries (1 <= count <= finite entries): the largest key whose
// entries at or above number >= count, by bisection (~32 passes over the row).
__device__ Cut CutAtCount(const RowCtx& c, int32_t count, uint32_t max_key, Tally* scratch) {
  uint32_t lo = kKeyNegInf, hi = max_key + 1u;  // count(>= lo) >= count > count(>= hi)
  while (hi - lo > 1u) {
    const uint32_t mid = lo + (hi - lo) / 2u;
    if (TallyAt(c, mid, scratch).ge >= count) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const Tally at = TallyAt(c, lo, scratch);
  return Cut{lo, count - at.gt, at.gt, at.gt_mass, P(c, FromKey(lo))};
}

// Of `kept`, the smallest ranked prefix whose mass reaches top_p of kept's: the largest key
// whose entries at or above hold the target (bisection), then the fewest ties there.
__device__ Cut CutAtMass(const RowCtx& c, const Cut& kept, float top_p, uint32_t max_key,
                         Tally* scratch) {
  const double target = static_cast<double>(top_p) * Mass(kept);
  // Keys above kept.key hold only kept entries; at kept.key the whole kept set reaches it.
  uint32_t lo = kept.key, hi = max_key + 1u;
  while (hi - lo > 1u) {
    const uint32_t mid = lo + (hi - lo) / 2u;
    if (TallyAt(c, mid, scratch).ge_mass >= target) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  Cut cut = kept;
  if (lo != kept.key) {
    const Tally at = TallyAt(c, lo, scratch);
    cut = Cut{lo, at.ge - at.gt, at.gt, at.gt_mass, P(c, FromKey(lo))};
  }
  if (cut.key == kKeyNegInf) return kept;  // only through rounding: keep everything
  const double need = target - cut.mass_above;
  if (need <= 0.0) {
    cut.m = 1;
  } else if (cut.p > 0.0f) {
    const double ties = ceil(need / static_cast<double>(cut.p));
    if (ties < static_cast<double>(cut.m)) cut.m = max(1, static_cast<int32_t>(ties));
  }
  return cut;
}

struct DrawScratch {
  Tally tally[32];
  double mass[32];
  int32_t count[32];
};

// Exclusive prefix sum over the threads in thread order, and the block's total (every thread
// gets it). `scratch` holds 32 values.
template <typename T>
__device__ T BlockExclusiveScan(T v, T* scratch, T* total) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  T incl = v;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const T o = __shfl_up_sync(kFullMask, incl, off);
    if (lane >= off) incl += o;
  }
  T excl = __shfl_up_sync(kFullMask, incl, 1);
  if (lane == 0) excl = T(0);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 31) scratch[warp] = incl;
  __syncthreads();
  T before = T(0), sum = T(0);
  for (int w = 0; w < kWarps; ++w) {
    const T s = scratch[w];
    if (w < warp) before += s;
    sum += s;
  }
  *total = sum;
  return before + excl;
}

__device__ int32_t BlockMin(int32_t v, int32_t* scratch) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  v = __reduce_min_sync(kFullMask, v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kWarps ? scratch[lane] : INT_MAX;
  return __reduce_min_sync(kFullMask, v);
}

// The inverse-CDF walk over the kept entries in id order: the first whose cumulative mass
// exceeds uniform * (kept mass). Each thread takes a contiguous range of ids; the ranges'
// boundary ties and masses come from block scans.
__device__ int32_t Walk(const RowCtx& c, const Cut& cut, double uniform, DrawScratch* s) {
  const int64_t span = (c.vocab + kThreads - 1) / kThreads;
  const int64_t first = static_cast<int64_t>(threadIdx.x) * span;
  const int64_t begin = first < c.vocab ? first : c.vocab;
  const int64_t end = begin + span < c.vocab ? begin + span : c.vocab;
  int32_t ties = 0;
  for (int64_t i = begin; i < end; ++i) {
    const float v = c.row[i];
    if (v > -INFINITY && Key(v) == cut.key) ++ties;
  }
  int32_t all_ties = 0;
  const int32_t ties_before = BlockExclusiveScan(ties, s->count, &all_ties);
  // Whether entry v is kept; `tie` counts the boundary ties seen so far (lowest ids kept).
  auto kept = [&](float v, int32_t& tie) {
    if (!(v > -INFINITY)) return false;
    const uint32_t k = Key(v);
    if (k != cut.key) return k > cut.key;
    return tie++ < cut.m;
  };
  double mass = 0.0;
  int32_t tie = ties_before;
  for (int64_t i = begin; i < end; ++i) {
    const float v = c.row[i];
    if (kept(v, tie)) mass += P(c, v);
  }
  double total = 0.0;
  const double mass_before = BlockExclusiveScan(mass, s->mass, &total);
  const double target = uniform * total;
  int32_t pick = INT_MAX, last = -1;
  double cumulative = mass_before;
  tie = ties_before;
  for (int64_t i = begin; i < end; ++i) {
    const float v = c.row[i];
    if (!kept(v, tie)) continue;
    const float p = P(c, v);
    cumulative += p;
    last = static_cast<int32_t>(i);
    if (pick == INT_MAX && p > 0.0f && cumulative > target) pick = static_cast<int32_t>(i);
  }
  pick = BlockMin(pick, s->count);
  // Only through rounding: the last kept id (the host's fallback too).
  last = -BlockMin(-last, s->count);
  return pick != INT_MAX ? pick : (last >= 0 ? last : 0);
}

// DrawByRule's pick for a non-greedy rule over a row whose max is finite.
__device__ int32_t Draw(const RowCtx& c, const DrawRow& rule, DrawScratch* s) {
  const uint32_t max_key = Key(c.max);
  const Tally all = TallyAt(c, kKeyNegInf, s->tally);
  Cut cut{kKeyNegInf, 0, all.ge, all.ge_mass, 0.0f};
  if (rule.top_k > 0 && rule.top_k < all.ge) cut = CutAtCount(c, rule.top_k, max_key, s->tally);
  if (rule.top_p < 1.0f) cut = CutAtMass(c, cut, rule.top_p, max_key, s->tally);
  if (rule.min_p > 0.0f) {
    // p falls with the rank (ExpNonPositive is monotone: checked over every float in [-87, 0]),
    // so the entries with p >= min_p are a ranked prefix.
    const int32_t kept = cut.above + cut.m;
    const int32_t keep = max(1, min(kept, CountAtLeast(c, rule.min_p, s->tally)));
    if (keep < kept) cut = CutAtCount(c, keep, max_key, s->tally);
  }
  return Walk(c, cut, rule.uniform, s);
}

__global__ void __launch_bounds__(kThreads) DrawKernel(DrawArgs a) {
  __shared__ Best best_scratch[32];
  __shared__ DrawScratch scratch;
  for (int64_t d = blockIdx.x; d < a.draws; d += gridDim.x) {
    const DrawRow rule = a.rules[d];
    const int top_n = min(max(rule.top_n, 0), a.top_stride);
    int32_t* top_ids = a.top_ids + d * a.top_stride;
    float* top_logprobs = a.top_logprobs + d * a.top_stride;
    if (rule.row < 0 || rule.row >= a.logits_rows) {  // the same for the whole block
      if (threadIdx.x == 0) {
        a.token[d] = -1;
        for (int k = 0; k < top_n; ++k) {
          top_ids[k] = -1;
          top_logprobs[k] = -INFINITY;
        }
      }
      continue;
    }
    const float* row = a.logits + static_cast<int64_t>(rule.row) * a.logits_stride;
    // The argmax as the host's Argmax: ties -> lowest id, NaN never chosen (all NaN: 0).
    const Best best = NextBest(row, a.vocab, Best{0.0f, INT_MAX}, false, best_scratch);
    int32_t token = best.id == INT_MAX ? 0 : best.id;
    if (rule.temperature >= kMinTemperature && best.id != INT_MAX && isfinite(best.v)) {
      token = Draw(RowCtx{row, a.vocab, best.v, __fdiv_rn(1.0f, rule.temperature)}, rule, &scratch);
    }
    if (rule.want_logprob != 0 || top_n > 0) {
      // The host's LogSumExp: max + log(sum of ExpNonPositive(v - max)) in float64.
      double lse = best.id == INT_MAX ? -INFINITY : static_cast<double>(best.v);
      if (best.id != INT_MAX && isfinite(best.v)) {
        Tally mine{0, 0, 0.0, 0.0};
        for (int64_t i = threadIdx.x; i < a.vocab; i += kThreads) {
          mine.ge_mass += ExpNonPositive(__fsub_rn(row[i], best.v));
        }
        lse += log(BlockTally(mine, scratch.tally).ge_mass);
      }
      if (rule.want_logprob != 0 && threadIdx.x == 0) {
        a.logprob[d] = static_cast<float>(static_cast<double>(row[token]) - lse);
      }
      Best prev{0.0f, INT_MAX};
      for (int k = 0; k < top_n; ++k) {
        const Best b = NextBest(row, a.vocab, prev, /*finite_only=*/true, best_scratch);
        if (threadIdx.x == 0) {
          top_ids[k] = b.id == INT_MAX ? -1 : b.id;
          top_logprobs[k] =
              b.id == INT_MAX ? -INFINITY : static_cast<float>(static_cast<double>(b.v) - lse);
        }
        prev = NextPrev(b);
      }
    }
    if (threadIdx.x == 0) a.token[d] = token;
    __syncthreads();  // the next draw's reductions reuse the scratch
  }
}

}  // namespace

cudaError_t GreedySample(const GreedyArgs& a, cudaStream_t stream) {
  if (a.rows < 0 || a.vocab <= 0 || a.vocab >= INT_MAX - 1 || a.top_n < 0 || a.top_n > kMaxTopN) {
    return cudaErrorInvalidValue;
  }
  if (a.rows == 0) return cudaSuccess;
  if (!a.logits || a.logits_stride < a.vocab || !a.token || !a.logprob)
    return cudaErrorInvalidValue;
  if (a.top_n > 0 && (!a.top_ids || !a.top_logprobs)) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(a.rows, 1 << 20));
  GreedyKernel<<<blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t DrawSample(const DrawArgs& a, cudaStream_t stream) {
  if (a.draws < 0 || a.logits_rows < 0 || a.vocab <= 0 || a.vocab >= INT_MAX - 1 ||
      a.top_stride < 0 || a.top_stride > kMaxTopN) {
    return cudaErrorInvalidValue;
  }
  if (a.draws == 0) return cudaSuccess;
  if (!a.logits || a.logits_stride < a.vocab || !a.rules || !a.token || !a.logprob) {
    return cudaErrorInvalidValue;
  }
  if (a.top_stride > 0 && (!a.top_ids || !a.top_logprobs)) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(a.draws, 1 << 20));
  DrawKernel<<<blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace mamba::kernels::cuda
