// Stop strings over streamed text: text goes in as the detokenizer makes it final; what comes
// out is safe to send (it cannot be the start of a stop string), and a match ends the stream
// with the text before it.
#pragma once

#include <string>
#include <vector>

namespace mamba::engine {

class StopMatcher {
 public:
  StopMatcher() = default;
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends text; returns what can be sent now. After a match, `matched()` is true, the
  // returned text ends right before the stop string, and later input is ignored.
  std::string Push(const std::string& text);
  // Everything still held back (call at the end of a stream that did not match).
  std::string Flush();

  bool matched() const { return !matched_.empty(); }
  const std::string& matched_stop() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string held_;
  std::string matched_;
};

}  // namespace mamba::engine
