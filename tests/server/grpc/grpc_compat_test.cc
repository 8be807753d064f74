// The gRPC side of what existing clients need: logit_bias and best_of on GenerateRequest, token
// ids the tokenizer cannot spell (the model's padding rows) as valid input, and ModelInfo's
// served names and generation defaults.
#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/grpc/grpc_test_support.h"

namespace mamba::server::testing {
namespace {

using ::grpc::StatusCode;

::grpc::Status Call(v1::MambaService::Stub& stub, const v1::GenerateRequest& request,
                    v1::GenerateResponse* response) {
  return stub.Generate(Context().get(), request, response);
}

TEST(GrpcCompatTest, LogitBias) {
  auto server = TestServer::Start();
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  v1::GenerateRequest req = GreedyRequest("Bias me", 4);
  req.set_logprobs(true);
  v1::GenerateResponse base;
  ASSERT_TRUE(Call(*stub, req, &base).ok());
  const int forced = 1234;
  (*req.mutable_sampling()->mutable_logit_bias())[forced] = 100;
  v1::GenerateResponse r;
  ::grpc::Status s = Call(*stub, req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(r.completions(0).token_ids_size(), 4);
  for (int id : r.completions(0).token_ids()) EXPECT_EQ(id, forced);
  EXPECT_LT(r.completions(0).logprobs(0).logprob(), -0.01f);  // the raw log-prob

  auto refused = [&](const v1::GenerateRequest& bad) {
    v1::GenerateResponse ignored;
    ::grpc::Status st = Call(*stub, bad, &ignored);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("logit_bias"), std::string::npos) << st.error_message();
  };
  for (auto [id, bias] : std::vector<std::pair<int, float>>{{50280, 1}, {-1, 1}, {5, 100.5f}}) {
    v1::GenerateRequest bad = GreedyRequest("x", 2);
    (*bad.mutable_sampling()->mutable_logit_bias())[id] = bias;
    refused(bad);
  }
  v1::GenerateRequest many = GreedyRequest("x", 2);
  for (int i = 0; i < 301; ++i) (*many.mutable_sampling()->mutable_logit_bias())[i] = 1;
  refused(many);
  many.mutable_sampling()->mutable_logit_bias()->erase(300);
  v1::GenerateResponse ok;
  EXPECT_TRUE(Call(*stub, many, &ok).ok());
}

TEST(GrpcCompatTest, BestOfReturnsTheMostLikely) {
  ServerSetup setup;
  setup.num_slots = 6;
  auto server = TestServer::Start(setup);
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  v1::GenerateRequest req = GreedyRequest("Best of", 6);
  req.mutable_sampling()->set_temperature(1.5f);
  req.mutable_sampling()->set_seed(11);
  req.set_logprobs(true);
  req.set_n(5);
  v1::GenerateResponse all;
  ASSERT_TRUE(Call(*stub, req, &all).ok());
  std::vector<std::pair<double, std::string>> ranked;
  for (const v1::Completion& c : all.completions()) {
    double sum = 0;
    for (const v1::Token& t : c.logprobs()) sum += t.logprob();
    ranked.emplace_back(sum, c.text());
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  req.set_n(2);
  req.set_best_of(5);
  req.set_logprobs(false);
  v1::GenerateResponse two;
  ::grpc::Status s = Call(*stub, req, &two);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(two.completions_size(), 2);
  EXPECT_EQ(two.completions(0).index(), 0);
  EXPECT_EQ(two.completions(1).index(), 1);
  EXPECT_EQ(two.completions(0).text(), ranked[0].second);
  EXPECT_EQ(two.completions(1).text(), ranked[1].second);
  EXPECT_EQ(two.completions(0).logprobs_size(), 0);  // not asked for
  EXPECT_EQ(two.usage().completion_tokens(), 30);

  req.set_best_of(1);
  v1::GenerateResponse ignored;
  EXPECT_EQ(Call(*stub, req, &ignored).error_code(), StatusCode::INVALID_ARGUMENT);
  req.set_best_of(3);
  StreamResult st = ReadStream(*stub, req, Context().get());
  EXPECT_EQ(st.status.error_code(), StatusCode::INVALID_ARGUMENT) << st.status.error_message();
}

// The tiny model has 50280 embedding rows; the tokenizer spells 50277 ids.
TEST(GrpcCompatTest, TokenIdsBeyondTheTokenizerAreValidInput) {
  auto server = TestServer::Start();
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  v1::GenerateRequest req = GreedyRequest("", 3);
  std::vector<int> ids = NeoXTokenizer()->Encode("In the beginning").value();
  ids.insert(ids.end(), {50277, 50278, 50279});
  req.clear_text();
  for (int id : ids) req.mutable_token_ids()->add_ids(id);
  req.set_echo(true);
  v1::GenerateResponse r;
  ::grpc::Status s = Call(*stub, req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.prompt().text(), "In the beginning");
  EXPECT_EQ(r.prompt().token_ids_size(), static_cast<int>(ids.size()));

  v1::DetokenizeRequest d;
  d.add_token_ids(50277);
  d.add_token_ids(50279);
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub->Detokenize(Context().get(), d, &text).ok());
  EXPECT_EQ(text.text(), "");
  d.add_token_ids(50280);
  EXPECT_EQ(stub->Detokenize(Context().get(), d, &text).error_code(), StatusCode::INVALID_ARGUMENT);

  v1::GetModelInfoRequest mi;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(Context().get(), mi, &info).ok());
  EXPECT_EQ(info.config().vocab_size(), 50280);
  EXPECT_EQ(info.tokenizer_vocab_size(), 50277);
}

// The model's defaults fill unset fields: max_new_tokens, and top_k 1 (greedy whatever the
// temperature) until the request sets top_k itself.
TEST(GrpcCompatTest, ModelDefaultsFillUnsetFields) {
  auto server = TestServer::Start();
  ASSERT_TRUE(server);
  server->state().generation_defaults.max_new_tokens = 4;
  server->state().generation_defaults.top_k = 1;
  auto stub = server->Stub();
  v1::GenerateRequest greedy = GreedyRequest("Defaults", 4);
  v1::GenerateResponse want;
  ASSERT_TRUE(Call(*stub, greedy, &want).ok());
  v1::GenerateRequest req;
  req.set_text("Defaults");
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(1.5f);
  req.set_n(3);
  v1::GenerateResponse r;
  ASSERT_TRUE(Call(*stub, req, &r).ok());
  for (const v1::Completion& c : r.completions()) {
    EXPECT_EQ(c.token_ids_size(), 4);
    EXPECT_EQ(c.text(), want.completions(0).text());
  }
  req.mutable_sampling()->set_top_k(0);  // set: no limit, so the draws differ
  req.mutable_sampling()->set_seed(5);
  req.set_n(4);
  ASSERT_TRUE(Call(*stub, req, &r).ok());
  std::set<std::string> texts;
  for (const v1::Completion& c : r.completions()) texts.insert(c.text());
  EXPECT_GT(texts.size(), 1u);
}

// ModelInfo names what requests may call the model (its aliases) and the generation defaults the
// server applies, each set only when the model's generation_config.json gives it.
TEST(GrpcCompatTest, ModelInfoListsNamesAndGenerationDefaults) {
  auto server = TestServer::Start();
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(Context().get(), {}, &info).ok());
  ASSERT_EQ(info.served_model_names_size(), 1);
  EXPECT_EQ(info.served_model_names(0), info.model_name());
  EXPECT_TRUE(info.has_generation_defaults());
  EXPECT_EQ(info.generation_defaults().ByteSizeLong(), 0u);  // no generation_config.json

