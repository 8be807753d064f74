#include "server/grpc/mamba_service.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/api_key.h"
#include "server/grpc/convert.h"
#include "server/grpc/generate_calls.h"
#include "server/session_id.h"

namespace mamba::server {
namespace {

// A stream call refused before it started.
class RefusedStream final : public ::grpc::ServerWriteReactor<::grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

::grpc::ServerUnaryReactor* Answer(::grpc::CallbackServerContext* context,
                                   const absl::Status& status) {
  ::grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status NoTokenizer() {
  return absl::FailedPreconditionError("the server has no tokenizer; use token ids");
}

}  // namespace

MambaServiceImpl::MambaServiceImpl(ServingState* state, const FrontEndOptions& options)
    : state_(state), options_(options) {
  if (!options.api_key.empty()) expected_authorization_ = "Bearer " + options.api_key;
}

absl::Status MambaServiceImpl::Admit(const ::grpc::CallbackServerContext& context,
                                     bool generation) const {
  if (!expected_authorization_.empty()) {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it == metadata.end() ||
        !ConstantTimeEquals(std::string_view(it->second.data(), it->second.size()),
                            expected_authorization_)) {
      return absl::UnauthenticatedError(
          "missing or wrong API key: send metadata 'authorization: Bearer <key>'");
    }
  }
  if (state_->engine == nullptr) return absl::UnavailableError("the engine is not running");
  if (generation && state_->health.load() == Health::kDraining) {
    return absl::UnavailableError("the server is shutting down");
  }
  return absl::OkStatus();
}

::grpc::ServerUnaryReactor* MambaServiceImpl::Generate(::grpc::CallbackServerContext* context,
                                                       const ::grpc::ByteBuffer* request,
                                                       ::grpc::ByteBuffer* response) {
  if (absl::Status s = Admit(*context, true); !s.ok()) return Answer(context, s);
  return StartGenerate(context, request, response, state_, options_);
}

::grpc::ServerWriteReactor<::grpc::ByteBuffer>* MambaServiceImpl::GenerateStream(
    ::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer* request) {
  if (absl::Status s = Admit(*context, true); !s.ok()) return new RefusedStream(s);
  return StartGenerateStream(context, request, state_, options_);
}

::grpc::ServerUnaryReactor* MambaServiceImpl::Tokenize(::grpc::CallbackServerContext* context,
                                                       const ::grpc::ByteBuffer* raw_request,
                                                       ::grpc::ByteBuffer* raw_response) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  v1::TokenizeRequest request;
  if (absl::Status s = ParseRequest(*raw_request, &request); !s.ok()) return Answer(context, s);
  const engine::Tokenizer* tok = state_->tokenizer;
  if (tok == nullptr) return Answer(context, NoTokenizer());
  absl::StatusOr<std::vector<engine::TokenId>> ids = tok->Encode(request.text());
  if (!ids.ok()) return Answer(context, ids.status());
  v1::TokenizeResponse response;
  response.mutable_token_ids()->Add(ids->begin(), ids->end());
  if (request.return_tokens()) {
    for (engine::TokenId id : *ids) {
      std::optional<std::string_view> t = tok->IdToToken(id);
      response.add_tokens(t ? std::string(*t) : std::string());
    }
  }
  SerializeToBuffer(response, raw_response);
  return Answer(context, absl::OkStatus());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::Detokenize(::grpc::CallbackServerContext* context,
                                                         const v1::DetokenizeRequest* request,
                                                         v1::DetokenizeResponse* response) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  const engine::Tokenizer* tok = state_->tokenizer;
  if (tok == nullptr) return Answer(context, NoTokenizer());
  const std::vector<engine::TokenId> ids(request->token_ids().begin(), request->token_ids().end());
  absl::StatusOr<std::string> text =
      DecodeClientIds(*state_, ids, request->skip_special_tokens(), "token_ids");
  if (!text.ok()) return Answer(context, text.status());
  response->set_text(*std::move(text));
  return Answer(context, absl::OkStatus());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::GetModelInfo(::grpc::CallbackServerContext* context,
                                                           const v1::GetModelInfoRequest*,
                                                           v1::ModelInfo* response) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  FillModelInfo(*state_, response);
  return Answer(context, absl::OkStatus());
}

}  // namespace mamba::server

