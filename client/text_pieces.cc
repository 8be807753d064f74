#include "client/text_pieces.h"

namespace mamba::client {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
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

}  // namespace mamba::client
