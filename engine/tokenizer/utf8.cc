// UTF-8 validation and lossy decoding. The lossy rules follow the Unicode "maximal subpart"
// practice that Rust's Utf8Chunks implements, so that our Decode equals Hugging Face's.
#include "engine/tokenizer/utf8.h"

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace mamba::engine::utf8 {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Result of examining one sequence starting at a lead byte.
struct Step {
  size_t length;   // bytes that form a valid char, or the maximal invalid subpart
  bool valid;      // whether those bytes are a complete, valid char
  bool truncated;  // invalid only because the input ended (a valid prefix so far)
};

// Allowed range of the second byte after a given lead byte; later bytes are 80..BF.
inline bool SecondByteOk(unsigned char lead, unsigned char b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;  // no overlongs
    case 0xED:
      return b >= 0x80 && b <= 0x9F;  // no surrogates
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;  // no overlongs
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;  // nothing above U+10FFFF
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

inline size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;  // 80..C1 and F5..FF never start a sequence
}

Step Examine(const unsigned char* p, size_t avail) {
  const size_t need = SequenceLength(p[0]);
  if (need == 0) return {1, false, false};
  if (need == 1) return {1, true, false};
  for (size_t i = 1; i < need; ++i) {
    if (i >= avail) return {i, false, true};
    const bool ok = i == 1 ? SecondByteOk(p[0], p[1]) : (p[i] >= 0x80 && p[i] <= 0xBF);
    if (!ok) return {i, false, false};
  }
  return {need, true, false};
}

// Length of the run of ASCII bytes starting at p (8 bytes at a time).
inline size_t AsciiRun(const unsigned char* p, size_t n) {
  size_t i = 0;
  while (i + 8 <= n) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & 0x8080808080808080ULL) break;
    i += 8;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

// Shared loop of the lossy decoders; stops before a truncated tail when `keep_tail`.
size_t DecodeLossy(std::string_view bytes, bool keep_tail, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const size_t ascii = AsciiRun(p + i, n - i);
    if (ascii > 0) {
      out->append(bytes.data() + i, ascii);
      i += ascii;
      continue;
    }
    const Step s = Examine(p + i, n - i);
    if (s.valid) {
      out->append(bytes.data() + i, s.length);
    } else if (s.truncated && keep_tail) {
      return i;
    } else {
      out->append(kReplacement);
    }
    i += s.length;
  }
  return n;
}

}  // namespace

size_t FindInvalid(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    i += AsciiRun(p + i, n - i);
    if (i >= n) break;
    const Step s = Examine(p + i, n - i);
    if (!s.valid) return i;
    i += s.length;
  }
  return kAllValid;
}

absl::Status Validate(std::string_view bytes) {
  const size_t bad = FindInvalid(bytes);
  if (bad == kAllValid) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "input text is not valid UTF-8: invalid byte 0x",
      absl::Hex(static_cast<unsigned char>(bytes[bad]), absl::kZeroPad2), " at byte offset ", bad));
}

void AppendLossy(std::string_view bytes, std::string* out) { DecodeLossy(bytes, false, out); }

size_t AppendLossyCompletePrefix(std::string_view bytes, std::string* out) {
  return DecodeLossy(bytes, true, out);
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t DecodeLastValid(std::string_view s, size_t end, size_t* start) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  *start = i;
  size_t pos = i;
  return DecodeValid(s, &pos);
}

}  // namespace mamba::engine::utf8
