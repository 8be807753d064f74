#include "server/http/lora.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"
#include "server/http/api_error.h"

namespace mamba::server::http {
namespace {

HttpResponse Text(std::string body) {
  return {200, "text/plain; charset=utf-8", std::move(body), {}};
}

HttpResponse Error(const absl::Status& s) { return ErrorResponse(s, ApiStyle::kOpenAi); }

// A required, non-empty string field.
absl::Status ReadRequired(const Json& body, const char* name, std::string* out) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) {
    return engine::InvalidField(name, absl::StrCat("'", name, "' is required"));
  }
  if (!it->is_string() || it->get<std::string>().empty()) {
    return engine::InvalidField(name, absl::StrCat("'", name, "' must be a non-empty string"));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<engine::AdapterRegistry*> Registry(const HandlerContext& ctx) {
  if (ctx.state->engine == nullptr) return absl::UnavailableError("the engine is not running");
  return ctx.state->engine->adapters();
}

}  // namespace

HttpResponse HandleLoadLora(const HandlerContext& ctx, const HttpRequest& request) {
  absl::StatusOr<engine::AdapterRegistry*> registry = Registry(ctx);
  if (!registry.ok()) return Error(registry.status());
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return Error(body.status());
  std::string name, path;
  if (absl::Status s = ReadRequired(*body, "lora_name", &name); !s.ok()) return Error(s);
  if (absl::Status s = ReadRequired(*body, "lora_path", &path); !s.ok()) return Error(s);
  const std::vector<std::string> served = ServedModelNames(*ctx.state);
  if (std::find(served.begin(), served.end(), name) != served.end()) {
    return Error(engine::InvalidField(
        "lora_name", absl::StrCat("'", name,
                                  "' is the served model's name: a request's \"model\" selects "
                                  "the base model by it; give the adapter another name")));
  }
  absl::StatusOr<std::shared_ptr<const engine::ServedAdapter>> a = (*registry)->Load(name, path);
  if (a.ok()) ctx.state->adapters_loaded = true;
  if (!a.ok()) {
    // The field at fault where the code tells it (an InvalidArgument may be either).
    switch (a.status().code()) {
      case absl::StatusCode::kAlreadyExists:
        return Error(engine::WithField(a.status(), "lora_name"));
      case absl::StatusCode::kNotFound:
        return Error(engine::WithField(a.status(), "lora_path"));
      default:
        return Error(a.status());
    }
  }
  return Text(absl::StrCat("Success: LoRA adapter '", name, "' added successfully."));
}

HttpResponse HandleUnloadLora(const HandlerContext& ctx, const HttpRequest& request) {
  absl::StatusOr<engine::AdapterRegistry*> registry = Registry(ctx);
  if (!registry.ok()) return Error(registry.status());
  absl::StatusOr<Json> body = ParseObject(request.body);
  if (!body.ok()) return Error(body.status());
  std::string name;
  if (absl::Status s = ReadRequired(*body, "lora_name", &name); !s.ok()) return Error(s);
  if (absl::Status s = (*registry)->Unload(name); !s.ok()) {
    return Error(engine::WithField(s, "lora_name"));
  }
  return Text(absl::StrCat("Success: LoRA adapter '", name, "' removed successfully."));
}

OrderedJson AdapterCard(const engine::ServedAdapter& adapter, const std::string& parent) {
  return {{"id", adapter.name},
          {"object", "model"},
          {"created", adapter.loaded_ms / 1000},
          {"owned_by", "mambaserve"},
          {"root", adapter.path.string()},
          {"parent", parent}};
}

}  // namespace mamba::server::http
