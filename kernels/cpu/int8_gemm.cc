#include "kernels/cpu/int8_gemm.h"

#include <cpuid.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/int8_gemm_internal.h"
#include "kernels/cpu/memory.h"
#include "kernels/cpu/threading.h"
#include "kernels/cpu/vec.h"

namespace mamba::kernels::cpu {
namespace {

using int8_internal::Job;

constexpr int64_t kMBlock = 128;  // rows whose activations stay in L2 while the weights stream

// q = round-to-nearest-even(v * inv) in [-127, 127]. nearbyint, unlike adding 1.5 * 2^23, cannot
// be contracted into an FMA, so every clone of the caller rounds alike.
inline int8_t Round127(float v) {
  return static_cast<int8_t>(std::clamp(std::nearbyint(v), -127.0f, 127.0f));
}

MAMBA_CPU_CLONES float QuantizeRow(const float* x, int64_t k, int8_t* q) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t l = 0; l < k; ++l) {
    const float a = std::fabs(x[l]);
    amax = std::max(amax, a);
    finite &= a <= std::numeric_limits<float>::max();  // false for NaN and inf
  }
  if (!finite) {  // a NaN scale: the row's outputs are NaN, as in float, never silently finite
    std::memset(q, 0, static_cast<size_t>(k));
    return std::numeric_limits<float>::quiet_NaN();
  }
  if (!(amax > 0.0f)) {  // zero row
    std::memset(q, 0, static_cast<size_t>(k));
    return 0.0f;
  }
  const float inv = 127.0f / amax;
  for (int64_t l = 0; l < k; ++l) q[l] = Round127(x[l] * inv);
  return amax / 127.0f;
}

// The scalar path: the integer sums of kVnni (without the u8 offset, which cancels exactly) and
// the float steps of int8_gemm_internal.h, so its bits equal kVnni's. q: int8 activations
// [m][k_pad].
void ScalarBlocks(const Job& job, const int8_t* q, int64_t b0, int64_t b1) {
  const Int8Weight& w = *job.w;
  const int64_t k4 = w.k_pad / 4, g4 = w.group_size / 4;
  for (int64_t b = b0; b < b1; ++b) {
    const auto* wp = reinterpret_cast<const int8_t*>(w.data.get()) + b * w.k_pad * kInt8Cols;
    for (int64_t r = 0; r < job.m; ++r) {
      const int8_t* xr = q + r * w.k_pad;
      float facc[kInt8Cols] = {};
      for (int64_t g = 0; g < w.groups; ++g) {
        int32_t acc[kInt8Cols] = {};
        for (int64_t kk = g * g4; kk < std::min(k4, (g + 1) * g4); ++kk) {
          for (int c = 0; c < kInt8Cols; ++c) {
            for (int t = 0; t < 4; ++t) acc[c] += xr[4 * kk + t] * wp[kk * 64 + c * 4 + t];
          }
        }
        for (int c = 0; c < kInt8Cols; ++c) {
          const float f = static_cast<float>(acc[c]);
          const float sc = w.scales[static_cast<size_t>(g * w.n_pad + b * kInt8Cols + c)];
          facc[c] = std::fma(f, sc, facc[c]);
        }
      }
      for (int c = 0; c < kInt8Cols && b * kInt8Cols + c < w.n; ++c) {
        const int64_t j = b * kInt8Cols + c;
        const float xs = job.xs[r];
        float v = job.bias ? std::fma(facc[c], xs, job.bias[j]) : facc[c] * xs;
        float& y = job.y[r * job.ldy + j];
        y = job.accumulate ? y + v : v;
      }
    }
  }
}

// AVX-VNNI (VEX vpdpbusd): CPUID leaf 7, sub-leaf 1, EAX bit 4. Read directly: clang 14's
// __builtin_cpu_supports does not know "avxvnni". The OS's YMM state is checked with "avx2".
bool HasAvxVnni() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax >> 4 & 1) != 0;
}

}  // namespace

float QuantizeActivationRow(const float* x, int64_t k, int8_t* q) { return QuantizeRow(x, k, q); }

