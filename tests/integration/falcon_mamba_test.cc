// FalconMamba through the real mamba-server: a falcon_mamba checkpoint in the HF layout (random
// weights, untied head, no tokenizer) loads, is reported as such (/v1/models, the start-up line),
// and its greedy completions over token ids (gRPC) equal the float64 reference model's while
// other requests share the steps.
#include <future>
#include <string>
#include <vector>

#include "client/endpoint.h"
#include "client/grpc_api.h"
#include "engine/checkpoint.h"
#include "engine/checkpoint_writer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/reference_model.h"
#include "tests/engine/test_support.h"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"

namespace mamba::testing {
namespace {

using nlohmann::json;

TEST(FalconMambaServer, GreedyCompletionsEqualTheFloat64Reference) {
  TempDir dir;
  engine::RandomCheckpointOptions o;
  o.config = engine::testing::SmallConfig();
  o.config.hidden_size = 48;
  o.config.intermediate_size = 96;
  o.config.vocab_size = 300;
  o.config.model_type = engine::ModelType::kFalconMamba;
  o.config.mixer_rms_eps = 1e-5;
  o.untied_head = true;
  o.perturb_constants = true;
  const std::string model = engine::testing::WriteModel(dir, "falcon", o).string();
  auto ck = engine::Checkpoint::Open(model);
  ASSERT_TRUE(ck.ok()) << ck.status();

  auto server = ServerProcess::Start({"--model", model, "--max-step-tokens", "8", "--slots", "4"});
  ASSERT_TRUE(server);
  std::optional<Response> models = HttpRequest(server->http_port(), "GET", "/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->Json()["data"][0]["model_type"], "falcon_mamba");

  // Four prompts at once over gRPC (their prefills chunked by the 8-token step budget and
  // interleaved with each other's decodes).
  auto endpoint = client::ParseEndpoint(server->grpc());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  auto channel = client::MakeGrpcChannel(*endpoint, client::GrpcOptions{});
  ASSERT_TRUE(channel.ok()) << channel.status();
  client::GrpcClient grpc(*channel, "");
  std::vector<std::vector<engine::TokenId>> prompts;
  std::vector<std::future<absl::StatusOr<v1::GenerateResponse>>> answers;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    prompts.push_back(engine::testing::RandomPrompt(5 + 6 * static_cast<int64_t>(seed), 300, seed));
    v1::GenerateRequest req;
    req.mutable_token_ids()->mutable_ids()->Add(prompts.back().begin(), prompts.back().end());
    req.mutable_sampling()->set_temperature(0);
    req.mutable_stopping()->set_max_new_tokens(10);
    req.mutable_stopping()->set_ignore_eos(true);
    answers.push_back(
        std::async(std::launch::async, [&grpc, req] { return grpc.Generate(req, 60); }));
  }
  engine::testing::ReferenceModel ref(**ck);
  int compared = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    absl::StatusOr<v1::GenerateResponse> r = answers[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->completions_size(), 1);
    const std::vector<engine::TokenId> got(r->completions(0).token_ids().begin(),
                                           r->completions(0).token_ids().end());
    ASSERT_EQ(got.size(), 10u);
    const std::vector<engine::TokenId> want = engine::testing::ReferenceGreedy(ref, prompts[i], 10);
    EXPECT_EQ(
        std::vector<engine::TokenId>(got.begin(), got.begin() + static_cast<long>(want.size())),
        want)
        << "prompt " << i;
    compared += static_cast<int>(want.size());
  }
  EXPECT_GT(compared, 25);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace mamba::testing
