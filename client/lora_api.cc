#include "client/lora_api.h"

#include <utility>

#include "client/errors.h"

namespace mamba::client {
namespace {

class HttpLoras final : public LoraApi {
 public:
  HttpLoras(const Endpoint& endpoint, std::string api_key, HttpClientOptions options,
            double timeout_s)
      : api_(endpoint, std::move(api_key), std::move(options)), timeout_s_(timeout_s) {}

  absl::Status Load(const std::string& name, const std::string& path) override {
    return Post("/v1/load_lora_adapter", {{"lora_name", name}, {"lora_path", path}});
  }

  absl::Status Unload(const std::string& name) override {
    return Post("/v1/unload_lora_adapter", {{"lora_name", name}});
  }

  // The /v1/models entries with a "parent": the adapters (vLLM's shape).
  absl::StatusOr<std::vector<LoraInfo>> List() override {
    absl::StatusOr<Json> r = api_.JsonCall("GET", "/v1/models", nullptr, timeout_s_);
    if (!r.ok()) return r.status();
    auto data = r->find("data");
    if (data == r->end() || !data->is_array()) {
      return WithKind(absl::InternalError("unexpected answer: a list without 'data'"), "protocol");
    }
    std::vector<LoraInfo> out;
    for (const Json& m : *data) {
      if (!m.is_object() || !m.contains("parent") || !m["parent"].is_string()) continue;
      LoraInfo info;
      info.name = m.value("id", "");
      info.path = m.value("root", "");
      info.parent = m["parent"].get<std::string>();
      info.created = m.value("created", int64_t{0});
      out.push_back(std::move(info));
    }
    return out;
  }

 private:
  // The success answer is text (vLLM's "Success: ..."), errors are JSON.
  absl::Status Post(const char* path, const Json& body) {
    absl::StatusOr<HttpResult> r = api_.Send(api_.MakeCall("POST", path, body.dump(), timeout_s_));
    if (!r.ok()) return r.status();
    if (r->status != 200) return HttpError(r->status, ErrorMessageFromBody(r->body));
    return absl::OkStatus();
  }

  HttpApi api_;
  double timeout_s_;
};

class GrpcLoras final : public LoraApi {
 public:
  GrpcLoras(std::shared_ptr<::grpc::Channel> channel, std::string api_key, double timeout_s)
      : client_(std::move(channel), std::move(api_key)), timeout_s_(timeout_s) {}

  absl::Status Load(const std::string& name, const std::string& path) override {
    v1::LoadLoraAdapterRequest request;
    request.set_name(name);
    request.set_path(path);
    v1::LoraAdapterInfo out;
    return Call(&v1::MambaService::Stub::LoadLoraAdapter, request, &out);
  }

  absl::Status Unload(const std::string& name) override {
    v1::UnloadLoraAdapterRequest request;
    request.set_name(name);
    v1::UnloadLoraAdapterResponse out;
    return Call(&v1::MambaService::Stub::UnloadLoraAdapter, request, &out);
  }

  absl::StatusOr<std::vector<LoraInfo>> List() override {
    v1::ListLoraAdaptersResponse out;
    if (absl::Status s =
            Call(&v1::MambaService::Stub::ListLoraAdapters, v1::ListLoraAdaptersRequest(), &out);
        !s.ok()) {
      return s;
    }
    std::vector<LoraInfo> list;
    for (const v1::LoraAdapterInfo& p : out.adapters()) {
      LoraInfo info;
      info.name = p.name();
      info.path = p.path();
      info.created = p.loaded_unix_ms() / 1000;
      info.max_rank = p.max_rank();
      info.targets.assign(p.targets().begin(), p.targets().end());
      info.bytes = p.bytes();
      list.push_back(std::move(info));
    }
    return list;
  }

 private:
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

Json LoraInfo::ToJson() const {
  Json j = {{"id", name}, {"object", "model"}, {"created", created}, {"root", path}};
  if (!parent.empty()) j["parent"] = parent;
  if (max_rank > 0) {
    j["max_rank"] = max_rank;
    j["targets"] = targets;
    j["bytes"] = bytes;
  }
  return j;
}

absl::StatusOr<std::unique_ptr<LoraApi>> MakeLoraApi(const Endpoint& endpoint,
                                                     const std::string& api_key,
                                                     const HttpClientOptions& http,
                                                     const GrpcOptions& grpc, double timeout_s) {
  if (endpoint.protocol == Protocol::kHttp) {
    return std::unique_ptr<LoraApi>(
        std::make_unique<HttpLoras>(endpoint, api_key, http, timeout_s));
  }
  absl::StatusOr<std::shared_ptr<::grpc::Channel>> channel = MakeGrpcChannel(endpoint, grpc);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<LoraApi>(
      std::make_unique<GrpcLoras>(*std::move(channel), api_key, timeout_s));
}

}  // namespace mamba::client