namespace {

// The layout of a quantized [n, k] (see Int8Weight), data allocated, scales and offsets zeroed.
absl::StatusOr<Int8Weight> NewInt8Weight(int64_t n, int64_t k, int64_t group_size) {
  if (n <= 0 || k <= 0) return absl::InvalidArgumentError("int8 weight needs n, k > 0");
  if (group_size < 0 || group_size % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("int8 group size must be a multiple of 4, got ", group_size));
  }
  Int8Weight w;
  w.n = n;
  w.k = k;
  w.k_pad = (k + 3) / 4 * 4;
  w.n_pad = (n + kInt8Cols - 1) / kInt8Cols * kInt8Cols;
  w.group_size = group_size == 0 ? w.k_pad : std::min(group_size, w.k_pad);
  w.groups = (w.k_pad + w.group_size - 1) / w.group_size;
  w.bytes = w.n_pad * w.k_pad;
  w.data =
      std::shared_ptr<std::byte[]>(AllocateStreamed(static_cast<size_t>(w.bytes)), FreeDeleter());
  if (!w.data) return absl::ResourceExhaustedError("out of memory quantizing weights");
  w.scales.assign(static_cast<size_t>(w.groups * w.n_pad), 0.0f);
  w.offsets.assign(static_cast<size_t>(w.groups * w.n_pad), 0);
  return w;
}

// The one quantization of a weight row, for QuantizeWeight and QuantizeRowMajor alike: row j of
// `src` (zero past n and past k, up to k_pad) to q [k_pad] and one scale per group, at
// scales[g * stride]. `row`: fp32 scratch [k_pad].
void QuantizeWeightRow(const void* src, DType src_dtype, int64_t j, const Int8Weight& w, float* row,
                       int8_t* q, float* scales, int64_t stride) {
  std::fill(row, row + w.k_pad, 0.0f);
  if (j < w.n) {
    const size_t src_row = static_cast<size_t>(w.k) * SizeOf(src_dtype);
    ConvertToF32(static_cast<const std::byte*>(src) + j * src_row, src_dtype, row, w.k);
  }
  for (int64_t g = 0; g < w.groups; ++g) {
    const int64_t l0 = g * w.group_size, len = std::min(w.group_size, w.k_pad - l0);
    scales[g * stride] = QuantizeRow(row + l0, len, q + l0);
  }
}

// Row j's q [k_pad] into the packed panel, and its offsets (its scales are already in place).
void PackWeightRow(Int8Weight& w, int64_t j, const int8_t* q) {
  auto* panel = reinterpret_cast<int8_t*>(w.data.get()) + (j / kInt8Cols) * w.k_pad * kInt8Cols;
  const int64_t c = j % kInt8Cols;
  for (int64_t l = 0; l < w.k_pad; ++l) panel[(l / 4) * 64 + c * 4 + l % 4] = q[l];
  for (int64_t g = 0; g < w.groups; ++g) {
    const int64_t l0 = g * w.group_size, len = std::min(w.group_size, w.k_pad - l0);
    int32_t sum = 0;
    for (int64_t l = l0; l < l0 + len; ++l) sum += q[l];
    w.offsets[static_cast<size_t>(g * w.n_pad + j)] = 128 * sum;
  }
}

}  // namespace

absl::Status DequantizeRowMajor(const int8_t* q, const float* scales, int64_t n, int64_t k,
                                int64_t group_size, float* w) {
  const int64_t groups = Int8GroupCount(k, group_size);
  if (n <= 0 || groups < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("int8 dequantize: bad shape [", n, ", ", k, "] or group size ", group_size));
  }
  if (const int8_t* at = std::find(q, q + n * k, int8_t{-128}); at != q + n * k) {
    return absl::InvalidArgumentError(absl::StrCat("int8 value -128 at [", (at - q) / k, ", ",
                                                   (at - q) % k,
                                                   "] (symmetric int8 is [-127, 127])"));
  }
  const int64_t k_pad = (k + 3) / 4 * 4;
  const int64_t group = group_size == 0 ? k_pad : std::min(group_size, k_pad);
  ParallelFor(n, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* s = scales + j * groups;
      for (int64_t g = 0, l0 = 0; l0 < k; ++g, l0 += group) {
        const int64_t l1 = std::min(k, l0 + group);
        for (int64_t l = l0; l < l1; ++l) w[j * k + l] = static_cast<float>(q[j * k + l]) * s[g];
      }
    }
  });
  return absl::OkStatus();
}

absl::StatusOr<Int8Weight> QuantizeWeight(const void* src, DType src_dtype, int64_t n, int64_t k,
                                          int64_t group_size) {
  absl::StatusOr<Int8Weight> made = NewInt8Weight(n, k, group_size);
  if (!made.ok()) return made.status();
  Int8Weight& w = *made;
  ParallelFor(w.n_pad / kInt8Cols, [&](int64_t b0, int64_t b1) {
    std::vector<float> row(static_cast<size_t>(w.k_pad));
    std::vector<int8_t> q(static_cast<size_t>(w.k_pad));
    for (int64_t j = b0 * kInt8Cols; j < b1 * kInt8Cols; ++j) {
      QuantizeWeightRow(src, src_dtype, j, w, row.data(), q.data(), w.scales.data() + j, w.n_pad);
      PackWeightRow(w, j, q.data());
    }
  });
  return made;
}

