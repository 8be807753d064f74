// The HTTP routes: authentication, dispatch by path and method, per-route body limits, and the
// small endpoints (health, metrics, models, tokenize, detokenize). Generation is in
// completions.h and tgi.h, session management in sessions.h, LoRA adapters in lora.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "server/http/exchange.h"
#include "server/http/generation_call.h"

namespace mamba::server::http {

class Router {
 public:
  explicit Router(HandlerContext ctx);

  // Answers `request` through `exchange`, at once or later. Called on the connection's strand.
  // With options.api_key set, every path but /health needs `Authorization: Bearer <key>`.
  void Handle(const HttpRequest& request, std::shared_ptr<Exchange> exchange);

  // The route's path for metrics labels, or "other" for unknown paths.
  static std::string_view EndpointLabel(std::string_view path);

  // The largest request body the transport reads for `method` `path`: options.max_body_bytes,
  // or for PUT /v1/sessions/{id}/state the largest session file of the model (sessions on).
  int64_t BodyLimit(std::string_view method, std::string_view path) const;
  // The largest BodyLimit of any route: the limit while the request line is not yet known.
  int64_t MaxBodyLimit() const;
  // The answer to a body over BodyLimit: 413, or for a session file 400 with the reason.
  HttpResponse BodyTooLarge(std::string_view method, std::string_view path) const;

  const HandlerContext& context() const { return ctx_; }

 private:
  bool Authorized(const HttpRequest& request) const;

  HandlerContext ctx_;
  int64_t created_;  // reported as the model's creation time
};

}  // namespace mamba::server::http
