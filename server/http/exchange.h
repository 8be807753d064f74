// One HTTP request and its response as the handlers see them, free of Boost: the connection
// code (http_server.cc) implements Exchange; handlers answer through it, at once or as an SSE
// stream fed from engine events.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mamba::server::http {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query string
  std::string body;
  std::string authorization;  // the Authorization header ("" when absent)
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// Threading: Post may be called from any thread (the engine's sinks do). Everything else only on
// the connection's strand: inside Router::Handle or a task given to Post.
class Exchange {
 public:
  virtual ~Exchange() = default;

  // Runs `task` on the connection's strand, unless the exchange has ended (response complete,
  // connection closed, server stopped): then `task` is dropped unrun.
  virtual void Post(std::function<void()> task) = 0;

  // Sends a complete response; ends the exchange.
  virtual void Respond(HttpResponse response) = 0;
  // Sends 200 with text/event-stream headers; the body follows through Write.
  virtual void StartStream() = 0;
  // Queues body bytes of a stream. False when the client is gone or has more than the
  // configured max_stream_buffer_bytes unsent: the caller then cancels its work and Aborts.
  virtual bool Write(std::string data) = 0;
  // Completes the stream; ends the exchange.
  virtual void EndStream() = 0;
  // Ends the exchange by closing the connection (a stream that cannot be completed).
  virtual void Abort() = 0;

  // `fn` runs once, on the strand, if the client goes away (or the server closes the
  // connection) before the exchange ends. Handlers cancel their engine requests there.
  virtual void SetOnClientGone(std::function<void()> fn) = 0;
};

}  // namespace mamba::server::http
