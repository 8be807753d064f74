// mamba.v1.MambaService over the callback API: checks the API key, then hands Generate and
// GenerateStream to their reactors (generate_calls.h) and answers the small RPCs (tokenizer,
// model info, sessions, LoRA adapters) inline. The
// calls whose requests carry text take raw bytes and parse them themselves, so that invalid
// UTF-8 is INVALID_ARGUMENT rather than gRPC's bare UNIMPLEMENTED for an unparsable message.
#pragma once

#include "absl/status/status.h"
#include "mamba/v1/mamba.grpc.pb.h"
#include "server/serving_state.h"

namespace mamba::server {

using MambaServiceBase = v1::MambaService::WithRawCallbackMethod_Generate<
    v1::MambaService::WithRawCallbackMethod_GenerateStream<
        v1::MambaService::WithRawCallbackMethod_Tokenize<v1::MambaService::CallbackService>>>;

class MambaServiceImpl final : public MambaServiceBase {
 public:
  // `state` (and its engine) must outlive the service.
  MambaServiceImpl(ServingState* state, const FrontEndOptions& options);

  // Raw: v1::GenerateRequest -> v1::GenerateResponse / stream of v1::GenerateStreamResponse.
  ::grpc::ServerUnaryReactor* Generate(::grpc::CallbackServerContext* context,
                                       const ::grpc::ByteBuffer* request,
                                       ::grpc::ByteBuffer* response) override;
  ::grpc::ServerWriteReactor<::grpc::ByteBuffer>* GenerateStream(
      ::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer* request) override;
  // Raw: v1::TokenizeRequest -> v1::TokenizeResponse.
  ::grpc::ServerUnaryReactor* Tokenize(::grpc::CallbackServerContext* context,
                                       const ::grpc::ByteBuffer* request,
                                       ::grpc::ByteBuffer* response) override;
  ::grpc::ServerUnaryReactor* Detokenize(::grpc::CallbackServerContext* context,
                                         const v1::DetokenizeRequest* request,
                                         v1::DetokenizeResponse* response) override;
  ::grpc::ServerUnaryReactor* GetModelInfo(::grpc::CallbackServerContext* context,
                                           const v1::GetModelInfoRequest* request,
                                           v1::ModelInfo* response) override;

  // Sessions: the engine's answers as they are (NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT,
  // RESOURCE_EXHAUSTED, FAILED_PRECONDITION when sessions are off). Allowed while draining.
  ::grpc::ServerUnaryReactor* GetSession(::grpc::CallbackServerContext* context,
                                         const v1::SessionRef* request,
                                         v1::SessionInfo* response) override;
  ::grpc::ServerUnaryReactor* ListSessions(::grpc::CallbackServerContext* context,
                                           const v1::ListSessionsRequest* request,
                                           v1::ListSessionsResponse* response) override;
  ::grpc::ServerUnaryReactor* DeleteSession(::grpc::CallbackServerContext* context,
                                            const v1::SessionRef* request,
                                            v1::DeleteSessionResponse* response) override;
  ::grpc::ServerUnaryReactor* ForkSession(::grpc::CallbackServerContext* context,
                                          const v1::ForkSessionRequest* request,
                                          v1::SessionInfo* response) override;
  ::grpc::ServerUnaryReactor* ExportSession(::grpc::CallbackServerContext* context,
                                            const v1::SessionRef* request,
                                            v1::SessionState* response) override;
  ::grpc::ServerUnaryReactor* ImportSession(::grpc::CallbackServerContext* context,
                                            const v1::ImportSessionRequest* request,
                                            v1::ImportSessionResponse* response) override;

  // LoRA adapters: the registry's answers as they are (INVALID_ARGUMENT, NOT_FOUND,
  // ALREADY_EXISTS, RESOURCE_EXHAUSTED, UNIMPLEMENTED), INVALID_ARGUMENT for a name that is the
  // served model's. The load runs on the calling gRPC thread.
  ::grpc::ServerUnaryReactor* LoadLoraAdapter(::grpc::CallbackServerContext* context,
                                              const v1::LoadLoraAdapterRequest* request,
                                              v1::LoraAdapterInfo* response) override;
  ::grpc::ServerUnaryReactor* UnloadLoraAdapter(::grpc::CallbackServerContext* context,
                                                const v1::UnloadLoraAdapterRequest* request,
                                                v1::UnloadLoraAdapterResponse* response) override;
  ::grpc::ServerUnaryReactor* ListLoraAdapters(::grpc::CallbackServerContext* context,
                                               const v1::ListLoraAdaptersRequest* request,
                                               v1::ListLoraAdaptersResponse* response) override;

 private:
  // Unauthenticated (API key set, `authorization` metadata not "Bearer <key>") or Unavailable
  // (no engine; for generation also while draining).
  absl::Status Admit(const ::grpc::CallbackServerContext& context, bool generation) const;
  // Admit, then the id checked (InvalidArgument naming `field`).
  absl::Status AdmitSession(const ::grpc::CallbackServerContext& context, const std::string& id,
                            const char* field = "id") const;

  ServingState* state_;
  FrontEndOptions options_;
  std::string expected_authorization_;  // "Bearer <key>", empty when no key is required
};

}  // namespace mamba::server
