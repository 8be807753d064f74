// A stable 128-bit hash (two independent 64-bit lanes over 8-byte words, murmur-style mixing):
// the same bytes give the same value in every process and build. For identity checks (model
// fingerprints, file checksums), not for security.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace mamba::engine {

class Hash128 {
 public:
  void Update(std::span<const std::byte> bytes) {
    const std::byte* p = bytes.data();
    size_t n = bytes.size();
    Word(n);
    for (; n >= 8; n -= 8, p += 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      Word(w);
    }
    uint64_t tail = 0;
    if (n > 0) std::memcpy(&tail, p, n);  // p may be null when bytes is empty
    Word(tail);
  }
  void Update(std::string_view s) { Update(std::as_bytes(std::span<const char>(s))); }
  void Update(int64_t v) { Word(static_cast<uint64_t>(v)); }

  std::string Hex() const { return absl::StrFormat("%016x%016x", Fin(a_), Fin(b_)); }

 private:
  static uint64_t Fin(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
  }
  static uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
  void Word(uint64_t w) {
    a_ = Rotl(a_ ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full + 0x52dce729;
    b_ = Rotl(b_ ^ (w * 0x4cf5ad432745937full), 33) * 0x87c37b91114253d5ull + 0x38495ab5;
  }
  uint64_t a_ = 0x9e3779b97f4a7c15ull, b_ = 0x243f6a8885a308d3ull;
};

}  // namespace mamba::engine
