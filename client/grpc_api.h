// The client side of mamba.v1.MambaService (and grpc.health.v1): channel creation (plaintext or
// TLS), the API key as call metadata, every RPC with a timeout and cancellation, and
// GrpcGenerator, the streaming Generator over GenerateStream.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/endpoint.h"
#include "client/generation.h"
#include "grpcpp/grpcpp.h"
#include "mamba/v1/mamba.grpc.pb.h"

namespace mamba::client {

struct GrpcOptions {
  std::string api_key;          // sent as `authorization: Bearer KEY` when set
  std::string tls_ca_file;      // PEM roots (TLS); empty with TLS: the system's roots
  std::string tls_server_name;  // overrides the name checked against the certificate
};

// A channel to `endpoint` (TLS when endpoint.tls or options.tls_ca_file is set). Channels made
// with different `index` values use separate TCP connections.
absl::StatusOr<std::shared_ptr<::grpc::Channel>> MakeGrpcChannel(const Endpoint& endpoint,
                                                                 const GrpcOptions& options,
                                                                 int index = 0);

// "gRPC RESOURCE_EXHAUSTED: queue full" with the matching absl code and kind
// "grpc_resource_exhausted".
absl::Status FromGrpcStatus(const ::grpc::Status& status);

// The GenerateRequest for a spec (prompt as text or token ids).
v1::GenerateRequest ToGenerateRequest(const GenerateSpec& spec);

// Thread-safe (gRPC stubs are); every call blocks its thread.
class GrpcClient {
 public:
  GrpcClient(std::shared_ptr<::grpc::Channel> channel, std::string api_key);

  absl::StatusOr<v1::GenerateResponse> Generate(const v1::GenerateRequest& request,
                                                double timeout_s, CancelToken* cancel = nullptr);
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const std::string& text, bool return_tokens,
                                                double timeout_s);
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(const std::vector<int32_t>& ids,
                                                    bool skip_special_tokens, double timeout_s);
  absl::StatusOr<v1::ModelInfo> GetModelInfo(double timeout_s);
  // grpc.health.v1.Health/Check: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN".
  absl::StatusOr<std::string> CheckHealth(const std::string& service, double timeout_s);

  v1::MambaService::Stub& stub() { return *stub_; }
  // Sets the deadline and the API key metadata of a call.
  void Prepare(::grpc::ClientContext* context, double timeout_s) const;
  // One unary RPC of the stub, e.g. Unary(&Stub::ListLoraAdapters, request, &response, 10).
  template <typename Request, typename Response>
  absl::Status Unary(::grpc::Status (v1::MambaService::Stub::*method)(::grpc::ClientContext*,
                                                                      const Request&, Response*),
                     const Request& request, Response* response, double timeout_s) {
    ::grpc::ClientContext context;
    Prepare(&context, timeout_s);
    return FromGrpcStatus((stub().*method)(&context, request, response));
  }

 private:
  std::shared_ptr<::grpc::Channel> channel_;
  std::unique_ptr<v1::MambaService::Stub> stub_;
  std::string api_key_;
};

// GenerateStream as a Generator. Token messages become events with tokens = 1 and the token id;
// end messages fill each completion's finish reason, usage and queue time.
class GrpcGenerator : public Generator {
 public:
  GrpcGenerator(std::shared_ptr<::grpc::Channel> channel, std::string api_key)
      : client_(std::move(channel), std::move(api_key)) {}
  absl::StatusOr<GenerateResult> Stream(const GenerateSpec& spec, const EventCallback& on_event,
                                        CancelToken* cancel) override;
  const char* api_name() const override { return "grpc"; }

 private:
  GrpcClient client_;
};

// "stop", "length", "cancelled", "deadline", "error" or "unspecified".
std::string FinishReasonName(v1::FinishReason reason);

}  // namespace mamba::client
