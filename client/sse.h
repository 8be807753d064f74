// Server-sent events (text/event-stream) parsed incrementally: feed body bytes as they arrive,
// get complete events. Follows the WHATWG rules that matter to inference servers: lines end in
// LF, CRLF or CR; "data:" lines of one event are joined with "\n"; a blank line dispatches;
// lines starting with ':' are comments; one space after the colon is dropped.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace mamba::client {

struct SseEvent {
  std::string event;  // the "event:" field; "" means "message"
  std::string data;
  std::string id;
};

class SseParser {
 public:
  // Calls on_event for every event completed by `bytes`; stops and returns false as soon as
  // on_event returns false.
  bool Feed(std::string_view bytes, const std::function<bool(const SseEvent&)>& on_event);
  // At the end of the stream: an event not followed by a blank line is dispatched too (servers
  // that forget the last blank line). Returns what on_event returned (true if none).
  bool Finish(const std::function<bool(const SseEvent&)>& on_event);

 private:
  bool Line(std::string_view line, const std::function<bool(const SseEvent&)>& on_event);

  std::string line_;          // the current, unfinished line
  bool last_was_cr_ = false;  // a CR ended the previous line; a following LF belongs to it
  SseEvent event_;
  bool has_data_ = false;
};

}  // namespace mamba::client