absl::Status QuantizeRowMajor(const void* src, DType src_dtype, int64_t n, int64_t k,
                              int64_t group_size, int8_t* q, float* scales) {
  // The layout only (no data): the same k_pad, group_size and groups as QuantizeWeight.
  Int8Weight w;
  w.n = n;
  w.k = k;
  w.k_pad = (k + 3) / 4 * 4;
  w.groups = Int8GroupCount(k, group_size);
  if (n <= 0 || w.groups == 0) {
    return absl::InvalidArgumentError(absl::StrCat("int8 weight [", n, ", ", k,
                                                   "] with group size ", group_size,
                                                   ": needs n, k > 0 and a multiple of 4"));
  }
  w.group_size = group_size == 0 ? w.k_pad : std::min(group_size, w.k_pad);
  ParallelFor(n, [&](int64_t j0, int64_t j1) {
    std::vector<float> row(static_cast<size_t>(w.k_pad));
    std::vector<int8_t> qr(static_cast<size_t>(w.k_pad));
    for (int64_t j = j0; j < j1; ++j) {
      QuantizeWeightRow(src, src_dtype, j, w, row.data(), qr.data(), scales + j * w.groups, 1);
      std::memcpy(q + j * k, qr.data(), static_cast<size_t>(k));
    }
  });
  return absl::OkStatus();
}

absl::StatusOr<Int8Weight> PackInt8Weight(const int8_t* q, const float* scales, int64_t n,
                                          int64_t k, int64_t group_size) {
  absl::StatusOr<Int8Weight> made = NewInt8Weight(n, k, group_size);
  if (!made.ok()) return made.status();
  Int8Weight& w = *made;
  for (int64_t i = 0; i < n * w.groups; ++i) {
    if (!(scales[i] >= 0.0f) || !std::isfinite(scales[i])) {
      return absl::InvalidArgumentError(absl::StrCat("int8 scale [", i / w.groups, ", ",
                                                     i % w.groups, "] is ", scales[i],
                                                     " (must be finite and >= 0)"));
    }
  }
  for (int64_t i = 0; i < n * k; ++i) {
    if (q[i] == -128) {
      return absl::InvalidArgumentError(absl::StrCat("int8 value -128 at [", i / k, ", ", i % k,
                                                     "] (symmetric int8 is [-127, 127])"));
    }
  }
  ParallelFor(w.n_pad / kInt8Cols, [&](int64_t b0, int64_t b1) {
    std::vector<int8_t> qr(static_cast<size_t>(w.k_pad));
    for (int64_t j = b0 * kInt8Cols; j < b1 * kInt8Cols; ++j) {
      std::fill(qr.begin(), qr.end(), int8_t{0});
      if (j < n) {
        std::memcpy(qr.data(), q + j * k, static_cast<size_t>(k));
        for (int64_t g = 0; g < w.groups; ++g) {
          w.scales[static_cast<size_t>(g * w.n_pad + j)] = scales[j * w.groups + g];
        }
      }
      PackWeightRow(w, j, qr.data());
    }
  });
  return made;
}

std::vector<float> DequantizeWeight(const Int8Weight& w) {
  std::vector<float> out(static_cast<size_t>(w.n * w.k));
  for (int64_t j = 0; j < w.n; ++j) {
    for (int64_t l = 0; l < w.k; ++l)
      out[static_cast<size_t>(j * w.k + l)] = w.Q(j, l) * w.Scale(j, l);
  }
  return out;
}

bool Int8GemmSupported(Int8Path path) {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (path) {
    case Int8Path::kAuto:
    case Int8Path::kScalar:
      return true;
    case Int8Path::kVnni:
      return avx512 && __builtin_cpu_supports("avx512vnni");
    case Int8Path::kDequantF32:
      return avx512 && __builtin_cpu_supports("avx512vbmi");
    case Int8Path::kAvx2:
      return avx2;
    case Int8Path::kAvxVnni:
      return avx2 && HasAvxVnni();
  }
  return false;
}

Int8Path Int8AutoPath() {
  for (Int8Path p : {Int8Path::kVnni, Int8Path::kAvxVnni, Int8Path::kAvx2}) {
    if (Int8GemmSupported(p)) return p;
  }
  return Int8Path::kScalar;
}

