// Conversions between the mamba.v1 wire messages and the engine's types, and the one place where
// an absl::Status becomes a wire status (the codes are gRPC's, so the mapping is the identity).
#pragma once

#include <chrono>
#include <optional>

#include "absl/status/statusor.h"
#include "engine/lora/adapter_registry.h"
#include "engine/request.h"
#include "engine/serving/session_store.h"
#include "engine/tokenizer/tokenizer.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "mamba/v1/mamba.pb.h"
#include "server/serving_state.h"

namespace mamba::server {

// A GenerateRequest checked and turned into what the engine takes, plus what the reply needs.
struct PreparedRequest {
  engine::Request request;
  bool echo = false;
  v1::PromptEcho prompt;       // filled when echo
  bool token_details = false;  // logprobs or top_logprobs asked: fill Token's optional fields
  int returned = 1;            // completions answered: request.n, or fewer (best_of > n)
};

// Converts the prompt and options, applies the documented defaults, finds the adapter (NotFound
// when none has the name), and checks the result with Engine::Validate (the one validator; the
// unary call sizes its reply by n before Submit).
// With best_of > n, request.n is best_of and `returned` n. Errors: InvalidArgument (no prompt,
// invalid UTF-8, a bad session id or n > 1 with one, best_of < n or with a session, and
// every range or limit the engine checks: an empty or too long prompt, n, sampling),
// FailedPrecondition (text or stop strings without a tokenizer).
absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& in,
                                               const ServingState& state,
                                               std::optional<engine::Clock::time_point> deadline);

// The call's deadline on the engine's clock: the client's (gRPC deadline, system_clock;
// time_point::max() when it set none), else now + default_timeout_ms (when > 0), else none.
std::optional<engine::Clock::time_point> EngineDeadline(
    std::chrono::system_clock::time_point client_deadline, int64_t default_timeout_ms);

::grpc::Status ToGrpcStatus(const absl::Status& status);

// Requests that carry text are taken as raw bytes and parsed here: a message gRPC fails to parse
// itself reaches no handler and is answered UNIMPLEMENTED with no message. InvalidArgument,
// saying whether a string field held invalid UTF-8 (proto3 forbids it) or the bytes are not a
// protobuf message at all.
absl::Status ParseRequest(const ::grpc::ByteBuffer& buffer, google::protobuf::MessageLite* out);
void SerializeToBuffer(const google::protobuf::MessageLite& message, ::grpc::ByteBuffer* out);

v1::FinishReason ToProto(engine::Finish reason);

// `details`: also the log-probs and the bytes of the token and its alternatives.
void FillToken(const engine::SampledToken& token, bool details, const engine::Tokenizer* tokenizer,
               v1::Token* out);

void FillEnd(const engine::FinishEvent& event, v1::CompletionEnd* out);

// PromptEcho.logprobs from the prompt's log-probs, aligned with the end of echo->token_ids()
// (entries the engine did not report carry only the id).
void FillPromptLogprobs(const engine::PromptEvent& event, const engine::Tokenizer* tokenizer,
                        v1::PromptEcho* echo);

// GetModelInfo's answer from the engine's config, options and stats, and the serving state's
// names and generation defaults.
void FillModelInfo(const ServingState& state, v1::ModelInfo* out);

void FillSessionInfo(const engine::SessionInfo& info, v1::SessionInfo* out);

void FillAdapterInfo(const engine::ServedAdapter& adapter, v1::LoraAdapterInfo* out);

}  // namespace mamba::server
