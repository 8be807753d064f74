#include "client/generators.h"

#include "absl/strings/str_cat.h"
#include "client/openai_api.h"
#include "client/strings.h"
#include "client/tgi_api.h"

namespace mamba::client {

absl::StatusOr<Api> ParseApi(std::string_view name) {
  if (name == "grpc") return Api::kGrpc;
  if (name == "openai") return Api::kOpenAi;
  if (name == "tgi") return Api::kTgi;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown API '", AV(name), "' (grpc, openai or tgi)"));
}

const char* ApiName(Api api) {
  switch (api) {
    case Api::kGrpc:
      return "grpc";
    case Api::kOpenAi:
      return "openai";
    case Api::kTgi:
      return "tgi";
  }
  return "?";
}

Api DefaultApi(const Endpoint& endpoint) {
  return endpoint.protocol == Protocol::kGrpc ? Api::kGrpc : Api::kOpenAi;
}

absl::Status CheckApi(Api api, const Endpoint& endpoint) {
  const bool http = endpoint.protocol == Protocol::kHttp;
  if ((api == Api::kGrpc) == http) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", ApiName(api), " API needs a ",
                     api == Api::kGrpc ? "grpc:// or grpcs://" : "http:// or https://",
                     " target, not ", endpoint.ToString()));
  }
  return absl::OkStatus();
}

GeneratorFactory::GeneratorFactory(Endpoint endpoint, Api api, ConnectOptions options)
    : endpoint_(std::move(endpoint)), api_(api), options_(std::move(options)) {
  options_.grpc.api_key = options_.api_key;
  if (options_.grpc_channels < 1) options_.grpc_channels = 1;
}

absl::StatusOr<std::shared_ptr<::grpc::Channel>> GeneratorFactory::Channel(int index) {
  std::lock_guard<std::mutex> lock(mu_);
  if (channels_.empty()) channels_.resize(options_.grpc_channels);
  const size_t i = static_cast<size_t>(index) % channels_.size();
  if (!channels_[i]) {
    absl::StatusOr<std::shared_ptr<::grpc::Channel>> c =
        MakeGrpcChannel(endpoint_, options_.grpc, static_cast<int>(i));
    if (!c.ok()) return c.status();
    channels_[i] = *std::move(c);
  }
  return channels_[i];
}

absl::StatusOr<std::unique_ptr<Generator>> GeneratorFactory::Make(int worker) {
  switch (api_) {
    case Api::kGrpc: {
      absl::StatusOr<std::shared_ptr<::grpc::Channel>> c = Channel(worker);
      if (!c.ok()) return c.status();
      return std::unique_ptr<Generator>(new GrpcGenerator(*std::move(c), options_.api_key));
    }
    case Api::kOpenAi:
      return std::unique_ptr<Generator>(
          new OpenAiGenerator(endpoint_, options_.api_key, options_.http));
    case Api::kTgi:
      return std::unique_ptr<Generator>(
          new TgiGenerator(endpoint_, options_.api_key, options_.http));
  }
  return absl::InternalError("unknown API");
}

}  // namespace mamba::client