const char* Int8PathName(Int8Path path) {
  switch (path) {
    case Int8Path::kAuto:
      return "auto";
    case Int8Path::kVnni:
      return "avx512-vnni";
    case Int8Path::kDequantF32:
      return "dequant-f32";
    case Int8Path::kScalar:
      return "scalar";
    case Int8Path::kAvx2:
      return "avx2";
    case Int8Path::kAvxVnni:
      return "avx-vnni";
  }
  return "?";
}

absl::Status Int8Gemm(const Int8GemmArgs& a) {
  if (a.m == 0) return absl::OkStatus();
  if (a.w == nullptr || !a.w->data || a.x == nullptr || a.y == nullptr) {
    return absl::InvalidArgumentError("int8 GEMM: missing operand");
  }
  const Int8Weight& w = *a.w;
  if (a.ldx < w.k || a.ldy < w.n) return absl::InvalidArgumentError("int8 GEMM: bad strides");
  const Int8Path path = a.path == Int8Path::kAuto ? Int8AutoPath() : a.path;
  if (!Int8GemmSupported(path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("int8 GEMM: this CPU cannot run the ", Int8PathName(path), " path"));
  }
  // Activations in the path's form, rows k_pad apart (thread-local: reused step to step).
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> xs, xf;
  const bool fp = path == Int8Path::kDequantF32;
  if (fp) {
    xf.assign(static_cast<size_t>(a.m * w.k_pad), 0.0f);
    for (int64_t i = 0; i < a.m; ++i) {
      std::memcpy(xf.data() + i * w.k_pad, a.x + i * a.ldx, static_cast<size_t>(w.k) * 4);
    }
  } else {
    q.resize(static_cast<size_t>(a.m * w.k_pad));
    xs.resize(static_cast<size_t>(a.m));
    // vpdpbusd takes u8: q + 128 = q ^ 0x80
    const bool offset = path == Int8Path::kVnni || path == Int8Path::kAvxVnni;
    // Plain pointers: inside the lambda, q and xs would name the worker threads' own buffers.
    int8_t* qd = q.data();
    float* xsd = xs.data();
    auto quantize = [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        int8_t* qi = qd + i * w.k_pad;
        xsd[i] = QuantizeRow(a.x + i * a.ldx, w.k, qi);
        std::memset(qi + w.k, 0, static_cast<size_t>(w.k_pad - w.k));
        if (offset) {
          for (int64_t l = 0; l < w.k_pad; ++l) qi[l] = static_cast<int8_t>(qi[l] ^ 0x80);
        }
      }
    };
    if (a.m * w.k >= (1 << 16)) {
      ParallelFor(a.m, quantize);
    } else {
      quantize(0, a.m);
    }
  }
  const int64_t blocks = w.n_pad / kInt8Cols;
  for (int64_t m0 = 0; m0 < a.m; m0 += kMBlock) {
    const int64_t mb = std::min(kMBlock, a.m - m0);
    Job job;
    job.m = mb;
    job.w = &w;
    job.bias = a.bias;
    job.y = a.y + m0 * a.ldy;
    job.ldy = a.ldy;
    job.accumulate = a.accumulate;
    const int8_t* qm = q.data() + m0 * w.k_pad;
    if (fp) {
      job.xf = xf.data() + m0 * w.k_pad;
    } else {
      job.xq = reinterpret_cast<const uint32_t*>(qm);
      job.xs = xs.data() + m0;
    }
    const int64_t per = int8_internal::BlocksPerTile(mb);
    auto run = [&](int64_t t0, int64_t t1) {
      const int64_t b0 = t0 * per, b1 = std::min(blocks, t1 * per);
      switch (path) {
        case Int8Path::kVnni:
          int8_internal::VnniBlocks(job, b0, b1);
          break;
        case Int8Path::kDequantF32:
          int8_internal::DequantF32Blocks(job, b0, b1);
          break;
        case Int8Path::kAvxVnni:
          int8_internal::AvxVnniBlocks(job, b0, b1);
          break;
        case Int8Path::kAvx2:
          int8_internal::Avx2Blocks(job, b0, b1);
          break;
        default:
          ScalarBlocks(job, qm, b0, b1);
          break;
      }
    };
    const int64_t tiles = (blocks + per - 1) / per;
    if (mb * w.n * w.k < (1 << 14)) {  // tiny: not worth the fork (cf. packed_gemm.cc)
      run(0, tiles);
    } else {
      ParallelFor(tiles, run);
    }
  }
  return absl::OkStatus();
}

}  // namespace mamba::kernels::cpu
