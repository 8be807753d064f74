// Each model family through the real mamba-server: a FalconMamba and a Mamba-2 checkpoint in the
// HF layout (random weights, untied head, no tokenizer) load, are reported as such (/v1/models),
// and their greedy completions over token ids (gRPC) equal the float64 reference model's while
// other requests share the steps; sent again, the same prompts are served from the state cache
// (snapshots of the family's own state layout) with the same tokens.
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

class ModelFamilyServer : public ::testing::TestWithParam<engine::ModelType> {};

TEST_P(ModelFamilyServer, GreedyCompletionsEqualTheFloat64Reference) {
  TempDir dir;
  engine::RandomCheckpointOptions o;
  o.config = engine::testing::SmallConfig();
  o.config.hidden_size = 48;
  o.config.intermediate_size = 96;
  o.config.vocab_size = 300;
  o.config.model_type = GetParam();
  o.config.mixer_rms_eps = 1e-5;
  o.config.num_heads = 6;  // Mamba-2: 6 heads of 16 in 3 groups
  o.config.head_dim = 16;
  o.config.n_groups = 3;
  o.untied_head = true;
  o.perturb_constants = true;
  const std::string model = engine::testing::WriteModel(dir, "m", o).string();
  auto ck = engine::Checkpoint::Open(model);
  ASSERT_TRUE(ck.ok()) << ck.status();

  auto server = ServerProcess::Start({"--model", model, "--max-step-tokens", "8", "--slots", "4"});
  ASSERT_TRUE(server);
  std::optional<Response> models = HttpRequest(server->http_port(), "GET", "/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->Json()["data"][0]["model_type"],
            std::string(engine::ModelTypeName(GetParam())));

  // Four prompts at once over gRPC (their prefills chunked by the 8-token step budget and
  // interleaved with each other's decodes).
  auto endpoint = client::ParseEndpoint(server->grpc());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  auto channel = client::MakeGrpcChannel(*endpoint, client::GrpcOptions{});
  ASSERT_TRUE(channel.ok()) << channel.status();
  client::GrpcClient grpc(*channel, "");
  std::vector<std::vector<engine::TokenId>> prompts;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    prompts.push_back(engine::testing::RandomPrompt(5 + 6 * static_cast<int64_t>(seed), 300, seed));
  }
  engine::testing::ReferenceModel ref(**ck);
  std::vector<std::vector<engine::TokenId>> want;
  for (const auto& p : prompts) want.push_back(engine::testing::ReferenceGreedy(ref, p, 10));
  for (int round = 0; round < 2; ++round) {  // the second round restores cached prompt states
    std::vector<std::future<absl::StatusOr<v1::GenerateResponse>>> answers;
    for (const auto& p : prompts) {
      v1::GenerateRequest req;
      req.mutable_token_ids()->mutable_ids()->Add(p.begin(), p.end());
      req.mutable_sampling()->set_temperature(0);
      req.mutable_stopping()->set_max_new_tokens(10);
      req.mutable_stopping()->set_ignore_eos(true);
      answers.push_back(
          std::async(std::launch::async, [&grpc, req] { return grpc.Generate(req, 60); }));
    }
    int compared = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      absl::StatusOr<v1::GenerateResponse> r = answers[i].get();
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->completions_size(), 1);
      const std::vector<engine::TokenId> got(r->completions(0).token_ids().begin(),
                                             r->completions(0).token_ids().end());
      ASSERT_EQ(got.size(), 10u);
      EXPECT_EQ(std::vector<engine::TokenId>(got.begin(),
                                             got.begin() + static_cast<long>(want[i].size())),
                want[i])
          << "prompt " << i << ", round " << round;
      compared += static_cast<int>(want[i].size());
    }
    EXPECT_GT(compared, 25);
  }
  std::optional<Response> metrics = HttpRequest(server->http_port(), "GET", "/metrics");
  ASSERT_TRUE(metrics);
  double reused = 0;  // lookups that restored a snapshot (whole or partial prompt)
  for (const char* result : {"hit", "partial"}) {
    const std::string key =
        std::string("mamba_state_cache_lookups_total{result=\"") + result + "\"} ";
    if (const size_t at = metrics->body.find(key); at != std::string::npos) {
      reused += std::stod(metrics->body.substr(at + key.size()));
    }
  }
  EXPECT_GT(reused, 0) << metrics->body;
  EXPECT_EQ(server->Terminate(), 0);
}

INSTANTIATE_TEST_SUITE_P(Families, ModelFamilyServer,
                         ::testing::Values(engine::ModelType::kFalconMamba,
                                           engine::ModelType::kMamba2),
                         [](const ::testing::TestParamInfo<engine::ModelType>& i) {
                           return std::string(engine::ModelTypeName(i.param));
                         });

}  // namespace
}  // namespace mamba::testing
