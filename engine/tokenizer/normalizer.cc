// Normalizers through utf8proc. NFC, the one real tokenizers use, has a fast path: text is
// split at "stable" code points (canonical combining class 0, no decomposition, never the
// second half of a composition: UAX #15 NFC_Quick_Check=Yes starters) where normalization
// cannot reach across, and only the spans holding other characters are normalized.
#include "engine/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/tokenizer/utf8.h"

namespace mamba::engine {
namespace {

constexpr char32_t kMaxCodePoint = 0x10FFFF;
// Below this every code point is an NFC-stable starter (U+0300 starts the combining marks).
constexpr char32_t kFirstMaybeUnstable = 0x300;

// Hugging Face normalizes with Unicode 9.0 data (crate unicode-normalization-alignments), so
// these characters, given normalization properties later (combining classes; U+11930 composes
// since Unicode 13), are inert there: they do not reorder, compose, or let marks reorder or
// compose across them. utf8proc (Unicode 15) must never see them. Found by comparing every
// code point with HF (see tokenizer_differential_test.cc).
constexpr char32_t kInertForHf[][2] = {
    {0x07FD, 0x07FD},   {0x0898, 0x089F},   {0x08CA, 0x08D3},   {0x09FE, 0x09FE},
    {0x0C3C, 0x0C3C},   {0x0D3B, 0x0D3C},   {0x0EBA, 0x0EBA},   {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0xA82C, 0xA82C},   {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11930, 0x11930}, {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0},
    {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF},
    {0x1E4EC, 0x1E4EF}};

// Two bits per code point: whether it is NOT an NFC-stable starter, and whether it is inert
// for HF (then it is stable, but a span to normalize must not include it).
class UnstableTable {
 public:
  UnstableTable() : bits_((kMaxCodePoint + 64) / 64, 0), inert_((kMaxCodePoint + 64) / 64, 0) {
    int32_t buf[32];
    for (char32_t cp = kFirstMaybeUnstable; cp <= kMaxCodePoint; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      const utf8proc_property_t* p = utf8proc_get_property(static_cast<int32_t>(cp));
      if (p->combining_class != 0 || p->comp_exclusion || p->decomp_seqindex != UINT16_MAX) {
        Set(cp);
      }
      // Characters that can be the second half of a composition are exactly those found
      // after the first position of some canonical decomposition (Hangul included).
      const bool hangul_syllable = cp >= 0xAC00 && cp <= 0xD7A3;
      if (p->decomp_seqindex == UINT16_MAX && !hangul_syllable) continue;
      int last = 0;
      const utf8proc_ssize_t n =
          utf8proc_decompose_char(static_cast<int32_t>(cp), buf, 32, UTF8PROC_DECOMPOSE, &last);
      for (utf8proc_ssize_t i = 1; i < n && i < 32; ++i) Set(static_cast<char32_t>(buf[i]));
    }
    for (const auto& [lo, hi] : kInertForHf) {
      for (char32_t cp = lo; cp <= hi; ++cp) {
        bits_[cp >> 6] &= ~(uint64_t{1} << (cp & 63));
        inert_[cp >> 6] |= uint64_t{1} << (cp & 63);
      }
    }
  }

  bool Unstable(char32_t cp) const {
    return cp >= kFirstMaybeUnstable && ((bits_[cp >> 6] >> (cp & 63)) & 1);
  }
  bool Inert(char32_t cp) const { return (inert_[cp >> 6] >> (cp & 63)) & 1; }

 private:
  void Set(char32_t cp) { bits_[cp >> 6] |= uint64_t{1} << (cp & 63); }
  std::vector<uint64_t> bits_;
  std::vector<uint64_t> inert_;
};

const UnstableTable& Unstable() {
  static const UnstableTable table;
  return table;
}

constexpr utf8proc_option_t Options(int flags) { return static_cast<utf8proc_option_t>(flags); }

// Runs utf8proc over valid UTF-8 `text` with `options`, appending the result.
void AppendUtf8proc(std::string_view text, utf8proc_option_t options, std::string* out) {
  thread_local std::vector<int32_t> buffer;
  if (buffer.size() < text.size() + 16) buffer.resize(text.size() + 16);
  const auto* src = reinterpret_cast<const uint8_t*>(text.data());
  const auto len = static_cast<utf8proc_ssize_t>(text.size());
  utf8proc_ssize_t n = utf8proc_decompose(src, len, buffer.data(),
                                          static_cast<utf8proc_ssize_t>(buffer.size()), options);
  if (n > static_cast<utf8proc_ssize_t>(buffer.size())) {
    buffer.resize(static_cast<size_t>(n));
    n = utf8proc_decompose(src, len, buffer.data(), n, options);
  }
  // Valid UTF-8 in, so the only possible failure is memory; keep the text unchanged then.
  if (n < 0) {
    out->append(text);
    return;
  }
  n = utf8proc_normalize_utf32(buffer.data(), n, options);
  for (utf8proc_ssize_t i = 0; i < n; ++i) {
    utf8::AppendCodePoint(static_cast<char32_t>(buffer[i]), out);
  }
  // Do not keep a huge buffer alive on this thread after one huge text.
  if (buffer.size() > (size_t{1} << 20)) std::vector<int32_t>().swap(buffer);
}

// Rust's char::to_lowercase (what HF's Lowercase normalizer applies per character): the simple
// lowercase mapping, except U+0130 whose full mapping is two characters.
void AppendLowercase(std::string_view text, std::string* out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const auto b = static_cast<unsigned char>(text[pos]);
    if (b < 0x80) {
      out->push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b));
      ++pos;
      continue;
    }
    const char32_t cp = utf8::DecodeValid(text, &pos);
    if (cp == 0x130) {
      out->append("i\xCC\x87");
    } else {
      utf8::AppendCodePoint(static_cast<char32_t>(utf8proc_tolower(static_cast<int32_t>(cp))), out);
    }
  }
}

