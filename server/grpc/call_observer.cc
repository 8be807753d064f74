#include "server/grpc/call_observer.h"

#include <string_view>
#include <utility>

#include "engine/logging.h"
#include "spdlog/spdlog.h"

namespace mamba::server {
namespace {

constexpr std::string_view kPrefix = "/mamba.v1.MambaService/";

class CallObserver final : public ::grpc::experimental::Interceptor {
 public:
  CallObserver(const ResponseObserver* observer, std::string_view method)
      : observer_(observer), method_(method) {}

  void Intercept(::grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            ::grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const ::grpc::Status status = methods->GetSendStatus();
      const ::grpc::StatusCode code = status.error_code();
      if (code == ::grpc::StatusCode::INTERNAL || code == ::grpc::StatusCode::UNKNOWN) {
        engine::NamedLogger("grpc")->error("grpc: {} failed ({}): {}", method_,
                                           static_cast<int>(code), status.error_message());
      } else if (code != ::grpc::StatusCode::OK) {
        engine::NamedLogger("grpc")->debug("grpc: {} -> {}: {}", method_, static_cast<int>(code),
                                           status.error_message());
      }
      if (*observer_) (*observer_)(method_, static_cast<int>(code));
    }
    methods->Proceed();
  }

 private:
  const ResponseObserver* observer_;
  std::string_view method_;  // points into gRPC's method table, which outlives every call
};

class CallObserverFactory final : public ::grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallObserverFactory(ResponseObserver observer) : observer_(std::move(observer)) {}

  ::grpc::experimental::Interceptor* CreateServerInterceptor(
      ::grpc::experimental::ServerRpcInfo* info) override {
    const std::string_view method = info->method();
    if (method.substr(0, kPrefix.size()) != kPrefix) return nullptr;  // not ours
    return new CallObserver(&observer_, method.substr(kPrefix.size()));
  }

 private:
  ResponseObserver observer_;
};

}  // namespace

std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface> MakeCallObserverFactory(
    ResponseObserver observer) {
  return std::make_unique<CallObserverFactory>(std::move(observer));
}

}  // namespace mamba::server