  server->state().served_model_names = {info.model_name(), "alias-a", "alias-b"};
  server->state().generation_defaults.min_p = 0.05f;
  server->state().generation_defaults.max_new_tokens = 4;
  ASSERT_TRUE(stub->GetModelInfo(Context().get(), {}, &info).ok());
  ASSERT_EQ(info.served_model_names_size(), 3);
  EXPECT_EQ(info.served_model_names(0), info.model_name());
  EXPECT_EQ(info.served_model_names(1), "alias-a");
  EXPECT_EQ(info.served_model_names(2), "alias-b");
  const v1::GenerationDefaults& d = info.generation_defaults();
  ASSERT_TRUE(d.has_min_p());
  EXPECT_EQ(d.min_p(), 0.05f);
  ASSERT_TRUE(d.has_max_new_tokens());
  EXPECT_EQ(d.max_new_tokens(), 4);
  EXPECT_FALSE(d.has_temperature());
  EXPECT_FALSE(d.has_top_k());
  EXPECT_FALSE(d.has_top_p());
  EXPECT_FALSE(d.has_repetition_penalty());
  // What ModelInfo reports is what a request that leaves the field unset gets.
  v1::GenerateRequest req;
  req.set_text("Defaults");
  req.mutable_stopping()->set_ignore_eos(true);
  v1::GenerateResponse r;
  ASSERT_TRUE(stub->Generate(Context().get(), req, &r).ok());
  EXPECT_EQ(r.completions(0).token_ids_size(), d.max_new_tokens());
}

}  // namespace
}  // namespace mamba::server::testing
