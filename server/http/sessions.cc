#include "server/http/sessions.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"
#include "engine/status_macros.h"
#include "server/http/api_error.h"
#include "server/session_id.h"

namespace mamba::server::http {
namespace {

constexpr std::string_view kPrefix = "/v1/sessions";

// Management works while draining (a client may still save its conversation); only a server
// that is starting has no engine to ask.
absl::StatusOr<engine::Engine*> SessionEngine(const HandlerContext& ctx) {
  if (ctx.state->health.load() == Health::kStarting || ctx.state->engine == nullptr) {
    return absl::UnavailableError("the server is starting");
  }
  return ctx.state->engine;
}

HttpResponse Json200(const OrderedJson& j, int status = 200) {
  return {status, "application/json", Dump(j), {}};
}

HttpResponse Error(const absl::Status& status) {
  ApiError e = ToApiError(status, ApiStyle::kOpenAi);
  if (!e.code && status.code() == absl::StatusCode::kNotFound) e.code = "session_not_found";
  if (!e.code && status.code() == absl::StatusCode::kAlreadyExists) e.code = "session_exists";
  return ErrorResponse(e);
}

// POST /v1/sessions/{id}/fork: the optional body {"id": "new-id"}.
absl::StatusOr<std::string> ForkTarget(const HttpRequest& request) {
  if (absl::StripAsciiWhitespace(request.body).empty()) return std::string();
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return body.status();
  std::string id;
  MAMBA_RETURN_IF_ERROR(ReadString(*body, "id", &id));
  if (body->contains("id") && !(*body)["id"].is_null()) {
    if (absl::Status s = ValidateFrontEndSessionId(id); !s.ok()) {
      return engine::InvalidField("id", absl::StrCat("'id': ", s.message()));
    }
  }
  return id;
}

HttpResponse Export(engine::Engine& engine, const std::string& id) {
  absl::StatusOr<std::string> file = engine.ExportSession(id);
  if (!file.ok()) return Error(file.status());
  HttpResponse r{200, "application/octet-stream", *std::move(file), {}};
  r.headers.emplace_back("Content-Disposition",
                         absl::StrCat("attachment; filename=\"", id, ".safetensors\""));
  return r;
}

HttpResponse Import(engine::Engine& engine, const std::string& id, const std::string& bytes) {
  // Created or replaced, as seen just before the import (another client may race it).
  const bool existed = engine.GetSession(id).ok();
  absl::StatusOr<engine::SessionInfo> info = engine.ImportSession(id, bytes);
  if (!info.ok()) return Error(info.status());
  return Json200(SessionInfoJson(*info), existed ? 200 : 201);
}

}  // namespace

std::optional<SessionPath> ParseSessionPath(std::string_view path) {
  if (!path.starts_with(kPrefix)) return std::nullopt;
  path.remove_prefix(kPrefix.size());
  if (path.empty()) return SessionPath{SessionRoute::kList, ""};
  if (path.front() != '/') return std::nullopt;  // e.g. /v1/sessionsX
  path.remove_prefix(1);
  for (const auto& [suffix, route] :
       {std::pair<std::string_view, SessionRoute>{"/fork", SessionRoute::kFork},
        {"/state", SessionRoute::kState}}) {
    if (path.ends_with(suffix)) {
      return SessionPath{route, std::string(path.substr(0, path.size() - suffix.size()))};
    }
  }
  return SessionPath{SessionRoute::kSession, std::string(path)};
}

std::string_view SessionRouteMethods(SessionRoute route) {
  switch (route) {
    case SessionRoute::kList:
      return "GET";
    case SessionRoute::kSession:
      return "GET, DELETE";
    case SessionRoute::kFork:
      return "POST";
    case SessionRoute::kState:
      return "GET, PUT";
  }
  return "GET";
}

OrderedJson SessionInfoJson(const engine::SessionInfo& info) {
  return {{"id", info.id},
          {"object", "session"},
          {"tokens", info.tokens},
          {"bytes", info.bytes},
          {"created", info.created_ms / 1000},
          {"last_used", info.last_used_ms / 1000},
          {"expires_at", info.expires_ms / 1000},
          {"in_use", info.in_use}};
}

OrderedJson SessionSummaryJson(const std::string& id, int64_t tokens) {
  return {{"id", id}, {"tokens", tokens}};
}

std::optional<int64_t> SessionFileLimit(const HandlerContext& ctx) {
  engine::Engine* e = ctx.state->engine;
  if (e == nullptr || e->sessions() == nullptr) return std::nullopt;
  return e->sessions()->max_file_bytes();
}

absl::Status ReadSessionId(const Json& obj, std::string* out) {
  auto it = obj.find("session_id");
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return engine::InvalidField("session_id", "'session_id' must be a string");
  }
  std::string id = it->get<std::string>();
  if (absl::Status s = ValidateFrontEndSessionId(id); !s.ok()) {
    return engine::InvalidField("session_id", absl::StrCat("'session_id': ", s.message()));
  }
  *out = std::move(id);
  return absl::OkStatus();
}

HttpResponse HandleSessionRequest(const HandlerContext& ctx, const HttpRequest& request,
                                  const SessionPath& path) {
  absl::StatusOr<engine::Engine*> engine = SessionEngine(ctx);
  if (!engine.ok()) return Error(engine.status());
  engine::Engine& e = **engine;
  // The id first: nothing else is looked at for a bad one.
  if (path.route != SessionRoute::kList) {
    if (absl::Status s = ValidateFrontEndSessionId(path.id); !s.ok()) return Error(s);
  }
  if (e.sessions() == nullptr) {
    // What the engine answers too; said before a body is parsed, and an empty list would hide it.
    return Error(absl::FailedPreconditionError(
        "sessions are off on this server (mamba-server --session-bytes 0)"));
  }
  if (path.route == SessionRoute::kList) {
    OrderedJson data = OrderedJson::array();
    for (const engine::SessionInfo& info : e.ListSessions()) data.push_back(SessionInfoJson(info));
    return Json200({{"object", "list"}, {"data", std::move(data)}});
  }
  const std::string& id = path.id;
  switch (path.route) {
    case SessionRoute::kSession: {
      if (request.method == "DELETE") {
        if (absl::Status s = e.DeleteSession(id); !s.ok()) return Error(s);
        return Json200({{"id", id}, {"object", "session.deleted"}, {"deleted", true}});
      }
      absl::StatusOr<engine::SessionInfo> info = e.GetSession(id);
      if (!info.ok()) return Error(info.status());
      return Json200(SessionInfoJson(*info));
    }
    case SessionRoute::kFork: {
      absl::StatusOr<std::string> target = ForkTarget(request);
      if (!target.ok()) return Error(target.status());
      absl::StatusOr<engine::SessionInfo> info = e.ForkSession(id, *target);
      if (!info.ok()) return Error(info.status());
      return Json200(SessionInfoJson(*info), 201);
    }
    case SessionRoute::kState:
      return request.method == "PUT" ? Import(e, id, request.body) : Export(e, id);
    case SessionRoute::kList:
      break;
  }
  return Error(absl::InternalError("unhandled session route"));
}

}  // namespace mamba::server::http
