// Unit tests of the wire <-> engine conversions: documented defaults, deadlines, status codes.
#include "server/grpc/convert.h"

#include "engine/cpu/cpu_backend.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"

namespace mamba::server {
namespace {

using namespace std::chrono_literals;

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine::RandomCheckpointOptions o;
    o.config = engine::testing::SmallConfig();
    auto ck = engine::Checkpoint::Open(engine::testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok()) << ck.status();
    engine::BackendOptions bo;
    bo.num_slots = 2;
    bo.num_threads = 1;
    auto backend = engine::cpu::CpuBackend::Create(*ck, bo);
    ASSERT_TRUE(backend.ok());
    engine::EngineOptions eo;
    eo.max_prompt_tokens = 8;
    auto e = engine::Engine::Create(std::move(*backend), nullptr, eo);
    ASSERT_TRUE(e.ok());
    engine_ = std::move(*e);
    state_.engine = engine_.get();
  }
  engine::testing::TempDir dir_;
  std::unique_ptr<engine::Engine> engine_;
  ServingState state_;
};

TEST_F(ConvertTest, DefaultsAreTheDocumentedOnes) {
  v1::GenerateRequest in;
  in.mutable_token_ids()->add_ids(3);
  auto p = PrepareRequest(in, state_, std::nullopt);
  ASSERT_TRUE(p.ok()) << p.status();
  const engine::Request& r = p->request;
  EXPECT_EQ(r.prompt, std::vector<engine::TokenId>{3});
  EXPECT_EQ(r.params.temperature, 1.0f);
  EXPECT_EQ(r.params.top_k, 0);
  EXPECT_EQ(r.params.top_p, 1.0f);
  EXPECT_EQ(r.params.min_p, 0.0f);
  EXPECT_EQ(r.params.repetition_penalty, 1.0f);
  EXPECT_FALSE(r.params.seed.has_value());
  EXPECT_EQ(r.params.max_new_tokens, 16);
  EXPECT_EQ(r.params.min_new_tokens, 0);
  EXPECT_FALSE(r.params.logprobs);
  EXPECT_FALSE(r.params.ignore_eos);
  EXPECT_TRUE(r.skip_special_tokens);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.deadline.has_value());
  EXPECT_FALSE(p->echo);
  EXPECT_FALSE(p->token_details);
}

TEST_F(ConvertTest, ExplicitValuesPassThrough) {
  v1::GenerateRequest in;
  in.mutable_token_ids()->add_ids(3);
  in.mutable_token_ids()->add_ids(4);
  auto* s = in.mutable_sampling();
  s->set_temperature(0.0f);
  s->set_top_k(5);
  s->set_top_p(0.5f);
  s->set_min_p(0.1f);
  s->set_repetition_penalty(1.2f);
  s->set_presence_penalty(0.5f);
  s->set_frequency_penalty(-0.5f);
  s->set_seed(99);
  auto* st = in.mutable_stopping();
  st->set_max_new_tokens(7);
  st->set_min_new_tokens(2);
  st->add_stop_token_ids(9);
  st->set_ignore_eos(true);
  in.set_top_logprobs(4);
  in.set_n(2);
  in.set_echo(true);
  in.set_skip_special_tokens(false);
  const auto deadline = engine::Clock::now() + 5s;
  auto p = PrepareRequest(in, state_, deadline);
  ASSERT_TRUE(p.ok()) << p.status();
  const engine::SamplingParams& q = p->request.params;
  EXPECT_EQ(q.temperature, 0.0f);
  EXPECT_EQ(q.top_k, 5);
  EXPECT_EQ(q.top_p, 0.5f);
  EXPECT_EQ(q.min_p, 0.1f);
  EXPECT_EQ(q.repetition_penalty, 1.2f);
  EXPECT_EQ(q.presence_penalty, 0.5f);
  EXPECT_EQ(q.frequency_penalty, -0.5f);
  EXPECT_EQ(q.seed, 99u);
  EXPECT_EQ(q.max_new_tokens, 7);
  EXPECT_EQ(q.min_new_tokens, 2);
  EXPECT_EQ(q.stop_token_ids, std::vector<engine::TokenId>{9});
  EXPECT_TRUE(q.ignore_eos);
  EXPECT_TRUE(q.logprobs);  // implied by top_logprobs
  EXPECT_EQ(q.top_logprobs, 4);
  EXPECT_EQ(p->request.n, 2);
  EXPECT_FALSE(p->request.skip_special_tokens);
  EXPECT_EQ(p->request.deadline, deadline);
  EXPECT_TRUE(p->echo);
  EXPECT_TRUE(p->token_details);
  EXPECT_EQ(p->prompt.token_ids_size(), 2);
  EXPECT_EQ(p->prompt.text(), "");  // no tokenizer
}

