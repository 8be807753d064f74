#include "kernels/cpu/gemm.h"

#include <list>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"

// Why fixed-m primitives: oneDNN's brgemm kernels, created for a fixed m with plain (untransformed)
// weights, give every row of y bitwise the same value whatever m is in the shapes we measured,
// which makes a request's logits independent of what else is batched; oneDNN does not promise
// it (for small shapes it may pick another kernel by m), so the engine prefers the packed
// kernel wherever AVX-512 exists and this path is the fallback. Runtime-m primitives use another
// kernel (gemm:jit) that does not have this property. Plain weights also let bf16 checkpoints be
// used straight from the memory-mapped file. Primitives are cached per shape in a small LRU.

namespace mamba::kernels::cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;

memory::data_type ToDnnl(DType t) {
  switch (t) {
    case DType::kF32:
      return memory::data_type::f32;
    case DType::kF16:
      return memory::data_type::f16;
    case DType::kBF16:
      return memory::data_type::bf16;
    case DType::kI8:
      return memory::data_type::s8;
  }
  return memory::data_type::undef;
}

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};
Context& Ctx() {
  static Context* ctx = new Context();
  return *ctx;
}

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, bool>;
struct KeyHash {
  size_t operator()(const Key& k) const {
    auto [m, n, kk, ldx, ldy, dt, bias, acc] = k;
    size_t h = std::hash<int64_t>()(m);
    for (int64_t v : {n, kk, ldx, ldy, static_cast<int64_t>(dt) * 4 + bias * 2 + acc}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

struct Entry {
  dnnl::matmul primitive;
  memory::desc x_md, w_md, y_md;
  std::string impl;
};

class PrimitiveCache {
 public:
  static constexpr size_t kCapacity = 1024;

  // Returns the primitive for key, creating it on a miss. Thread-safe.
  absl::Status Get(const Key& key, Entry* out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      *out = it->second.first;
      return absl::OkStatus();
    }
    Entry e;
    if (absl::Status s = Create(key, &e); !s.ok()) return s;
    lru_.push_front(key);
    map_.emplace(key, std::make_pair(e, lru_.begin()));
    if (map_.size() > kCapacity) {
      map_.erase(lru_.back());
      lru_.pop_back();
    }
    *out = e;
    return absl::OkStatus();
  }

 private:
  static absl::Status Create(const Key& key, Entry* e) {
    auto [m, n, k, ldx, ldy, dt, has_bias, accumulate] = key;
    const auto wdt = static_cast<memory::data_type>(dt);
    // Activations are converted to the weight dtype (dense) unless the weights are f32.
    const memory::dims x_strides = {wdt == memory::data_type::f32 ? ldx : k, 1};
    memory::desc x_md({m, k}, wdt, x_strides);
    memory::desc w_md({k, n}, wdt, Tag::ba);
    memory::desc y_md({m, n}, memory::data_type::f32, memory::dims{ldy, 1});
    try {
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      dnnl::matmul::primitive_desc pd;
      if (has_bias) {
        memory::desc b_md({1, n}, memory::data_type::f32, Tag::ab);
        pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(x_md, w_md, b_md, y_md), attr,
                                          Ctx().engine);
      } else {
        pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(x_md, w_md, y_md), attr, Ctx().engine);
      }
      e->primitive = dnnl::matmul(pd);
      e->x_md = x_md;
      e->w_md = w_md;
      e->y_md = y_md;
      e->impl = pd.impl_info_str();
    } catch (const dnnl::error& err) {
      return absl::InternalError(
          absl::StrCat("oneDNN matmul m=", m, " n=", n, " k=", k, ": ", err.what()));
    }
    return absl::OkStatus();
  }

  std::mutex mu_;
  std::list<Key> lru_;
  std::unordered_map<Key, std::pair<Entry, std::list<Key>::iterator>, KeyHash> map_;
};

PrimitiveCache& Cache() {
  static PrimitiveCache* cache = new PrimitiveCache();
  return *cache;
}

// Converts x to 16-bit activations in a per-thread buffer (callers run one GEMM at a time).
const void* ConvertActivations(const GemmArgs& a) {
  thread_local std::vector<uint16_t> buf;
  buf.resize(static_cast<size_t>(a.m * a.w.k));
  for (int64_t i = 0; i < a.m; ++i) {
    const float* src = a.x + i * a.ldx;
    uint16_t* dst = buf.data() + i * a.w.k;
    if (a.w.dtype == DType::kBF16) {
      ConvertF32ToBf16(src, dst, a.w.k);
    } else {
      for (int64_t j = 0; j < a.w.k; ++j) dst[j] = F32ToF16(src[j]);
    }
  }
  return buf.data();
}

}  // namespace

absl::Status Gemm(const GemmArgs& a) {
  if (a.m == 0) return absl::OkStatus();
  if (a.m < 0 || a.w.n <= 0 || a.w.k <= 0 || a.ldx < a.w.k || a.ldy < a.w.n) {
    return absl::InvalidArgumentError(absl::StrCat("bad GEMM shape m=", a.m, " n=", a.w.n,
                                                   " k=", a.w.k, " ldx=", a.ldx, " ldy=", a.ldy));
  }
  const auto wdt = ToDnnl(a.w.dtype);
  const Key key{a.m,         a.w.n, a.w.k, a.ldx, a.ldy, static_cast<int>(wdt), a.bias != nullptr,
                a.accumulate};
  Entry e;
  if (absl::Status s = Cache().Get(key, &e); !s.ok()) return s;
  const void* x = a.w.dtype == DType::kF32 ? static_cast<const void*>(a.x) : ConvertActivations(a);
  Context& ctx = Ctx();
  memory x_mem(e.x_md, ctx.engine, const_cast<void*>(x));
  memory w_mem(e.w_md, ctx.engine, const_cast<void*>(a.w.data));
  memory y_mem(e.y_md, ctx.engine, a.y);
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}};
  if (a.bias) {
    args.emplace(DNNL_ARG_BIAS, memory({{1, a.w.n}, memory::data_type::f32, Tag::ab}, ctx.engine,
                                       const_cast<float*>(a.bias)));
  }
  try {
    e.primitive.execute(ctx.stream, args);
    ctx.stream.wait();
  } catch (const dnnl::error& err) {
    return absl::InternalError(absl::StrCat("oneDNN matmul failed: ", err.what()));
  }
  return absl::OkStatus();
}

bool GemmHasFastPath(DType dtype, std::string* impl) {
  Entry e;
  const Key key{64, 256, 256, 256, 256, static_cast<int>(ToDnnl(dtype)), false, false};
  if (!Cache().Get(key, &e).ok()) return false;
  if (impl) *impl = e.impl;
  return e.impl.find("ref") == std::string::npos;
}

}  // namespace mamba::kernels::cpu
