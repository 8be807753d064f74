// GenerateRequest.prompt_logprobs: the prompt's log-probs in PromptEcho.logprobs (unary and as
// the stream's first message), equal to the engine's run alone; max_new_tokens 0 scores only;
// refusals.
#include <future>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/grpc/grpc_test_support.h"

namespace mamba::server::testing {
namespace {

class PromptSink : public engine::RequestSink {
 public:
  void OnPrompt(const engine::PromptEvent& e) override { prompt_ = e; }
  void OnToken(const engine::TokenEvent&) override {}
  void OnFinish(const engine::FinishEvent&) override { done_.set_value(); }
  engine::PromptEvent Wait() {
    EXPECT_EQ(done_.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
    return prompt_;
  }

 private:
  engine::PromptEvent prompt_;
  std::promise<void> done_;
};

class GrpcScoringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerSetup setup;
    setup.engine.max_step_tokens = 16;
    server_ = TestServer::Start(setup);
    ASSERT_TRUE(server_);
    stub_ = server_->Stub();
  }
  engine::PromptEvent Alone(const std::vector<engine::TokenId>& prompt, int k) {
    engine::Request r;
    r.prompt = prompt;
    r.prompt_logprobs = k;
    r.params.max_new_tokens = 0;
    auto sink = std::make_shared<PromptSink>();
    EXPECT_TRUE(server_->engine().Submit(r, sink).ok());
    return sink->Wait();
  }
  void ExpectEcho(const v1::PromptEcho& echo, const engine::PromptEvent& want, int k) {
    ASSERT_EQ(echo.logprobs_size(), echo.token_ids_size());
    ASSERT_EQ(want.tokens.size(), static_cast<size_t>(echo.token_ids_size()) - 1);
    EXPECT_EQ(echo.logprobs(0).id(), echo.token_ids(0));
    EXPECT_FALSE(echo.logprobs(0).has_logprob());
    for (int i = 1; i < echo.logprobs_size(); ++i) {
      const v1::Token& t = echo.logprobs(i);
      EXPECT_EQ(t.id(), echo.token_ids(i));
      ASSERT_TRUE(t.has_logprob()) << i;
      EXPECT_EQ(t.logprob(), want.tokens[static_cast<size_t>(i) - 1].logprob) << i;
      ASSERT_EQ(t.top_logprobs_size(), k);
      EXPECT_FALSE(t.token_bytes().empty());
    }
  }

  std::unique_ptr<TestServer> server_;
  std::unique_ptr<v1::MambaService::Stub> stub_;
};

TEST_F(GrpcScoringTest, PromptLogprobsInTheEcho) {
  v1::GenerateRequest request = GreedyRequest("For God so loved the world", 3);
  request.set_prompt_logprobs(2);  // implies echo
  v1::GenerateResponse unary;
  ::grpc::Status s = stub_->Generate(Context().get(), request, &unary);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(unary.has_prompt());
  const std::vector<engine::TokenId> ids(unary.prompt().token_ids().begin(),
                                         unary.prompt().token_ids().end());
  const engine::PromptEvent want = Alone(ids, 2);
  ExpectEcho(unary.prompt(), want, 2);
  EXPECT_EQ(unary.completions(0).token_ids_size(), 3);

  const StreamResult st = ReadStream(*stub_, request, Context().get());
  ASSERT_TRUE(st.status.ok()) << st.status.error_message();
  ASSERT_GE(st.messages.size(), 2u);
  ASSERT_TRUE(st.messages[0].has_prompt());
  ExpectEcho(st.messages[0].prompt(), want, 2);
  EXPECT_EQ(st.TokenIds(0), Ids(unary.completions(0)));

  // Scoring only.
  request.mutable_stopping()->set_max_new_tokens(0);
  v1::GenerateResponse scored;
  s = stub_->Generate(Context().get(), request, &scored);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ExpectEcho(scored.prompt(), want, 2);
  EXPECT_EQ(scored.completions(0).token_ids_size(), 0);
  EXPECT_EQ(scored.completions(0).end().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(scored.usage().completion_tokens(), 0);
}

TEST_F(GrpcScoringTest, Refusals) {
  v1::GenerateRequest request = GreedyRequest("Hello", 0);  // max_new_tokens 0 without scoring
  v1::GenerateResponse r;
  ::grpc::Status s = stub_->Generate(Context().get(), request, &r);
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("prompt log-probs"));
  for (int bad : {-1, 21}) {
    request = GreedyRequest("Hello", 2);
    request.set_prompt_logprobs(bad);
    s = stub_->Generate(Context().get(), request, &r);
    EXPECT_EQ(s.error_code(), ::grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), ::testing::HasSubstr("prompt_logprobs")) << bad;
  }
}

}  // namespace
}  // namespace mamba::server::testing
