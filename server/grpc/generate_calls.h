// The Generate (unary) and GenerateStream (server-streaming) calls. Each submits one engine
// request whose RequestSink feeds a gRPC callback reactor: the sink runs on the engine's thread,
// never blocks (it appends under a mutex and starts a write only when none is in flight), and
// outlives the reactor safely (it shares only a state object with it, never the reactor itself
// once the call has been finished).
#pragma once

#include "grpcpp/grpcpp.h"
#include "server/serving_state.h"

namespace mamba::server {

// Both take the request and give the replies as raw bytes (a serialized v1::GenerateRequest,
// v1::GenerateResponse, v1::GenerateStreamResponse), so that a request with invalid UTF-8 text
// is refused with INVALID_ARGUMENT (see ParseRequest in convert.h).

// Creates the reactor for one Generate call; it deletes itself when gRPC is done with it. The
// engine in `state` must outlive the call.
::grpc::ServerUnaryReactor* StartGenerate(::grpc::CallbackServerContext* context,
                                          const ::grpc::ByteBuffer* request,
                                          ::grpc::ByteBuffer* response, ServingState* state,
                                          const FrontEndOptions& options);

// Creates the reactor for one GenerateStream call (self-deleting, as above). A client that falls
// more than options.max_stream_buffer_bytes of messages behind is cancelled: the engine request
// is cancelled at once and the call ends with RESOURCE_EXHAUSTED after the message being written.
::grpc::ServerWriteReactor<::grpc::ByteBuffer>* StartGenerateStream(
    ::grpc::CallbackServerContext* context, const ::grpc::ByteBuffer* request, ServingState* state,
    const FrontEndOptions& options);

}  // namespace mamba::server
