// UTF-8 helpers for the tokenizer: validation with the offending byte offset, Rust-compatible
// lossy decoding (`String::from_utf8_lossy`), and the "complete prefix" split that streaming
// detokenization needs.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace mamba::engine::utf8 {

inline constexpr size_t kAllValid = std::string_view::npos;

// Returns the byte offset of the first byte that does not belong to a well-formed UTF-8
// sequence (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF), or kAllValid.
// A sequence cut short by the end of the input counts as invalid at its lead byte.
size_t FindInvalid(std::string_view bytes);

// OkStatus, or InvalidArgument naming the byte offset of the first invalid byte.
absl::Status Validate(std::string_view bytes);

// Appends `bytes` to `out`, replacing each maximal invalid subpart with U+FFFD exactly as
// Rust's `String::from_utf8_lossy` (and so Hugging Face's ByteLevel decoder) does; an
// incomplete sequence at the end becomes one U+FFFD.
void AppendLossy(std::string_view bytes, std::string* out);

// Like AppendLossy, but stops before a trailing sequence that is incomplete yet still valid
// so far (it may complete once more bytes arrive). Returns the number of bytes consumed; the
// unconsumed tail is at most 3 bytes. Because lossy decoding never looks back, consuming
// in pieces this way and finishing with AppendLossy on the tail gives the same text as one
// AppendLossy over all the bytes.
size_t AppendLossyCompletePrefix(std::string_view bytes, std::string* out);

// Appends the UTF-8 encoding of a Unicode scalar value.
void AppendCodePoint(char32_t cp, std::string* out);

// Decodes the code point starting at `*pos` of valid UTF-8 and advances `*pos`.
inline char32_t DecodeValid(std::string_view s, size_t* pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *pos;
  if (p[0] < 0x80) {
    *pos += 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    *pos += 2;
    return (char32_t{p[0]} & 0x1F) << 6 | (p[1] & 0x3F);
  }
  if (p[0] < 0xF0) {
    *pos += 3;
    return (char32_t{p[0]} & 0x0F) << 12 | (char32_t{p[1]} & 0x3F) << 6 | (p[2] & 0x3F);
  }
  *pos += 4;
  return (char32_t{p[0]} & 0x07) << 18 | (char32_t{p[1]} & 0x3F) << 12 |
         (char32_t{p[2]} & 0x3F) << 6 | (p[3] & 0x3F);
}

// Decodes the last code point of non-empty valid UTF-8 ending at `end`; sets `*start`.
char32_t DecodeLastValid(std::string_view s, size_t end, size_t* start);

}  // namespace mamba::engine::utf8
