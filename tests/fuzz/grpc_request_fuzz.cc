// libFuzzer target: gRPC request bodies as MambaService reads them. The first input byte picks
// the message (GenerateRequest for Generate/GenerateStream, TokenizeRequest, DetokenizeRequest)
// and in how many slices the rest reaches ParseRequest as a grpc::ByteBuffer. Then what the
// service does with a parsed message: PrepareRequest and Engine::Submit for generation (a real
// engine that validates, then refuses everything as draining: tests/fuzz/fuzz_serving.h),
// Encode for Tokenize, Decode for Detokenize. Properties: nothing crashes, leaks, hits UB or
// throws; every error has its documented code; a prepared request is within the bounds the
// service relies on before Submit (it sizes the reply by n) and its echo matches its prompt.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "grpcpp/impl/grpc_library.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "mamba/v1/mamba.pb.h"
#include "server/grpc/convert.h"
#include "tests/fuzz/fuzz_serving.h"

namespace {

namespace v1 = mamba::v1;
using absl::StatusCode;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

class NullSink : public mamba::engine::RequestSink {
 public:
  void OnToken(const mamba::engine::TokenEvent&) override {}
  void OnFinish(const mamba::engine::FinishEvent&) override {}
};

// The raw bytes as gRPC hands them over: in `parts` slices (none at all when empty).
::grpc::ByteBuffer ToBuffer(const uint8_t* data, size_t size, int parts) {
  if (size == 0) return ::grpc::ByteBuffer();
  std::vector<::grpc::Slice> slices;
  const size_t piece = (size + parts - 1) / parts;
  for (size_t off = 0; off < size; off += piece) {
    slices.emplace_back(data + off, std::min(piece, size - off));
  }
  return ::grpc::ByteBuffer(slices.data(), slices.size());
}

void CheckParseError(const absl::Status& s) {
  Check(s.code() == StatusCode::kInvalidArgument, "ParseRequest: not InvalidArgument");
  Check(!s.message().empty(), "ParseRequest: an error without a message");
}

void Generate(const ::grpc::ByteBuffer& buffer) {
  mamba::server::ServingState& state = mamba::fuzz::FuzzServingState();
  v1::GenerateRequest request;
  if (absl::Status s = mamba::server::ParseRequest(buffer, &request); !s.ok()) {
    return CheckParseError(s);
  }
  // As UnaryCall/StreamCall::Start: no client deadline, no server default.
  absl::StatusOr<mamba::server::PreparedRequest> prepared = mamba::server::PrepareRequest(
      request, state,
      mamba::server::EngineDeadline(std::chrono::system_clock::time_point::max(), 0));
  if (!prepared.ok()) {
    const StatusCode c = prepared.status().code();
    // NotFound: the adapter named is not loaded (the fuzz server loads none).
    Check(c == StatusCode::kInvalidArgument || c == StatusCode::kFailedPrecondition ||
              (c == StatusCode::kNotFound && !request.adapter().empty()),
          "PrepareRequest: an undocumented code");
    Check(static_cast<int>(mamba::server::ToGrpcStatus(prepared.status()).error_code()) ==
              static_cast<int>(c),
          "ToGrpcStatus changed the code");
    return;
  }
  const mamba::engine::Request& r = prepared->request;
  const mamba::engine::Engine& engine = *state.engine;
  Check(!r.prompt.empty(), "prepared an empty prompt");
  Check(static_cast<int64_t>(r.prompt.size()) <= engine.options().max_prompt_tokens,
        "prepared a prompt over max_prompt_tokens");
  // UnaryCall::Start allocates one Completion per n before Submit validates the request.
  Check(r.n >= 1 && r.n <= engine.backend().num_slots(), "prepared n outside [1, slots]");
  Check(!r.deadline.has_value(), "a deadline without one asked");
  if (prepared->echo) {
    const auto& echoed = prepared->prompt.token_ids();
    Check(std::equal(echoed.begin(), echoed.end(), r.prompt.begin(), r.prompt.end()),
          "the echo's ids differ from the prompt");
    if (request.has_text())
      Check(prepared->prompt.text() == request.text(), "the echo's text differs");
  }
  if (request.has_text()) {
    for (mamba::engine::TokenId id : r.prompt) {
      Check(id >= 0 && id < state.tokenizer->vocab_size(), "Encode made a bad id");
    }
  }
  absl::StatusOr<mamba::engine::RequestId> id =
      state.engine->Submit(std::move(prepared->request), std::make_shared<NullSink>());
  Check(!id.ok(), "the fuzz engine accepted a request");
  const StatusCode c = id.status().code();
  Check(c == StatusCode::kInvalidArgument || c == StatusCode::kFailedPrecondition ||
            c == StatusCode::kOutOfRange || c == StatusCode::kUnavailable,
        "Submit: an undocumented code");
}

void Tokenize(const ::grpc::ByteBuffer& buffer) {
  v1::TokenizeRequest request;
  if (absl::Status s = mamba::server::ParseRequest(buffer, &request); !s.ok()) {
    return CheckParseError(s);
  }
  const mamba::engine::Tokenizer& tok = *mamba::fuzz::FuzzServingState().tokenizer;
  absl::StatusOr<std::vector<mamba::engine::TokenId>> ids = tok.Encode(request.text());
  if (!ids.ok()) {
    Check(ids.status().code() == StatusCode::kInvalidArgument, "Encode: not InvalidArgument");
    return;
  }
  // The service's answer.
  v1::TokenizeResponse response;
  response.mutable_token_ids()->Add(ids->begin(), ids->end());
  for (mamba::engine::TokenId id : *ids) {
    Check(id >= 0 && id < tok.vocab_size(), "Encode made a bad id");
    if (request.return_tokens()) {
      std::optional<std::string_view> t = tok.IdToToken(id);
      Check(t.has_value(), "Encode made an id without a token");
      response.add_tokens(std::string(*t));
    }
  }
  ::grpc::ByteBuffer out;
  mamba::server::SerializeToBuffer(response, &out);
}

void Detokenize(const ::grpc::ByteBuffer& buffer) {
  v1::DetokenizeRequest request;
  if (absl::Status s = mamba::server::ParseRequest(buffer, &request); !s.ok()) {
    return CheckParseError(s);
  }
  const mamba::engine::Tokenizer& tok = *mamba::fuzz::FuzzServingState().tokenizer;
  const std::vector<mamba::engine::TokenId> ids(request.token_ids().begin(),
                                                request.token_ids().end());
  absl::StatusOr<std::string> text = tok.Decode(ids, request.skip_special_tokens());
  if (!text.ok()) {
    Check(text.status().code() == StatusCode::kInvalidArgument, "Decode: not InvalidArgument");
    return;
  }
  v1::DetokenizeResponse response;
  response.set_text(*std::move(text));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static ::grpc::internal::GrpcLibraryInitializer grpc_library;  // as the generated code does
  grpc_library.summon();
  // protobuf logs every invalid UTF-8 string it refuses; the error is what we check instead.
  google::protobuf::SetLogHandler(nullptr);
  (void)mamba::fuzz::FuzzServingState();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int parts = 1 + (data[0] >> 2) % 4;
  const ::grpc::ByteBuffer buffer = ToBuffer(data + 1, size - 1, parts);
  switch (data[0] & 3) {
    case 0:
    case 1:
      Generate(buffer);
      break;
    case 2:
      Tokenize(buffer);
      break;
    case 3:
      Detokenize(buffer);
      break;
  }
  return 0;
}
