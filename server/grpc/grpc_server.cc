#include "server/grpc/grpc_server.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/grpc/call_observer.h"
#include "server/grpc/mamba_service.h"
#include "spdlog/spdlog.h"

namespace mamba::server {
namespace {

constexpr char kServiceName[] = "mamba.v1.MambaService";
constexpr int64_t kDefaultMaxReceiveBytes = 4 << 20;  // gRPC's own default
constexpr int64_t kMessageSlackBytes = 1 << 20;       // the id and framing around a file

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the TLS ", what, " ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<::grpc::ServerCredentials>> Credentials(
    const FrontEndOptions& options) {
  const bool cert = !options.tls_cert_file.empty(), key = !options.tls_key_file.empty();
  if (!cert && !key) return ::grpc::InsecureServerCredentials();
  if (cert != key) {
    return absl::InvalidArgumentError("TLS needs both a certificate file and a key file");
  }
  absl::StatusOr<std::string> chain = ReadFile(options.tls_cert_file, "certificate");
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> private_key = ReadFile(options.tls_key_file, "key");
  if (!private_key.ok()) return private_key.status();
  ::grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*std::move(private_key), *std::move(chain)});
  return ::grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(ServingState* state,
                                                              const FrontEndOptions& options,
                                                              ResponseObserver on_response) {
  if (state == nullptr || state->engine == nullptr) {
    return absl::InvalidArgumentError("the gRPC server needs a running engine");
  }
  absl::StatusOr<std::shared_ptr<::grpc::ServerCredentials>> credentials = Credentials(options);
  if (!credentials.ok()) return credentials.status();

  // Both are process-wide switches that builders read when they are created.
  ::grpc::EnableDefaultHealthCheckService(true);
  ::grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<MambaServiceImpl>(state, options);
  const std::string address = absl::StrCat(options.host.find(':') != std::string::npos
                                               ? absl::StrCat("[", options.host, "]")
                                               : options.host,
                                           ":", options.port);
  ::grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second server on the same port would then start and
  // silently share the traffic. A port in use must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // A session file must fit in one ImportSession message (gRPC's default is 4 MiB). Sending is
  // not limited by default (ExportSession, large Generate answers).
  if (const engine::SessionStore* sessions = state->engine->sessions()) {
    builder.SetMaxReceiveMessageSize(static_cast<int>(
        std::clamp<int64_t>(sessions->max_file_bytes() + kMessageSlackBytes,
                            kDefaultMaxReceiveBytes, std::numeric_limits<int>::max())));
  }
  builder.AddListeningPort(address, *credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  std::vector<std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface>> observers;
  observers.push_back(MakeCallObserverFactory(std::move(on_response)));
  builder.experimental().SetInterceptorCreators(std::move(observers));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("gRPC: cannot listen on ", address));
  }
  server->SetServing(state->health.load() == Health::kServing);
  engine::NamedLogger("grpc")->info("grpc: listening on {}:{}{}{}", options.host, server->port_,
                                    options.tls_cert_file.empty() ? "" : " (TLS)",
                                    options.api_key.empty() ? "" : " (API key required)");
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcServer::SetServing(bool serving) {
  ::grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // every registered service, "" included
  health->SetServingStatus("", serving);
  health->SetServingStatus(kServiceName, serving);
  health->SetServingStatus(kLivenessService, true);
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  if (::grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->Shutdown();  // NOT_SERVING from now on, whatever SetServing says
  }
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
  engine::NamedLogger("grpc")->info("grpc: stopped");
}

}  // namespace mamba::server
