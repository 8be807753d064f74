#include "engine/stop_matcher.h"

#include <algorithm>

namespace mamba::engine {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& s : stops_) max_len_ = std::max(max_len_, s.size());
}

std::string StopMatcher::Push(const std::string& text) {
  if (matched() || text.empty()) return {};
  if (stops_.empty()) return text;
  // Only the new text and the (shorter than any stop) held tail can contain a new match.
  held_ += text;
  size_t best = std::string::npos;
  const std::string* which = nullptr;
  for (const std::string& s : stops_) {
    const size_t at = held_.find(s);
    if (at < best) {
      best = at;
      which = &s;
    }
  }
  if (which != nullptr) {
    matched_ = *which;
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (size_t k = std::min(held_.size(), max_len_ - 1); k > 0 && keep == 0; --k) {
    const std::string_view tail(held_.data() + held_.size() - k, k);
    for (const std::string& s : stops_) {
      if (s.size() > k && std::string_view(s).substr(0, k) == tail) {
        keep = k;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::Flush() {
  if (matched()) return {};
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace mamba::engine
