// The gRPC front end's behaviour on success paths: unary and streamed generation agree, prompts
// as text or ids, n > 1, log-probs, stop strings and ids, echo, tokenization, model info, health
// and reflection.
#include <algorithm>
#include <set>

#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "src/proto/grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/server/grpc/grpc_test_support.h"

namespace mamba::server::testing {
namespace {

using ::grpc::StatusCode;

class GrpcServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = TestServer::Start().release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->Stub();
  }
  void TearDown() override { EXPECT_TRUE(server_->WaitEngineIdle()); }

  v1::GenerateResponse Generate(const v1::GenerateRequest& request) {
    v1::GenerateResponse response;
    ::grpc::Status s = stub_->Generate(Context().get(), request, &response);
    EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
    return response;
  }
  StreamResult Stream(const v1::GenerateRequest& request) {
    StreamResult r = ReadStream(*stub_, request, Context().get());
    EXPECT_TRUE(r.status.ok()) << r.status.error_code() << ": " << r.status.error_message();
    return r;
  }

  static TestServer* server_;
  std::unique_ptr<v1::MambaService::Stub> stub_;
};
TestServer* GrpcServerTest::server_ = nullptr;

TEST_F(GrpcServerTest, StreamedGreedyTextAndIdsEqualUnary) {
  const v1::GenerateRequest request = GreedyRequest("The quick brown fox", 24);
  const v1::GenerateResponse unary = Generate(request);
  ASSERT_EQ(unary.completions_size(), 1);
  const v1::Completion& c = unary.completions(0);
  EXPECT_EQ(c.token_ids_size(), 24);
  EXPECT_EQ(c.end().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(c.end().usage().completion_tokens(), 24);
  EXPECT_GT(c.end().usage().prompt_tokens(), 0);
  EXPECT_EQ(unary.usage().total_tokens(),
            unary.usage().prompt_tokens() + unary.usage().completion_tokens());
  EXPECT_FALSE(unary.has_prompt());  // no echo asked
  EXPECT_EQ(c.logprobs_size(), 0);

  const StreamResult stream = Stream(request);
  EXPECT_EQ(stream.Text(0), c.text());
  EXPECT_EQ(stream.TokenIds(0), Ids(c));
  ASSERT_FALSE(stream.messages.empty());
  EXPECT_EQ(stream.Ends(0), 1);
  EXPECT_TRUE(stream.messages.back().has_end());  // the end comes last
  EXPECT_EQ(stream.messages.back().end().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(stream.messages.back().end().usage().completion_tokens(), 24);
  for (const auto& m : stream.messages) EXPECT_FALSE(m.token().has_logprob());
}

TEST_F(GrpcServerTest, PromptAsIdsEqualsPromptAsTextAndEchoes) {
  const std::string text = "Hello, world! Mamba is a state space model.";
  v1::TokenizeRequest tr;
  tr.set_text(text);
  v1::TokenizeResponse ids;
  ASSERT_TRUE(stub_->Tokenize(Context().get(), tr, &ids).ok());
  ASSERT_GT(ids.token_ids_size(), 3);

  v1::GenerateRequest by_text = GreedyRequest(text, 12);
  by_text.set_echo(true);
  v1::GenerateRequest by_ids = by_text;
  *by_ids.mutable_token_ids()->mutable_ids() = ids.token_ids();
  ASSERT_EQ(by_ids.prompt_case(), v1::GenerateRequest::kTokenIds);

  const v1::GenerateResponse a = Generate(by_text), b = Generate(by_ids);
  ASSERT_EQ(a.completions_size(), 1);
  ASSERT_EQ(b.completions_size(), 1);
  EXPECT_EQ(Ids(a.completions(0)), Ids(b.completions(0)));
  EXPECT_EQ(a.completions(0).text(), b.completions(0).text());
  for (const v1::GenerateResponse* r : {&a, &b}) {
    EXPECT_EQ(r->prompt().text(), text);
    EXPECT_THAT(r->prompt().token_ids(), ::testing::ElementsAreArray(ids.token_ids()));
    EXPECT_EQ(r->usage().prompt_tokens(), ids.token_ids_size());
  }

  // Streamed, the echo is the first message and carries no text of its own.
  const StreamResult s = Stream(by_ids);
  ASSERT_GE(s.messages.size(), 2u);
  ASSERT_TRUE(s.messages[0].has_prompt());
  EXPECT_EQ(s.messages[0].prompt().text(), text);
  for (size_t i = 1; i < s.messages.size(); ++i) EXPECT_FALSE(s.messages[i].has_prompt());
  EXPECT_EQ(s.Text(0), a.completions(0).text());
}

TEST_F(GrpcServerTest, SeveralCompletionsCarryTheirIndex) {
  v1::GenerateRequest r;
  r.set_text("Once upon a time");
  r.set_n(3);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_seed(1234);
  r.mutable_stopping()->set_max_new_tokens(8);
  r.mutable_stopping()->set_ignore_eos(true);
  const v1::GenerateResponse unary = Generate(r);
  ASSERT_EQ(unary.completions_size(), 3);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(unary.completions(i).index(), i);
    EXPECT_EQ(unary.completions(i).token_ids_size(), 8);
    distinct.insert(Ids(unary.completions(i)));
  }
  EXPECT_EQ(distinct.size(), 3u) << "seed + i should give different samples";
  EXPECT_EQ(unary.usage().completion_tokens(), 24);
  EXPECT_EQ(unary.usage().total_tokens(), unary.usage().prompt_tokens() + 24);

  // Seeded sampling does not depend on batching, so the stream gives the same tokens.
  const StreamResult s = Stream(r);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(s.Ends(i), 1) << i;
    EXPECT_EQ(s.TokenIds(i), Ids(unary.completions(i))) << i;
    EXPECT_EQ(s.Text(i), unary.completions(i).text()) << i;
  }
  for (const auto& m : s.messages) {
    EXPECT_GE(m.index(), 0);
    EXPECT_LT(m.index(), 3);
  }
}

