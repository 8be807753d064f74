// Session management over HTTP (engine/serving/session_store.h): list, inspect, delete, fork,
// export and import the conversations a client continues by `session_id`. Every route answers
// at once, on the connection's strand; errors in OpenAI's shape (api_error.h).
//
//   GET    /v1/sessions                 {"object": "list", "data": [info, ...]}
//   GET    /v1/sessions/{id}            info
//   DELETE /v1/sessions/{id}            {"id", "object": "session.deleted", "deleted": true}
//   POST   /v1/sessions/{id}/fork       body {"id": "new-id"} (optional) -> 201 + the new info
//   GET    /v1/sessions/{id}/state      the session file (safetensors, application/octet-stream)
//   PUT    /v1/sessions/{id}/state      body: a session file -> 201 (created) / 200 (replaced) +
//   info
//
// info = {"id", "object": "session", "tokens", "bytes", "created", "last_used", "expires_at"
// (Unix seconds), "in_use"}.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/serving/session_store.h"
#include "server/http/exchange.h"
#include "server/http/generation_call.h"
#include "server/http/json_util.h"

namespace mamba::server::http {

enum class SessionRoute { kList, kSession, kFork, kState };

struct SessionPath {
  SessionRoute route = SessionRoute::kList;
  std::string id;  // as it appears in the path (not yet validated; may contain '/')
};

// The session route a path names, or nullopt for paths outside /v1/sessions. Everything after
// "/v1/sessions/" that does not end in "/fork" or "/state" is taken as an id, so that a bad id
// ("a/b") is answered 400 by ValidateSessionId rather than 404.
std::optional<SessionPath> ParseSessionPath(std::string_view path);

// The methods a session route accepts ("GET", "GET, DELETE", ...), for 405 and Allow.
std::string_view SessionRouteMethods(SessionRoute route);

// Answers one session management request (the method already checked against the route).
HttpResponse HandleSessionRequest(const HandlerContext& ctx, const HttpRequest& request,
                                  const SessionPath& path);

// The management API's view of a session.
OrderedJson SessionInfoJson(const engine::SessionInfo& info);
// What a generation response carries: {"id", "tokens"} (tokens held after the turn).
OrderedJson SessionSummaryJson(const std::string& id, int64_t tokens);

// The largest body PUT /v1/sessions/{id}/state may have: the largest session file of the model
// (SessionStore::max_file_bytes), or nullopt when sessions are off.
std::optional<int64_t> SessionFileLimit(const HandlerContext& ctx);

// A `session_id` field of a generation request: absent or null leaves *out empty; otherwise it
// must be a valid id (InvalidArgument naming the field).
absl::Status ReadSessionId(const Json& obj, std::string* out);

}  // namespace mamba::server::http
