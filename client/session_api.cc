#include "client/session_api.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/errors.h"

namespace mamba::client {
namespace {

absl::Status ProtocolError(const char* what) {
  return WithKind(absl::InternalError(absl::StrCat("unexpected answer: ", what)), "protocol");
}

absl::StatusOr<SessionInfo> InfoFromJson(const Json& j) {
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) {
    return ProtocolError("a session without an id");
  }
  SessionInfo s;
  s.id = j["id"].get<std::string>();
  auto int_of = [&j](const char* name) -> int64_t {
    auto it = j.find(name);
    return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
  };
  s.tokens = int_of("tokens");
  s.bytes = int_of("bytes");
  s.created = int_of("created");
  s.last_used = int_of("last_used");
  s.expires_at = int_of("expires_at");
  s.in_use = j.value("in_use", false);
  return s;
}

SessionInfo FromProto(const v1::SessionInfo& p) {
  return {p.id(),
          p.tokens(),
          p.bytes(),
          p.created_unix_ms() / 1000,
          p.last_used_unix_ms() / 1000,
          p.expires_unix_ms() / 1000,
          p.in_use()};
}

class HttpSessions final : public SessionApi {
 public:
  HttpSessions(const Endpoint& endpoint, std::string api_key, HttpClientOptions options,
               double timeout_s)
      : api_(endpoint, std::move(api_key), std::move(options)), timeout_s_(timeout_s) {}

  absl::StatusOr<SessionInfo> Get(const std::string& id) override {
    absl::StatusOr<Json> r = api_.JsonCall("GET", Path(id), nullptr, timeout_s_);
    if (!r.ok()) return r.status();
    return InfoFromJson(*r);
  }

  absl::StatusOr<std::vector<SessionInfo>> List() override {
    absl::StatusOr<Json> r = api_.JsonCall("GET", "/v1/sessions", nullptr, timeout_s_);
    if (!r.ok()) return r.status();
    auto data = r->find("data");
    if (data == r->end() || !data->is_array()) return ProtocolError("a list without 'data'");
    std::vector<SessionInfo> out;
    for (const Json& j : *data) {
      absl::StatusOr<SessionInfo> s = InfoFromJson(j);
      if (!s.ok()) return s.status();
      out.push_back(*std::move(s));
    }
    return out;
  }

  absl::Status Delete(const std::string& id) override {
    return api_.JsonCall("DELETE", Path(id), nullptr, timeout_s_).status();
  }

  absl::StatusOr<SessionInfo> Fork(const std::string& id, const std::string& new_id) override {
    Json body = Json::object();
    if (!new_id.empty()) body["id"] = new_id;
    absl::StatusOr<Json> r =
        api_.JsonCall("POST", absl::StrCat(Path(id), "/fork"), &body, timeout_s_);
    if (!r.ok()) return r.status();
    return InfoFromJson(*r);
  }

  absl::StatusOr<std::string> Export(const std::string& id) override {
    absl::StatusOr<HttpResult> r =
        api_.Send(api_.MakeCall("GET", absl::StrCat(Path(id), "/state"), "", timeout_s_));
    if (!r.ok()) return r.status();
    if (r->status != 200) return HttpError(r->status, ErrorMessageFromBody(r->body));
    return std::move(r->body);
  }

  absl::StatusOr<SessionInfo> Import(const std::string& id, const std::string& file,
                                     bool* created) override {
    HttpCall call = api_.MakeCall("PUT", absl::StrCat(Path(id), "/state"), "", timeout_s_);
    call.body = file;
    call.headers.push_back({"Content-Type", "application/octet-stream"});
    absl::StatusOr<HttpResult> r = api_.Send(call);
    if (!r.ok()) return r.status();
    if (r->status / 100 != 2) return HttpError(r->status, ErrorMessageFromBody(r->body));
    Json j = Json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return ProtocolError("the import answer is not JSON");
    *created = r->status == 201;
    return InfoFromJson(j);
  }

