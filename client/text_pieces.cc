#include "client/text_pieces.h"

#include <string>

#include "engine/status_macros.h"

namespace mamba::client {
namespace {

constexpr size_t kCheckBytes = 4096;  // context on each side of a split, to check it

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// The line of `text` that ends at its end (at most kCheckBytes, starting on a character).
std::string_view LastLine(std::string_view text) {
  size_t from = text.size() >= 2 ? text.rfind('\n', text.size() - 2) : std::string_view::npos;
  from = from == std::string_view::npos ? 0 : from + 1;
  if (text.size() - from > kCheckBytes) from = text.size() - kCheckBytes;
  while (from < text.size() && IsContinuationByte(text[from])) ++from;
  return text.substr(from);
}

// The first line of `text` with its newline (at most kCheckBytes, ending on a character).
std::string_view FirstLine(std::string_view text) {
  size_t to = text.find('\n');
  to = to == std::string_view::npos ? text.size() : to + 1;
  if (to > kCheckBytes) {
    to = kCheckBytes;
    while (to > 0 && IsContinuationByte(text[to])) --to;
  }
  return text.substr(0, to);
}

}  // namespace

bool IsSafeSplit(std::string_view text, size_t p) {
  return p >= 2 && p < text.size() && text[p - 1] == '\n' && !IsSpace(text[p - 2]) &&
         !IsSpace(text[p]);
}

std::vector<std::string_view> SplitAtSafeLineStarts(std::string_view text, size_t max_bytes) {
  std::vector<std::string_view> pieces;
  if (max_bytes < 1) max_bytes = 1;
  size_t start = 0;
  while (text.size() - start > max_bytes) {
    size_t cut = 0;
    for (size_t p = start + max_bytes; p > start; --p) {  // the last split within the limit
      if (IsSafeSplit(text, p)) {
        cut = p;
        break;
      }
    }
    if (cut == 0) {  // none within: the first one after
      for (size_t p = start + max_bytes + 1; p < text.size() && cut == 0; ++p) {
        if (IsSafeSplit(text, p)) cut = p;
      }
      if (cut == 0) break;
    }
    pieces.push_back(text.substr(start, cut - start));
    start = cut;
  }
  if (start < text.size()) pieces.push_back(text.substr(start));
  return pieces;
}

absl::StatusOr<std::vector<int32_t>> TokenizeInPieces(std::string_view text, size_t piece_bytes,
                                                      const TokenizeFn& tokenize) {
  const std::vector<std::string_view> pieces = SplitAtSafeLineStarts(text, piece_bytes);
  if (pieces.size() <= 1) return tokenize(text);
  for (size_t i = 0; i + 1 < pieces.size(); ++i) {
    const std::string_view a = LastLine(pieces[i]), b = FirstLine(pieces[i + 1]);
    MAMBA_ASSIGN_OR_RETURN(std::vector<int32_t> ta, tokenize(a));
    MAMBA_ASSIGN_OR_RETURN(std::vector<int32_t> tb, tokenize(b));
    const std::string ab = std::string(a) + std::string(b);
    MAMBA_ASSIGN_OR_RETURN(std::vector<int32_t> tab, tokenize(ab));
    ta.insert(ta.end(), tb.begin(), tb.end());
    if (ta != tab) return tokenize(text);
  }
  std::vector<int32_t> ids;
  for (std::string_view piece : pieces) {
    MAMBA_ASSIGN_OR_RETURN(std::vector<int32_t> t, tokenize(piece));
    ids.insert(ids.end(), t.begin(), t.end());
  }
  return ids;
}

}  // namespace mamba::client