TEST_F(GrpcServerTest, LogprobsAndTopAlternatives) {
  v1::GenerateRequest r = GreedyRequest("A B C D", 6);
  r.set_top_logprobs(3);  // implies logprobs
  const v1::GenerateResponse unary = Generate(r);
  ASSERT_EQ(unary.completions_size(), 1);
  const v1::Completion& c = unary.completions(0);
  ASSERT_EQ(c.logprobs_size(), c.token_ids_size());
  for (int i = 0; i < c.logprobs_size(); ++i) {
    const v1::Token& t = c.logprobs(i);
    EXPECT_EQ(t.id(), c.token_ids(i));
    ASSERT_TRUE(t.has_logprob());
    EXPECT_LE(t.logprob(), 0.0f);
    ASSERT_EQ(t.top_logprobs_size(), 3);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t.top_logprobs(0).token_id(), t.id());
    EXPECT_FLOAT_EQ(t.top_logprobs(0).logprob(), t.logprob());
    EXPECT_GE(t.top_logprobs(0).logprob(), t.top_logprobs(1).logprob());
    EXPECT_GE(t.top_logprobs(1).logprob(), t.top_logprobs(2).logprob());
  }
  const StreamResult s = Stream(r);
  int tokens = 0;
  for (const auto& m : s.messages) {
    if (!m.has_token()) continue;
    const v1::Token& want = c.logprobs(tokens++);
    EXPECT_EQ(m.token().id(), want.id());
    EXPECT_FLOAT_EQ(m.token().logprob(), want.logprob());
    EXPECT_EQ(m.token().top_logprobs_size(), 3);
    EXPECT_EQ(m.token().token_bytes(), want.token_bytes());
  }
  EXPECT_EQ(tokens, c.token_ids_size());

  // logprobs alone: the chosen token's log-prob and no alternatives.
  r.set_top_logprobs(0);
  r.set_logprobs(true);
  const v1::GenerateResponse plain = Generate(r);
  ASSERT_EQ(plain.completions(0).logprobs_size(), 6);
  EXPECT_TRUE(plain.completions(0).logprobs(0).has_logprob());
  EXPECT_EQ(plain.completions(0).logprobs(0).top_logprobs_size(), 0);
}