 private:
  // Ids are URL-safe as they are ([A-Za-z0-9._~-]); the server refuses any other.
  static std::string Path(const std::string& id) { return absl::StrCat("/v1/sessions/", id); }

  HttpApi api_;
  double timeout_s_;
};

class GrpcSessions final : public SessionApi {
 public:
  GrpcSessions(std::shared_ptr<::grpc::Channel> channel, std::string api_key, double timeout_s)
      : client_(std::move(channel), std::move(api_key)), timeout_s_(timeout_s) {}

  absl::StatusOr<SessionInfo> Get(const std::string& id) override {
    v1::SessionInfo out;
    if (absl::Status s = Call(&v1::MambaService::Stub::GetSession, Ref(id), &out); !s.ok()) {
      return s;
    }
    return FromProto(out);
  }

  absl::StatusOr<std::vector<SessionInfo>> List() override {
    v1::ListSessionsResponse out;
    if (absl::Status s =
            Call(&v1::MambaService::Stub::ListSessions, v1::ListSessionsRequest(), &out);
        !s.ok()) {
      return s;
    }
    std::vector<SessionInfo> list;
    for (const v1::SessionInfo& p : out.sessions()) list.push_back(FromProto(p));
    return list;
  }

  absl::Status Delete(const std::string& id) override {
    v1::DeleteSessionResponse out;
    return Call(&v1::MambaService::Stub::DeleteSession, Ref(id), &out);
  }

  absl::StatusOr<SessionInfo> Fork(const std::string& id, const std::string& new_id) override {
    v1::ForkSessionRequest request;
    request.set_id(id);
    request.set_new_id(new_id);
    v1::SessionInfo out;
    if (absl::Status s = Call(&v1::MambaService::Stub::ForkSession, request, &out); !s.ok()) {
      return s;
    }
    return FromProto(out);
  }

  absl::StatusOr<std::string> Export(const std::string& id) override {
    v1::SessionState out;
    if (absl::Status s = Call(&v1::MambaService::Stub::ExportSession, Ref(id), &out); !s.ok()) {
      return s;
    }
    return std::move(*out.mutable_data());
  }

  absl::StatusOr<SessionInfo> Import(const std::string& id, const std::string& file,
                                     bool* created) override {
    v1::ImportSessionRequest request;
    request.set_id(id);
    request.set_data(file);
    v1::ImportSessionResponse out;
    if (absl::Status s = Call(&v1::MambaService::Stub::ImportSession, request, &out); !s.ok()) {
      return s;
    }
    *created = out.created();
    return FromProto(out.info());
  }

 private:
  static v1::SessionRef Ref(const std::string& id) {
    v1::SessionRef r;
    r.set_id(id);
    return r;
  }

  template <typename Request, typename Response>
  absl::Status Call(::grpc::Status (v1::MambaService::Stub::*method)(::grpc::ClientContext*,
                                                                     const Request&, Response*),
                    const Request& request, Response* response) {
    return client_.Unary(method, request, response, timeout_s_);
  }

  GrpcClient client_;
  double timeout_s_;
};

}  // namespace

Json SessionInfo::ToJson() const {
  return {{"id", id},
          {"object", "session"},
          {"tokens", tokens},
          {"bytes", bytes},
          {"created", created},
          {"last_used", last_used},
          {"expires_at", expires_at},
          {"in_use", in_use}};
}

absl::StatusOr<std::unique_ptr<SessionApi>> MakeSessionApi(const Endpoint& endpoint,
                                                           const std::string& api_key,
                                                           const HttpClientOptions& http,
                                                           const GrpcOptions& grpc,
                                                           double timeout_s) {
  if (endpoint.protocol == Protocol::kHttp) {
    return std::unique_ptr<SessionApi>(
        std::make_unique<HttpSessions>(endpoint, api_key, http, timeout_s));
  }
  absl::StatusOr<std::shared_ptr<::grpc::Channel>> channel = MakeGrpcChannel(endpoint, grpc);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<SessionApi>(
      std::make_unique<GrpcSessions>(*std::move(channel), api_key, timeout_s));
}

}  // namespace mamba::client