TEST_F(ConvertTest, PromptErrors) {
  v1::GenerateRequest none;
  EXPECT_EQ(PrepareRequest(none, state_, std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::GenerateRequest text;
  text.set_text("hi");
  EXPECT_EQ(PrepareRequest(text, state_, std::nullopt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::GenerateRequest long_prompt;
  for (int i = 0; i < 9; ++i) long_prompt.mutable_token_ids()->add_ids(1);
  auto s = PrepareRequest(long_prompt, state_, std::nullopt).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("limit is 8"), absl::string_view::npos) << s;
  v1::GenerateRequest n;
  n.mutable_token_ids()->add_ids(1);
  n.set_n(-3);
  EXPECT_EQ(PrepareRequest(n, state_, std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::GenerateRequest stop;
  stop.mutable_token_ids()->add_ids(1);
  stop.mutable_stopping()->add_stop("x");
  EXPECT_EQ(PrepareRequest(stop, state_, std::nullopt).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(EngineDeadlineTest, ClientDeadlineElseServerDefault) {
  const auto none = std::chrono::system_clock::time_point::max();
  EXPECT_FALSE(EngineDeadline(none, 0).has_value());
  const auto now = engine::Clock::now();
  auto d = EngineDeadline(none, 500);
  ASSERT_TRUE(d.has_value());
  EXPECT_NEAR(std::chrono::duration<double>(*d - now).count(), 0.5, 0.1);
  d = EngineDeadline(std::chrono::system_clock::now() + 2s, 0);
  ASSERT_TRUE(d.has_value());
  EXPECT_NEAR(std::chrono::duration<double>(*d - now).count(), 2.0, 0.1);
  // The server's timeout is only the default: a client's own deadline wins, longer or shorter.
  d = EngineDeadline(std::chrono::system_clock::now() + 2s, 500);
  EXPECT_NEAR(std::chrono::duration<double>(*d - now).count(), 2.0, 0.1);
  d = EngineDeadline(std::chrono::system_clock::now() + 200ms, 5000);
  EXPECT_NEAR(std::chrono::duration<double>(*d - now).count(), 0.2, 0.1);
}

TEST(StatusTest, CodesMapOneToOne) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const std::pair<absl::Status, ::grpc::StatusCode> cases[] = {
      {absl::InvalidArgumentError("a"), ::grpc::StatusCode::INVALID_ARGUMENT},
      {absl::ResourceExhaustedError("b"), ::grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::UnavailableError("c"), ::grpc::StatusCode::UNAVAILABLE},
      {absl::DeadlineExceededError("d"), ::grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::CancelledError("e"), ::grpc::StatusCode::CANCELLED},
      {absl::UnauthenticatedError("f"), ::grpc::StatusCode::UNAUTHENTICATED},
      {absl::FailedPreconditionError("g"), ::grpc::StatusCode::FAILED_PRECONDITION},
      {absl::InternalError("h"), ::grpc::StatusCode::INTERNAL},
  };
  for (const auto& [status, code] : cases) {
    const ::grpc::Status g = ToGrpcStatus(status);
    EXPECT_EQ(g.error_code(), code);
    EXPECT_EQ(g.error_message(), std::string(status.message()));
  }
}

TEST(FinishReasonTest, EveryReasonHasAWireValue) {
  EXPECT_EQ(ToProto(engine::Finish::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(ToProto(engine::Finish::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ToProto(engine::Finish::kCancelled), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(ToProto(engine::Finish::kDeadline), v1::FINISH_REASON_DEADLINE);
  EXPECT_EQ(ToProto(engine::Finish::kError), v1::FINISH_REASON_ERROR);
}

}  // namespace
}  // namespace mamba::server