namespace mamba::server {

absl::Status MambaServiceImpl::AdmitSession(const ::grpc::CallbackServerContext& context,
                                            const std::string& id, const char* field) const {
  if (absl::Status s = Admit(context, false); !s.ok()) return s;
  if (absl::Status s = ValidateFrontEndSessionId(id); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", s.message()));
  }
  return absl::OkStatus();
}

::grpc::ServerUnaryReactor* MambaServiceImpl::GetSession(::grpc::CallbackServerContext* context,
                                                         const v1::SessionRef* request,
                                                         v1::SessionInfo* response) {
  if (absl::Status s = AdmitSession(*context, request->id()); !s.ok()) return Answer(context, s);
  absl::StatusOr<engine::SessionInfo> info = state_->engine->GetSession(request->id());
  if (info.ok()) FillSessionInfo(*info, response);
  return Answer(context, info.status());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::ListSessions(::grpc::CallbackServerContext* context,
                                                           const v1::ListSessionsRequest*,
                                                           v1::ListSessionsResponse* response) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  if (state_->engine->sessions() == nullptr) {
    return Answer(context, absl::FailedPreconditionError("sessions are off on this server"));
  }
  for (const engine::SessionInfo& info : state_->engine->ListSessions()) {
    FillSessionInfo(info, response->add_sessions());
  }
  return Answer(context, absl::OkStatus());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::DeleteSession(::grpc::CallbackServerContext* context,
                                                            const v1::SessionRef* request,
                                                            v1::DeleteSessionResponse*) {
  if (absl::Status s = AdmitSession(*context, request->id()); !s.ok()) return Answer(context, s);
  return Answer(context, state_->engine->DeleteSession(request->id()));
}

::grpc::ServerUnaryReactor* MambaServiceImpl::ForkSession(::grpc::CallbackServerContext* context,
                                                          const v1::ForkSessionRequest* request,
                                                          v1::SessionInfo* response) {
  if (absl::Status s = AdmitSession(*context, request->id()); !s.ok()) return Answer(context, s);
  if (!request->new_id().empty()) {
    if (absl::Status s = ValidateFrontEndSessionId(request->new_id()); !s.ok()) {
      return Answer(context, absl::InvalidArgumentError(absl::StrCat("new_id: ", s.message())));
    }
  }
  absl::StatusOr<engine::SessionInfo> info =
      state_->engine->ForkSession(request->id(), request->new_id());
  if (info.ok()) FillSessionInfo(*info, response);
  return Answer(context, info.status());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::ExportSession(::grpc::CallbackServerContext* context,
                                                            const v1::SessionRef* request,
                                                            v1::SessionState* response) {
  if (absl::Status s = AdmitSession(*context, request->id()); !s.ok()) return Answer(context, s);
  absl::StatusOr<std::string> file = state_->engine->ExportSession(request->id());
  if (file.ok()) response->set_data(*std::move(file));
  return Answer(context, file.status());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::ImportSession(::grpc::CallbackServerContext* context,
                                                            const v1::ImportSessionRequest* request,
                                                            v1::ImportSessionResponse* response) {
  if (absl::Status s = AdmitSession(*context, request->id()); !s.ok()) return Answer(context, s);
  // Created or replaced, as seen just before the import (another client may race it).
  const bool existed = state_->engine->GetSession(request->id()).ok();
  absl::StatusOr<engine::SessionInfo> info =
      state_->engine->ImportSession(request->id(), request->data());
  if (info.ok()) {
    FillSessionInfo(*info, response->mutable_info());
    response->set_created(!existed);
  }
  return Answer(context, info.status());
}

}  // namespace mamba::server

namespace mamba::server {

::grpc::ServerUnaryReactor* MambaServiceImpl::LoadLoraAdapter(
    ::grpc::CallbackServerContext* context, const v1::LoadLoraAdapterRequest* request,
    v1::LoraAdapterInfo* response) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  const std::vector<std::string> served = ServedModelNames(*state_);
  if (std::find(served.begin(), served.end(), request->name()) != served.end()) {
    return Answer(context, absl::InvalidArgumentError(absl::StrCat(
                               "name: '", request->name(),
                               "' is the served model's name; give the adapter another name")));
  }
  auto adapter = state_->engine->adapters()->Load(request->name(), request->path());
  if (adapter.ok()) {
    state_->adapters_loaded = true;
    FillAdapterInfo(**adapter, response);
  }
  return Answer(context, adapter.status());
}

::grpc::ServerUnaryReactor* MambaServiceImpl::UnloadLoraAdapter(
    ::grpc::CallbackServerContext* context, const v1::UnloadLoraAdapterRequest* request,
    v1::UnloadLoraAdapterResponse*) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  return Answer(context, state_->engine->adapters()->Unload(request->name()));
}

::grpc::ServerUnaryReactor* MambaServiceImpl::ListLoraAdapters(
    ::grpc::CallbackServerContext* context, const v1::ListLoraAdaptersRequest*,
    v1::ListLoraAdaptersResponse* response) {
  if (absl::Status s = Admit(*context, false); !s.ok()) return Answer(context, s);
  const engine::AdapterRegistry& registry = *state_->engine->adapters();
  for (const auto& a : registry.List()) FillAdapterInfo(*a, response->add_adapters());
  response->set_max_loras(registry.options().max_loras);
  response->set_resident(registry.resident());
  return Answer(context, absl::OkStatus());
}

}  // namespace mamba::server