TEST_F(GrpcServerTest, StopStringEndsTheTextBeforeIt) {
  const v1::GenerateResponse full = Generate(GreedyRequest("In the beginning", 40));
  const std::string text = full.completions(0).text();
  // A stop string from the middle of the text, cut at character boundaries.
  size_t from = text.size() / 3, len = std::min<size_t>(4, text.size() - from);
  while (from > 0 && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) --from;
  std::string stop = text.substr(from, len);
  while (!stop.empty() && engine::utf8::FindInvalid(stop) != engine::utf8::kAllValid)
    stop.pop_back();
  ASSERT_FALSE(stop.empty()) << "text: " << text;
  const size_t first = text.find(stop);

  v1::GenerateRequest r = GreedyRequest("In the beginning", 40);
  r.mutable_stopping()->add_stop(stop);
  const v1::GenerateResponse cut = Generate(r);
  EXPECT_EQ(cut.completions(0).text(), text.substr(0, first)) << "stop '" << stop << "'";
  EXPECT_EQ(cut.completions(0).end().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(cut.completions(0).end().matched_stop(), stop);
  EXPECT_FALSE(cut.completions(0).end().has_stop_token_id());

  const StreamResult s = Stream(r);
  EXPECT_EQ(s.Text(0), text.substr(0, first));
  EXPECT_EQ(s.messages.back().end().matched_stop(), stop);
}

TEST_F(GrpcServerTest, StopTokenIdEndsAfterIt) {
  const v1::GenerateResponse full = Generate(GreedyRequest("Numbers: 1, 2, 3,", 16));
  const std::vector<int32_t> ids = Ids(full.completions(0));
  const int32_t stop_id = ids[5];
  const size_t first =
      static_cast<size_t>(std::find(ids.begin(), ids.end(), stop_id) - ids.begin());

  v1::GenerateRequest r = GreedyRequest("Numbers: 1, 2, 3,", 16);
  r.mutable_stopping()->add_stop_token_ids(stop_id);
  const v1::GenerateResponse cut = Generate(r);
  const v1::Completion& c = cut.completions(0);
  EXPECT_EQ(Ids(c), std::vector<int32_t>(ids.begin(), ids.begin() + first + 1));
  EXPECT_EQ(c.end().finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_TRUE(c.end().has_stop_token_id());
  EXPECT_EQ(c.end().stop_token_id(), stop_id);
}

TEST_F(GrpcServerTest, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello, world! Ünïcödé text with emoji 🙂 and <|endoftext|> too.";
  v1::TokenizeRequest tr;
  tr.set_text(text);
  tr.set_return_tokens(true);
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(Context().get(), tr, &tokens).ok());
  ASSERT_GT(tokens.token_ids_size(), 5);
  ASSERT_EQ(tokens.tokens_size(), tokens.token_ids_size());
  EXPECT_EQ(tokens.tokens(0), "Hello");
  EXPECT_THAT(tokens.token_ids(), ::testing::Contains(0));  // <|endoftext|> is id 0

  v1::DetokenizeRequest dr;
  *dr.mutable_token_ids() = tokens.token_ids();
  v1::DetokenizeResponse back;
  ASSERT_TRUE(stub_->Detokenize(Context().get(), dr, &back).ok());
  EXPECT_EQ(back.text(), text);

  dr.set_skip_special_tokens(true);
  ASSERT_TRUE(stub_->Detokenize(Context().get(), dr, &back).ok());
  EXPECT_EQ(back.text().find("<|endoftext|>"), std::string::npos);
}

TEST_F(GrpcServerTest, ModelInfoDescribesModelAndLimits) {
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(Context().get(), {}, &info).ok());
  EXPECT_EQ(info.model_name(), "tiny-random");
  EXPECT_EQ(info.config().vocab_size(), 50280);
  EXPECT_EQ(info.config().hidden_size(), 32);
  EXPECT_EQ(info.config().num_hidden_layers(), 1);
  EXPECT_EQ(info.config().intermediate_size(), 64);
  EXPECT_EQ(info.config().model_type(), "mamba");
  EXPECT_EQ(info.config().mixer_rms_eps(), 0.0);  // FalconMamba only
  EXPECT_EQ(info.config().state_size(), 16);
  EXPECT_EQ(info.config().conv_kernel(), 4);
  EXPECT_EQ(info.dtype(), "float32");
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_FALSE(info.backend().empty());
  EXPECT_EQ(info.slots_total(), 4);
  EXPECT_EQ(info.slots_used(), 0);
  EXPECT_EQ(info.max_prompt_tokens(), engine::EngineOptions().max_prompt_tokens);
  EXPECT_EQ(info.max_new_tokens_limit(), engine::EngineOptions().max_new_tokens_limit);
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_GE(info.tokenizer_vocab_size(), 50277);
  EXPECT_GT(info.num_parameters(), 50280 * 32);
  EXPECT_GT(info.state_bytes_per_sequence(), 0);
  EXPECT_FALSE(info.draining());
}

TEST_F(GrpcServerTest, HealthFollowsSetServing) {
  auto health = ::grpc::health::v1::Health::NewStub(server_->Channel());
  auto check = [&](const std::string& service) {
    ::grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    ::grpc::health::v1::HealthCheckResponse resp;
    ::grpc::Status s = health->Check(Context().get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.status();
  };
  using ::grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(check(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("mamba.v1.MambaService"), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("liveness"), HealthCheckResponse::SERVING);
  server_->server().SetServing(false);
  EXPECT_EQ(check(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(check("mamba.v1.MambaService"), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(check("liveness"), HealthCheckResponse::SERVING);  // draining is alive
  server_->server().SetServing(true);
  EXPECT_EQ(check(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(check("mamba.v1.MambaService"), HealthCheckResponse::SERVING);

  ::grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  ::grpc::health::v1::HealthCheckResponse resp;
  EXPECT_EQ(health->Check(Context().get(), unknown, &resp).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(GrpcServerTest, ReflectionListsTheService) {
  auto reflection = ::grpc::reflection::v1alpha::ServerReflection::NewStub(server_->Channel());
  auto context = Context();
  auto stream = reflection->ServerReflectionInfo(context.get());
  ::grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  ::grpc::reflection::v1alpha::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::vector<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  EXPECT_THAT(names, ::testing::Contains("mamba.v1.MambaService"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
  // The typed schema is served too (what grpcurl needs), raw handlers notwithstanding.
  req.set_file_containing_symbol("mamba.v1.MambaService");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_GE(resp.file_descriptor_response().file_descriptor_proto_size(), 1);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(resp.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.name(), "mamba/v1/mamba.proto");
  ASSERT_EQ(file.service_size(), 1);
  EXPECT_EQ(file.service(0).method(0).input_type(), ".mamba.v1.GenerateRequest");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace mamba::server::testing
