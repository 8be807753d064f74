#include "client/sse.h"

namespace mamba::client {

bool SseParser::Feed(std::string_view bytes, const std::function<bool(const SseEvent&)>& on_event) {
  for (size_t i = 0; i < bytes.size();) {
    const char c = bytes[i];
    if (last_was_cr_ && c == '\n') {
      last_was_cr_ = false;
      ++i;
      continue;
    }
    last_was_cr_ = false;
    if (c == '\n' || c == '\r') {
      last_was_cr_ = c == '\r';
      std::string line = std::move(line_);
      line_.clear();
      ++i;
      if (!Line(line, on_event)) return false;
      continue;
    }
    // Copy the run up to the next line break at once.
    size_t j = i;
    while (j < bytes.size() && bytes[j] != '\n' && bytes[j] != '\r') ++j;
    line_.append(bytes.substr(i, j - i));
    i = j;
  }
  return true;
}

bool SseParser::Finish(const std::function<bool(const SseEvent&)>& on_event) {
  if (!line_.empty()) {
    std::string line = std::move(line_);
    line_.clear();
    if (!Line(line, on_event)) return false;
  }
  return Line("", on_event);
}

bool SseParser::Line(std::string_view line, const std::function<bool(const SseEvent&)>& on_event) {
  if (line.empty()) {
    if (!has_data_) {
      event_ = SseEvent();
      return true;
    }
    SseEvent event = std::move(event_);
    event_ = SseEvent();
    has_data_ = false;
    return on_event(event);
  }
  if (line.front() == ':') return true;  // comment / keep-alive
  const size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) event_.data += '\n';
    event_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_.event = std::string(value);
  } else if (field == "id") {
    event_.id = std::string(value);
  }
  return true;
}

}  // namespace mamba::client