bool IsAscii(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

void ApplyStep(const NormalizerStep& step, std::string_view in, std::string* out) {
  using Kind = NormalizerStep::Kind;
  switch (step.kind) {
    case Kind::kNfc:
      return normalization::AppendNfc(in, out);
    case Kind::kNfd:
      return AppendUtf8proc(in, Options(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE), out);
    case Kind::kNfkc:
      return AppendUtf8proc(in, Options(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT), out);
    case Kind::kNfkd:
      return AppendUtf8proc(in, Options(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT),
                            out);
    case Kind::kLowercase:
      return AppendLowercase(in, out);
    case Kind::kPrepend:
      if (!in.empty()) out->append(step.prepend);  // HF prepends only to non-empty text
      out->append(in);
      return;
    case Kind::kReplace:
      for (size_t pos = 0;;) {  // non-overlapping occurrences, left to right
        const size_t hit = in.find(step.prepend, pos);
        if (hit == std::string_view::npos) {
          out->append(in.substr(pos));
          return;
        }
        out->append(in.substr(pos, hit - pos));
        out->append(step.content);
        pos = hit + step.prepend.size();
      }
  }
}

// Whether the step certainly leaves `in` unchanged (so no copy is needed).
bool IsNoOp(const NormalizerStep& step, std::string_view in) {
  using Kind = NormalizerStep::Kind;
  switch (step.kind) {
    case Kind::kNfc:
      return normalization::IsObviouslyNfc(in);
    case Kind::kNfd:
    case Kind::kNfkc:
    case Kind::kNfkd:
      return IsAscii(in);
    case Kind::kLowercase:
      return false;
    case Kind::kPrepend:
      return in.empty();
    case Kind::kReplace:
      return in.find(step.prepend) == std::string_view::npos;
  }
  return false;
}

}  // namespace

namespace normalization {

bool IsInertForHf(char32_t cp) { return cp <= kMaxCodePoint && Unstable().Inert(cp); }

bool IsObviouslyNfc(std::string_view text) {
  const UnstableTable& table = Unstable();
  size_t pos = 0;
  while (pos < text.size()) {
    uint64_t chunk;  // skip ASCII eight bytes at a time
    if (pos + 8 <= text.size() &&
        (std::memcpy(&chunk, text.data() + pos, 8), (chunk & 0x8080808080808080ULL) == 0)) {
      pos += 8;
      continue;
    }
    const auto lead = static_cast<unsigned char>(text[pos]);
    if (lead < 0xCC) {  // U+0000..U+02FF: one or two bytes, always stable
      pos += lead < 0x80 ? 1 : 2;
      continue;
    }
    if (table.Unstable(utf8::DecodeValid(text, &pos))) return false;
  }
  return true;
}

void AppendNfc(std::string_view text, std::string* out) {
  const UnstableTable& table = Unstable();
  size_t copied = 0;       // text[0, copied) is already in `out`
  size_t last_stable = 0;  // start of the last stable code point seen
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const auto lead = static_cast<unsigned char>(text[pos]);
    if (lead < 0xCC) {  // U+0000..U+02FF: one or two bytes, always stable
      last_stable = start;
      pos += lead < 0x80 ? 1 : 2;
      continue;
    }
    const char32_t cp = utf8::DecodeValid(text, &pos);
    if (!table.Unstable(cp)) {
      // A span may start at a stable starter, but must start after an inert character.
      last_stable = table.Inert(cp) ? pos : start;
      continue;
    }
    // Normalize from the last stable starter up to the next stable code point.
    size_t end = pos;
    while (end < text.size()) {
      size_t next = end;
      if (!table.Unstable(utf8::DecodeValid(text, &next))) break;
      end = next;
    }
    const size_t span_start = last_stable > copied ? last_stable : copied;
    out->append(text.substr(copied, span_start - copied));
    AppendUtf8proc(text.substr(span_start, end - span_start),
                   Options(UTF8PROC_STABLE | UTF8PROC_COMPOSE), out);
    copied = end;
    pos = end;
    last_stable = end;
  }
  out->append(text.substr(copied));
}

}  // namespace normalization

std::string_view Normalizer::Normalize(std::string_view text, std::string* scratch) const {
  std::string_view current = text;
  for (const NormalizerStep& step : steps_) {
    if (IsNoOp(step, current)) continue;
    std::string next;
    next.reserve(current.size() + 16);
    ApplyStep(step, current, &next);
    // `current` may point into *scratch: only replace it once `next` is complete.
    *scratch = std::move(next);
    current = *scratch;
  }
  return current;
}

}  // namespace mamba::engine
