#include "client/grpc_api.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "client/errors.h"
#include "grpcpp/generic/generic_stub.h"

namespace mamba::client {
namespace {

std::string GrpcCodeName(::grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// grpc.health.v1 messages are tiny: encoded by hand so that no health.proto is compiled into
// this library (two copies of one .proto in a process abort at start-up).
std::string EncodeHealthRequest(const std::string& service) {
  std::string out;
  if (service.empty()) return out;
  out.push_back(0x0a);  // field 1, length-delimited
  size_t n = service.size();
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  return out + service;
}

int DecodeHealthStatus(const std::string& bytes) {
  // HealthCheckResponse { ServingStatus status = 1; }: look for field 1 as a varint.
  for (size_t i = 0; i + 1 < bytes.size();) {
    const uint8_t key = static_cast<uint8_t>(bytes[i++]);
    if ((key & 7) != 0) return -1;  // only varints expected
    uint64_t v = 0;
    int shift = 0;
    while (i < bytes.size()) {
      const uint8_t b = static_cast<uint8_t>(bytes[i++]);
      v |= uint64_t{b & 0x7fu} << shift;
      shift += 7;
      if ((b & 0x80) == 0) break;
    }
    if ((key >> 3) == 1) return static_cast<int>(v);
  }
  return 0;  // absent: UNKNOWN (the proto3 default)
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<::grpc::Channel>> MakeGrpcChannel(const Endpoint& endpoint,
                                                                 const GrpcOptions& options,
                                                                 int index) {
  ::grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  // Separate subchannel pools give separate connections to channels with different indexes.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("mamba.client.channel_index", index);
  std::shared_ptr<::grpc::ChannelCredentials> credentials;
  if (endpoint.tls || !options.tls_ca_file.empty()) {
    ::grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      absl::StatusOr<std::string> roots = ReadFile(options.tls_ca_file);
      if (!roots.ok()) return roots.status();
      ssl.pem_root_certs = *std::move(roots);
    }
    if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
    credentials = ::grpc::SslCredentials(ssl);
  } else {
    credentials = ::grpc::InsecureChannelCredentials();
  }
  return ::grpc::CreateCustomChannel(endpoint.Authority(), credentials, args);
}

absl::Status FromGrpcStatus(const ::grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const std::string name = GrpcCodeName(status.error_code());
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("gRPC ", name, ": ", status.error_message()));
}

v1::GenerateRequest ToGenerateRequest(const GenerateSpec& spec) {
  v1::GenerateRequest r;
  if (spec.prompt.use_ids) {
    r.mutable_token_ids()->mutable_ids()->Add(spec.prompt.ids.begin(), spec.prompt.ids.end());
  } else {
    r.set_text(spec.prompt.text);
  }
  const SamplingOptions& s = spec.sampling;
  v1::SamplingParameters* p = r.mutable_sampling();
  if (s.temperature) p->set_temperature(*s.temperature);
  if (s.top_k) p->set_top_k(*s.top_k);
  if (s.top_p) p->set_top_p(*s.top_p);
  if (s.min_p) p->set_min_p(*s.min_p);
  if (s.repetition_penalty) p->set_repetition_penalty(*s.repetition_penalty);
  if (s.presence_penalty) p->set_presence_penalty(*s.presence_penalty);
  if (s.frequency_penalty) p->set_frequency_penalty(*s.frequency_penalty);
  if (s.seed) p->set_seed(*s.seed);
  v1::StoppingCriteria* stop = r.mutable_stopping();
  if (s.max_tokens) stop->set_max_new_tokens(*s.max_tokens);
  if (s.min_tokens) stop->set_min_new_tokens(*s.min_tokens);
  for (const std::string& text : s.stop) stop->add_stop(text);
  stop->set_ignore_eos(s.ignore_eos);
  r.set_logprobs(s.logprobs || s.top_logprobs > 0);
  r.set_top_logprobs(s.top_logprobs);
  r.set_n(s.n);
  r.set_session_id(spec.session_id);
  r.set_adapter(spec.adapter);
  return r;
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_DEADLINE:
      return "deadline";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "unspecified";
  }
}

GrpcClient::GrpcClient(std::shared_ptr<::grpc::Channel> channel, std::string api_key)
    : channel_(std::move(channel)),
      stub_(v1::MambaService::NewStub(channel_)),
      api_key_(std::move(api_key)) {}

void GrpcClient::Prepare(::grpc::ClientContext* context, double timeout_s) const {
  if (timeout_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  }
  if (!api_key_.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", api_key_));
}

absl::StatusOr<v1::GenerateResponse> GrpcClient::Generate(const v1::GenerateRequest& request,
                                                          double timeout_s, CancelToken* cancel) {
  ::grpc::ClientContext context;
  Prepare(&context, timeout_s);
  ScopedCancelHandler handler(cancel, [&context] { context.TryCancel(); });
  if (!handler.installed())
    return WithKind(absl::CancelledError("cancelled before it was sent"), "cancelled");
  v1::GenerateResponse response;
  ::grpc::Status status = stub_->Generate(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::TokenizeResponse> GrpcClient::Tokenize(const std::string& text,
                                                          bool return_tokens, double timeout_s) {
  ::grpc::ClientContext context;
  Prepare(&context, timeout_s);
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_return_tokens(return_tokens);
  v1::TokenizeResponse response;
  ::grpc::Status status = stub_->Tokenize(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::DetokenizeResponse> GrpcClient::Detokenize(const std::vector<int32_t>& ids,
                                                              bool skip_special_tokens,
                                                              double timeout_s) {
  ::grpc::ClientContext context;
  Prepare(&context, timeout_s);
  v1::DetokenizeRequest request;
  request.mutable_token_ids()->Add(ids.begin(), ids.end());
  request.set_skip_special_tokens(skip_special_tokens);
  v1::DetokenizeResponse response;
  ::grpc::Status status = stub_->Detokenize(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::ModelInfo> GrpcClient::GetModelInfo(double timeout_s) {
  ::grpc::ClientContext context;
  Prepare(&context, timeout_s);
  v1::ModelInfo response;
  ::grpc::Status status = stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<std::string> GrpcClient::CheckHealth(const std::string& service, double timeout_s) {
  ::grpc::GenericStub generic(channel_);
  ::grpc::ClientContext context;
  Prepare(&context, timeout_s);
  const std::string bytes = EncodeHealthRequest(service);
  ::grpc::Slice slice(bytes);
  ::grpc::ByteBuffer request(&slice, 1);
  ::grpc::CompletionQueue queue;
  auto call = generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  ::grpc::ByteBuffer response;
  ::grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return FromGrpcStatus(status);
  std::vector<::grpc::Slice> slices;
  std::string body;
  if (response.Dump(&slices).ok()) {
    for (const ::grpc::Slice& s : slices)
      body.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  switch (DecodeHealthStatus(body)) {
    case 1:
      return std::string("SERVING");
    case 2:
      return std::string("NOT_SERVING");
    case 3:
      return std::string("SERVICE_UNKNOWN");
    case 0:
      return std::string("UNKNOWN");
    default:
      return absl::InternalError("cannot decode the health check response");
  }
}

absl::StatusOr<GenerateResult> GrpcGenerator::Stream(const GenerateSpec& spec,
                                                     const EventCallback& on_event,
                                                     CancelToken* cancel) {
  ::grpc::ClientContext context;
  client_.Prepare(&context, spec.timeout_s);
  ScopedCancelHandler handler(cancel, [&context] { context.TryCancel(); });
  if (!handler.installed())
    return WithKind(absl::CancelledError("cancelled before it was sent"), "cancelled");
  const v1::GenerateRequest request = ToGenerateRequest(spec);
  std::unique_ptr<::grpc::ClientReader<v1::GenerateStreamResponse>> reader =
      client_.stub().GenerateStream(&context, request);
  GenerateResult result;
  result.completions.resize(std::max(spec.sampling.n, 1));
  for (size_t i = 0; i < result.completions.size(); ++i)
    result.completions[i].index = static_cast<int>(i);
  Usage total;
  bool any_usage = false;
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
    const int index = message.index();
    if (index < 0 || index >= static_cast<int>(result.completions.size())) continue;
    CompletionResult& c = result.completions[index];
    StreamEvent event;
    event.index = index;
    event.text = message.text();
    if (message.has_token()) {
      const v1::Token& t = message.token();
      event.tokens = 1;
      event.token_ids.push_back(t.id());
      if (t.has_logprob()) {
        event.logprobs.push_back(t.logprob());
        event.token_texts.push_back(t.token_bytes());
      }
      if (t.top_logprobs_size() > 0) {
        std::vector<Alternative> alts;
        for (const v1::TopLogprob& a : t.top_logprobs())
          alts.push_back({a.token_id(), a.token_bytes(), a.logprob()});
        event.top_logprobs.push_back(std::move(alts));
      }
      c.token_ids.push_back(t.id());
      ++c.streamed_tokens;
    }
    c.text += message.text();
    if (message.has_end()) {
      const v1::CompletionEnd& end = message.end();
      c.finish_reason = FinishReasonName(end.finish_reason());
      if (end.has_usage()) {
        c.usage = Usage{end.usage().prompt_tokens(), end.usage().completion_tokens(),
                        end.usage().total_tokens()};
        if (!any_usage)
          total.prompt_tokens = end.usage().prompt_tokens();  // the prompt counts once
        total.completion_tokens += end.usage().completion_tokens();
        any_usage = true;
        if (!spec.session_id.empty()) {
          result.session = SessionReport{spec.session_id, end.usage().session_tokens()};
        }
      }
      if (end.has_timing()) {
        c.queue_s = end.timing().queue_seconds();
        c.server_ttft_s = end.timing().ttft_seconds();
      }
    }
    if (on_event && (event.tokens > 0 || !event.text.empty())) on_event(event);
  }
  ::grpc::Status status = reader->Finish();
  if (cancel != nullptr && cancel->cancelled() && !status.ok()) {
    return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
  }
  if (!status.ok()) return FromGrpcStatus(status);
  for (const CompletionResult& c : result.completions) {
    if (c.finish_reason != "stop" && c.finish_reason != "length") {
      return WithKind(
          absl::AbortedError(absl::StrCat(
              "completion ", c.index,
              " ended: ", c.finish_reason.empty() ? "without an end message" : c.finish_reason)),
          absl::StrCat("finish_", c.finish_reason.empty() ? "missing" : c.finish_reason));
    }
  }
  if (any_usage) {
    total.total_tokens = total.prompt_tokens + total.completion_tokens;
    result.usage = total;
    result.server_counted_output = true;
  }
  return result;
}

}  // namespace mamba::client
