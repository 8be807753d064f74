// Small value types shared by the engine: strong ids for slots and requests, token ids, and the
// logits block a backend returns.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace mamba::engine {

// Token ids index the model's vocabulary; kept as a plain alias because they flow through
// tokenizers, kernels and wire formats as arrays.
using TokenId = int32_t;

// A strongly typed integer id: SlotId and RequestId cannot be mixed up with each other or with
// counts.
template <typename Tag, typename Rep>
struct StrongId {
  Rep value{};
  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep v) : value(v) {}
  friend constexpr auto operator<=>(const StrongId&, const StrongId&) = default;
};

struct SlotIdTag {};
struct RequestIdTag {};
using SlotId = StrongId<SlotIdTag, int32_t>;  // index into a backend's state-slot pool
using RequestId = StrongId<RequestIdTag, uint64_t>;

// Logits of several sequences: rows x vocab, row-major, fp32.
struct Logits {
  int64_t rows = 0;
  int64_t vocab = 0;
  std::vector<float> data;

  void Resize(int64_t r, int64_t v) {
    rows = r;
    vocab = v;
    data.resize(static_cast<size_t>(r * v));
  }
  std::span<float> Row(int64_t r) { return {data.data() + r * vocab, static_cast<size_t>(vocab)}; }
  std::span<const float> Row(int64_t r) const {
    return {data.data() + r * vocab, static_cast<size_t>(vocab)};
  }
};

}  // namespace mamba::engine

template <typename Tag, typename Rep>
struct std::hash<mamba::engine::StrongId<Tag, Rep>> {
  size_t operator()(const mamba::engine::StrongId<Tag, Rep>& id) const noexcept {
    return std::hash<Rep>()(id.value);
  }
};
