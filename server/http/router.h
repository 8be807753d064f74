// The HTTP routes: authentication, dispatch by path and method, and the small endpoints
// (health, metrics, models, tokenize, detokenize). Generation is in completions.h and tgi.h.
#pragma once

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

  const HandlerContext& context() const { return ctx_; }

 private:
  bool Authorized(const HttpRequest& request) const;

  HandlerContext ctx_;
  int64_t created_;  // reported as the model's creation time
};

}  // namespace mamba::server::http
