// Sees every MambaService call's final status, in one place: reports it to the server's
// ResponseObserver (metrics) and logs the failures that need a human (INTERNAL, UNKNOWN) once,
// where they leave the server. Health and reflection calls are not observed.
#pragma once

#include <memory>

#include "grpcpp/support/server_interceptor.h"
#include "server/grpc/grpc_server.h"

namespace mamba::server {

std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface> MakeCallObserverFactory(
    ResponseObserver observer);

}  // namespace mamba::server
