// `mamba-client score` against the real mamba-server on the bundled demo model (float32), over
// HTTP and gRPC, in chunks far shorter than the text (so the text flows through one session
// state): the total negative log-likelihood equals the float64 reference model's on the same
// tokens, for a passage of the model's training text (the verse of its README, whose mean NLL
// the README states) and for a passage it never saw.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tools/demo_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_util.h"
#include "tests/engine/reference_model.h"

namespace mamba::client {
namespace {

using nlohmann::json;
using testing::ProcessResult;
using testing::RunProcess;
using testing::ServerProcess;

constexpr char kSeen[] =
    "And it came to pass, when the king heard the words of the law, that he rent his clothes.";
constexpr char kUnseen[] =
    "The scheduler packs prompt chunks and decode tokens into one step; a state slot is copied "
    "when a request asks for several completions, and the kernels never see a request.";

// Sum over positions 1.. of -log_softmax(float64 reference logits)[next token].
double ReferenceNll(const engine::Checkpoint& ckpt, const std::vector<engine::TokenId>& ids) {
  engine::testing::ReferenceModel ref(ckpt);
  double nll = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const std::vector<double> logits = ref.Forward({&ids[i], 1});
    double m = -INFINITY, sum = 0;
    for (double x : logits) m = std::max(m, x);
    for (double x : logits) sum += std::exp(x - m);
    nll -= logits[static_cast<size_t>(ids[i + 1])] - m - std::log(sum);
  }
  return nll;
}

TEST(ScoreCliTest, MatchesTheFloat64ReferenceOverHttpAndGrpc) {
  std::string error;
  auto server = ServerProcess::Start({"--dtype", "float32", "--max-step-tokens", "16"},
                                     std::chrono::seconds(120), &error);
  if (!server) GTEST_SKIP() << error;
  auto ckpt = engine::Checkpoint::Open(engine::tools::DemoModelDir());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto tok = engine::Tokenizer::FromFile(engine::tools::DemoModelDir() + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  testing::TempDir dir;
  for (const char* text : {kSeen, kUnseen}) {
    const std::vector<engine::TokenId> ids = (*tok)->Encode(text).value();
    const double want = ReferenceNll(**ckpt, ids);
    const std::string file = (dir.path() / "text.txt").string();
    std::ofstream(file, std::ios::binary) << text;
    for (const std::string& target : {server->http(), server->grpc()}) {
      SCOPED_TRACE(target + " " + text);
      const ProcessResult r =
          RunProcess({::mamba::testing::BinaryPath("mamba-client").string(), "--target", target,
                      "--timeout", "60", "score", file, "--chunk", "5", "--json"},
                     "", std::chrono::seconds(120));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const json j = json::parse(r.out);
      EXPECT_EQ(j["tokens"], ids.size());
      EXPECT_EQ(j["scored_tokens"], ids.size() - 1);
      EXPECT_EQ(j["bytes"], std::string(text).size());
      const double got = j["nll"].get<double>();
      // fp32 against float64: about 1e-3 per log-prob (the model's README).
      EXPECT_NEAR(got, want, 1e-3 * static_cast<double>(ids.size()));
      EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(want / (ids.size() - 1)),
                  1e-2 * std::exp(want / (ids.size() - 1)));
      EXPECT_NEAR(j["bits_per_byte"].get<double>(),
                  want / std::log(2.0) / static_cast<double>(std::string(text).size()), 1e-3);
      if (text == kSeen) {
        EXPECT_NEAR(got / static_cast<double>(ids.size() - 1), 3.1110, 2e-3);  // the README's
      }
    }
    std::printf("%s: %zu tokens, mean NLL %.4f (reference), perplexity %.2f\n",
                text == kSeen ? "seen" : "unseen", ids.size(), want / (ids.size() - 1),
                std::exp(want / (ids.size() - 1)));
  }
  // Text shorter than two tokens has nothing to score.
  const std::string one = (dir.path() / "one.txt").string();
  std::ofstream(one) << "And";
  const ProcessResult r = RunProcess({::mamba::testing::BinaryPath("mamba-client").string(),
                                      "--target", server->http(), "score", one},
                                     "", std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("fewer than 2 tokens"), std::string::npos) << r.err;
}

// A text longer than any one prompt the server takes (--max-prompt-tokens 48), tokenized in
// pieces of at most 120 bytes split at line starts, flows through one session (its limit is
// --max-session-tokens): the same total as the float64 reference; a server whose session limit
// is too small refuses it with a clear message.
TEST(ScoreCliTest, ADocumentLongerThanAnyPrompt) {
  constexpr char kGenesis[] =
      "In the beginning God created the heaven and the earth.\n"
      "And the earth was without form, and void; and darkness was upon the face of the deep. "
      "And the Spirit of God moved upon the face of the waters.\n"
      "And God said, Let there be light: and there was light.\n"
      "And God saw the light, that it was good: and God divided the light from the darkness.\n"
      "And God called the light Day, and the darkness he called Night. And the evening and the "
      "morning were the first day.\n"
      "And God said, Let there be a firmament in the midst of the waters, and let it divide the "
      "waters from the waters.\n";
  std::string error;
  auto server = ServerProcess::Start({"--dtype", "float32", "--max-step-tokens", "16",
                                      "--max-prompt-tokens", "48", "--max-session-tokens", "1000"},
                                     std::chrono::seconds(120), &error);
  if (!server) GTEST_SKIP() << error;
  auto ckpt = engine::Checkpoint::Open(engine::tools::DemoModelDir());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto tok = engine::Tokenizer::FromFile(engine::tools::DemoModelDir() + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<engine::TokenId> ids = (*tok)->Encode(kGenesis).value();
  ASSERT_GT(ids.size(), 100u);
  const double want = ReferenceNll(**ckpt, ids);
  testing::TempDir dir;
  const std::string file = (dir.path() / "genesis.txt").string();
  std::ofstream(file, std::ios::binary) << kGenesis;
  for (const std::string& target : {server->http(), server->grpc()}) {
    SCOPED_TRACE(target);
    const ProcessResult r = RunProcess(
        {::mamba::testing::BinaryPath("mamba-client").string(), "--target", target, "--timeout",
         "60", "score", file, "--chunk", "40", "--piece-bytes", "120", "--json"},
        "", std::chrono::seconds(120));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["tokens"], ids.size());
    EXPECT_NEAR(j["nll"].get<double>(), want, 1e-3 * static_cast<double>(ids.size()));
  }
  // One prompt of the whole text is over the limit; a session limit below the text's length
  // ends the scoring with the server's reason.
  auto small = ServerProcess::Start({"--max-prompt-tokens", "48", "--max-session-tokens", "100"},
                                    std::chrono::seconds(120), &error);
  ASSERT_TRUE(small) << error;
  const ProcessResult r = RunProcess({::mamba::testing::BinaryPath("mamba-client").string(),
                                      "--target", small->http(), "score", file, "--chunk", "40"},
                                     "", std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("session limit of 100"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mamba::client
