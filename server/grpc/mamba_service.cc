#include "server/grpc/mamba_service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/api_key.h"
#include "server/grpc/convert.h"
#include "server/grpc/generate_calls.h"

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
  absl::StatusOr<std::string> text = tok->Decode(ids, request->skip_special_tokens());
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
