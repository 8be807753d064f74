// The states of an HTTP connection (server/http/http_server.cc's Session) and the transitions
// allowed between them, free of Boost so that they can be tested by table. See the top of
// http_server.cc for the diagram.
#pragma once

namespace mamba::server::http {

// What a session is reading (see the top of http_server.cc).
enum class ReadState { kIdle, kHeader, kBody, kWatch, kWatchThenParse, kLinger, kClosed };
// Where the current response stands (see the top of http_server.cc).
enum class ReplyState { kIdle, kHandling, kStreaming, kSent, kClosing, kClosed };

inline const char* Name(ReadState s) {
  static constexpr const char* kNames[] = {"idle",   "header", "body", "watch", "watch-then-parse",
                                           "linger", "closed"};
  return kNames[static_cast<int>(s)];
}
inline const char* Name(ReplyState s) {
  static constexpr const char* kNames[] = {"idle", "handling", "streaming",
                                           "sent", "closing",  "closed"};
  return kNames[static_cast<int>(s)];
}

inline bool Allowed(ReadState from, ReadState to) {
  using R = ReadState;
  if (to == R::kClosed) return from != R::kClosed;
  switch (from) {
    case R::kIdle:
      return to == R::kHeader || to == R::kBody || to == R::kWatch || to == R::kLinger;
    case R::kHeader:
    case R::kBody:
    case R::kWatchThenParse:
      return to == R::kIdle;
    case R::kWatch:
      return to == R::kIdle || to == R::kWatchThenParse;
    case R::kLinger:
    case R::kClosed:
      return false;
  }
  return false;
}

inline bool Allowed(ReplyState from, ReplyState to) {
  using R = ReplyState;
  if (to == R::kClosed) return from != R::kClosed;
  switch (from) {
    case R::kIdle:
      return to == R::kHandling || to == R::kClosing;
    case R::kHandling:
      return to == R::kStreaming || to == R::kSent || to == R::kClosing;
    case R::kStreaming:
      return to == R::kSent || to == R::kClosing;
    case R::kSent:
      return to == R::kIdle;
    case R::kClosing:
    case R::kClosed:
      return false;
  }
  return false;
}

}  // namespace mamba::server::http
