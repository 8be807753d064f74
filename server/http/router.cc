#include "server/http/router.h"

#include <algorithm>
#include <array>
#include <ctime>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"
#include "engine/status_macros.h"
#include "server/api_key.h"
#include "server/http/api_error.h"
#include "server/http/completions.h"
#include "server/http/json_util.h"
#include "server/http/lora.h"
#include "server/http/sessions.h"
#include "server/http/tgi.h"
#include "server/metrics.h"

namespace mamba::server::http {
namespace {

enum class Route {
  kHealth,
  kMetrics,
  kModels,
  kModel,
  kCompletions,
  kGenerate,
  kGenerateStream,
  kTgiCompat,  // POST /: generate or generate_stream by the body's "stream"
  kTgiInfo,
  kTokenize,
  kDetokenize,
  kSessions,  // every /v1/sessions route (sessions.h)
  kLoadLora,
  kUnloadLora,
  kNone
};

struct RouteInfo {
  Route route;
  std::string_view methods;  // "GET", or several: "GET, DELETE"
  std::optional<SessionPath> session = std::nullopt;
};

bool Accepts(std::string_view methods, std::string_view method) {
  while (!methods.empty()) {
    const size_t comma = methods.find(", ");
    if (methods.substr(0, comma) == method) return true;
    methods.remove_prefix(comma == std::string_view::npos ? methods.size() : comma + 2);
  }
  return false;
}

RouteInfo Find(std::string_view path) {
  if (std::optional<SessionPath> s = ParseSessionPath(path)) {
    return {Route::kSessions, SessionRouteMethods(s->route), std::move(s)};
  }
  if (path == "/health") return {Route::kHealth, "GET"};
  if (path == "/metrics") return {Route::kMetrics, "GET"};
  if (path == "/v1/models") return {Route::kModels, "GET"};
  if (path.starts_with("/v1/models/")) return {Route::kModel, "GET"};
  if (path == "/v1/completions") return {Route::kCompletions, "POST"};
  if (path == "/generate") return {Route::kGenerate, "POST"};
  if (path == "/generate_stream") return {Route::kGenerateStream, "POST"};
  if (path == "/") return {Route::kTgiCompat, "POST"};
  if (path == "/info") return {Route::kTgiInfo, "GET"};
  if (path == "/tokenize") return {Route::kTokenize, "POST"};
  if (path == "/detokenize") return {Route::kDetokenize, "POST"};
  if (path == "/v1/load_lora_adapter") return {Route::kLoadLora, "POST"};
  if (path == "/v1/unload_lora_adapter") return {Route::kUnloadLora, "POST"};
  return {Route::kNone, ""};
}

HttpResponse JsonResponse(const OrderedJson& j, int status = 200) {
  return {status, "application/json", Dump(j), {}};
}

HttpResponse Health(const HandlerContext& ctx) {
  switch (ctx.state->health.load()) {
    case Health::kServing:
      return JsonResponse({{"status", "ok"}});
    case Health::kStarting: {
      OrderedJson j = ErrorBody({503, "the server is starting"});
      j["status"] = "starting";
      return JsonResponse(j, 503);
    }
    case Health::kDraining:
      break;
  }
  OrderedJson j = ErrorBody({503, "the server is shutting down"});
  j["status"] = "draining";
  return JsonResponse(j, 503);
}

HttpResponse MetricsText(const HandlerContext& ctx) {
  if (!ctx.metrics) return ErrorResponse({404, "metrics are not enabled"});
  engine::EngineStats stats;
  if (ctx.state->health.load() != Health::kStarting && ctx.state->engine) {
    stats = ctx.state->engine->Stats();
  }
  return {200, "text/plain; version=0.0.4; charset=utf-8", ctx.metrics->Render(stats), {}};
}

OrderedJson ModelCard(const HandlerContext& ctx, const std::string& id, int64_t created) {
  OrderedJson m = {
      {"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "mambaserve"}};
  if (ctx.state->health.load() != Health::kStarting && ctx.state->engine) {
    m["max_prompt_tokens"] = ctx.state->engine->options().max_prompt_tokens;
    m["max_session_tokens"] = ctx.state->engine->max_session_tokens();
    m["model_type"] =
        std::string(engine::ModelTypeName(ctx.state->engine->backend().config().model_type));
    // Extension: lets clients (mamba-loadgen) draw valid random token-id prompts.
    // Every id below vocab_size is a valid input; the tokenizer spells the ids below
    // tokenizer_vocab_size (others, e.g. padding rows of the embedding, decode to "").
    m["vocab_size"] = ctx.state->engine->backend().config().vocab_size;
    if (ctx.state->tokenizer) m["tokenizer_vocab_size"] = ctx.state->tokenizer->vocab_size();
  }
  return m;
}

absl::Status NoTokenizer() { return absl::FailedPreconditionError("no tokenizer is loaded"); }

absl::StatusOr<OrderedJson> Tokenize(const HandlerContext& ctx, const HttpRequest& request) {
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return body.status();
  auto it = body->find("prompt");
  if (it == body->end() || !it->is_string()) {
    return engine::InvalidField("prompt", "'prompt' is required and must be a string");
  }
  if (!ctx.state->tokenizer) return NoTokenizer();
  bool special = false;  // the text's own tokens unless asked (scoring tokenizes in pieces)
  MAMBA_RETURN_IF_ERROR(ReadBool(*body, "add_special_tokens", &special));
  const std::string& text = it->get<std::string>();
  absl::StatusOr<std::vector<engine::TokenId>> ids =
      special ? ctx.state->tokenizer->EncodeWithSpecialTokens(text)
              : ctx.state->tokenizer->Encode(text);
  if (!ids.ok()) return engine::InvalidField("prompt", ids.status().message());
  return OrderedJson{{"tokens", *ids}, {"count", ids->size()}};
}

absl::StatusOr<OrderedJson> Detokenize(const HandlerContext& ctx, const HttpRequest& request) {
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return body.status();
  auto it = body->find("tokens");
  if (it == body->end()) return engine::InvalidField("tokens", "'tokens' is required");
  std::vector<engine::TokenId> ids;
  MAMBA_RETURN_IF_ERROR(ReadTokenIds(*it, "tokens", &ids));
  if (!ctx.state->tokenizer) return NoTokenizer();
  absl::StatusOr<std::string> text = DecodeClientIds(*ctx.state, ids, false, "tokens");
  if (!text.ok()) return text.status();
  return OrderedJson{{"prompt", *text}};
}

HttpResponse JsonOrError(const absl::StatusOr<OrderedJson>& j) {
  return j.ok() ? JsonResponse(*j) : ErrorResponse(j.status(), ApiStyle::kOpenAi);
}

}  // namespace

Router::Router(HandlerContext ctx) : ctx_(std::move(ctx)), created_(std::time(nullptr)) {}

std::string_view Router::EndpointLabel(std::string_view path) {
  const Route r = Find(path).route;
  if (r == Route::kNone) return "other";
  if (r == Route::kModel) return "/v1/models/{id}";
  if (r == Route::kSessions) {
    switch (ParseSessionPath(path)->route) {
      case SessionRoute::kList:
        return "/v1/sessions";
      case SessionRoute::kSession:
        return "/v1/sessions/{id}";
      case SessionRoute::kFork:
        return "/v1/sessions/{id}/fork";
      case SessionRoute::kState:
        return "/v1/sessions/{id}/state";
    }
  }
  return path;
}

int64_t Router::BodyLimit(std::string_view method, std::string_view path) const {
  const int64_t limit = std::max<int64_t>(ctx_.options.max_body_bytes, 0);
  if (method != "PUT") return limit;
  std::optional<SessionPath> s = ParseSessionPath(path);
  if (!s || s->route != SessionRoute::kState) return limit;
  return SessionFileLimit(ctx_).value_or(limit);
}

int64_t Router::MaxBodyLimit() const {
  return std::max<int64_t>(std::max<int64_t>(ctx_.options.max_body_bytes, 0),
                           SessionFileLimit(ctx_).value_or(0));
}

HttpResponse Router::BodyTooLarge(std::string_view method, std::string_view path) const {
  const int64_t limit = BodyLimit(method, path);
  std::optional<SessionPath> s = ParseSessionPath(path);
  if (method == "PUT" && s && s->route == SessionRoute::kState && SessionFileLimit(ctx_)) {
    // Not 413: the upload is not a session file of this model, whatever the server's limits.
    return ErrorResponse({.status = 400,
                          .message = absl::StrCat("the session file is larger than ", limit,
                                                  " bytes, the largest a session of this model "
                                                  "can have"),
                          .code = "session_file_too_large"});
  }
  return ErrorResponse(
      {.status = 413,
       .message = absl::StrCat("the request body is larger than ", limit, " bytes"),
       .style = StyleOf(path)});
}

bool Router::Authorized(const HttpRequest& request) const {
  if (ctx_.options.api_key.empty()) return true;
  std::string_view auth = request.authorization;
  constexpr std::string_view kBearer = "bearer ";
  if (auth.size() < kBearer.size() ||
      !absl::EqualsIgnoreCase(std::string(auth.substr(0, kBearer.size())), "bearer ")) {
    return false;
  }
  auth.remove_prefix(kBearer.size());
  while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
  return ConstantTimeEquals(auth, ctx_.options.api_key);
}

void Router::Handle(const HttpRequest& request, std::shared_ptr<Exchange> exchange) {
  const RouteInfo info = Find(request.path);
  const ApiStyle style = StyleOf(request.path);
  if (info.route != Route::kHealth && !Authorized(request)) {
    return exchange->Respond(
        ErrorResponse({.status = 401,
                       .message = "a valid API key is required (Authorization: Bearer <key>)",
                       .code = "invalid_api_key",
                       .style = style}));
  }
  if (info.route == Route::kNone) {
    return exchange->Respond(ErrorResponse(
        {.status = 404, .message = absl::StrCat("no route for ", request.path), .style = style}));
  }
  if (!Accepts(info.methods, request.method)) {
    HttpResponse r =
        ErrorResponse({.status = 405,
                       .message = absl::StrCat(request.path, " accepts ", std::string(info.methods),
                                               ", not ", request.method),
                       .style = style});
    r.headers.emplace_back("Allow", std::string(info.methods));
    return exchange->Respond(std::move(r));
  }
  switch (info.route) {
    case Route::kHealth:
      return exchange->Respond(Health(ctx_));
    case Route::kMetrics:
      return exchange->Respond(MetricsText(ctx_));
    case Route::kModels: {
      OrderedJson data = OrderedJson::array();
      for (const std::string& name : ServedModelNames(*ctx_.state)) {
        data.push_back(ModelCard(ctx_, name, created_));
      }
      if (ctx_.state->engine != nullptr) {
        for (const auto& a : ctx_.state->engine->adapters()->List()) {
          data.push_back(AdapterCard(*a, ctx_.state->model_name));
        }
      }
      return exchange->Respond(JsonResponse({{"object", "list"}, {"data", std::move(data)}}));
    }
    case Route::kModel: {
      // A lookup of what exists: the served names and adapters only, even when any `model` is
      // accepted.
      const std::string id = std::string(
          std::string_view(request.path).substr(std::string_view("/v1/models/").size()));
      const std::vector<std::string> names = ServedModelNames(*ctx_.state);
      if (std::find(names.begin(), names.end(), id) == names.end()) {
        if (ctx_.state->engine != nullptr) {
          if (auto a = ctx_.state->engine->adapters()->Find(id)) {
            return exchange->Respond(JsonResponse(AdapterCard(*a, ctx_.state->model_name)));
          }
        }
        return exchange->Respond(
            ErrorResponse({.status = 404,
                           .message = absl::StrCat("the model '", id, "' does not exist"),
                           .code = "model_not_found"}));
      }
      return exchange->Respond(JsonResponse(ModelCard(ctx_, id, created_)));
    }
    case Route::kCompletions:
      return HandleCompletions(ctx_, request, std::move(exchange));
    case Route::kGenerate:
      return HandleTgiGenerate(ctx_, request, std::move(exchange), false);
    case Route::kGenerateStream:
      return HandleTgiGenerate(ctx_, request, std::move(exchange), true);
    case Route::kTgiCompat:
      return HandleTgiGenerate(ctx_, request, std::move(exchange), std::nullopt);
    case Route::kTgiInfo:
      return exchange->Respond(JsonResponse(TgiInfo(ctx_)));
    case Route::kTokenize:
      return exchange->Respond(JsonOrError(Tokenize(ctx_, request)));
    case Route::kDetokenize:
      return exchange->Respond(JsonOrError(Detokenize(ctx_, request)));
    case Route::kSessions:
      return exchange->Respond(HandleSessionRequest(ctx_, request, *info.session));
    case Route::kLoadLora:
      return exchange->Respond(HandleLoadLora(ctx_, request));
    case Route::kUnloadLora:
      return exchange->Respond(HandleUnloadLora(ctx_, request));
    case Route::kNone:
      break;
  }
}

}  // namespace mamba::server::http
