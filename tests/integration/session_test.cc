// Sessions across mamba-server processes (the bundled demo model, greedy): a session exported
// from one server and imported into a second server on the same checkpoint continues exactly as
// it does on the first; with --session-dir it survives a restart; a server of another model
// refuses the file with a message naming both fingerprints; bad flag values exit 2.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/checkpoint_writer.h"
#include "engine/tools/demo_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/test_support.h"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"

namespace mamba::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

// One greedy OpenAI turn of 12 tokens on `session`; {text, session tokens}.
std::pair<std::string, int64_t> Turn(const ServerProcess& server, const std::string& session,
                                     const std::string& text) {
  const json body = {{"prompt", text},
                     {"max_tokens", 12},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"session_id", session}};
  std::optional<Response> r = HttpRequest(server.http_port(), "POST", "/v1/completions",
                                          body.dump(), {"Content-Type: application/json"});
  EXPECT_TRUE(r.has_value());
  if (!r) return {};
  EXPECT_EQ(r->status, 200) << r->body;
  const json j = r->Json();
  if (r->status != 200) return {};
  return {j["choices"][0]["text"].get<std::string>(), j["session"]["tokens"].get<int64_t>()};
}

std::string ExportState(const ServerProcess& server, const std::string& session) {
  std::optional<Response> r =
      HttpRequest(server.http_port(), "GET", "/v1/sessions/" + session + "/state");
  EXPECT_TRUE(r.has_value());
  if (!r) return "";
  EXPECT_EQ(r->status, 200) << r->body;
  return r->body;
}

std::optional<Response> ImportState(const ServerProcess& server, const std::string& session,
                                    const std::string& file) {
  return HttpRequest(server.http_port(), "PUT", "/v1/sessions/" + session + "/state", file,
                     {"Content-Type: application/octet-stream"});
}

TEST(SessionServers, ExportImportAcrossProcessesAndRestart) {
  TempDir dir;
  const std::string session_dir = (dir.path() / "sessions").string();
  // The state cache off on both: every continuation below is computed from the session's state.
  auto a = ServerProcess::Start(
      {"--dtype", "float32", "--state-cache-bytes", "0", "--session-dir", session_dir});
  auto b = ServerProcess::Start({"--dtype", "float32", "--state-cache-bytes", "0"});
  ASSERT_TRUE(a && b);
  EXPECT_THAT(a->Log(), HasSubstr("sessions: up to"));
  EXPECT_THAT(a->Log(), HasSubstr(session_dir));

  const auto [t1, n1] = Turn(*a, "chat", "And God said");
  ASSERT_GT(n1, 12);
  std::optional<Response> imported = ImportState(*b, "chat", ExportState(*a, "chat"));
  ASSERT_TRUE(imported);
  EXPECT_EQ(imported->status, 201) << imported->body;
  EXPECT_EQ(imported->Json()["tokens"], n1);

  // The next turn is the same on both servers.
  const auto [ta, na] = Turn(*a, "chat", " unto Moses,");
  const auto [tb, nb] = Turn(*b, "chat", " unto Moses,");
  EXPECT_EQ(ta, tb);
  EXPECT_EQ(na, nb);
  EXPECT_GT(na, n1);

  // Restarted on its directory, the first server still holds the session and continues it as
  // the second does.
  EXPECT_EQ(a->Terminate(), 0);
  a.reset();
  auto a2 = ServerProcess::Start(
      {"--dtype", "float32", "--state-cache-bytes", "0", "--session-dir", session_dir});
  ASSERT_TRUE(a2);
  std::optional<Response> info = HttpRequest(a2->http_port(), "GET", "/v1/sessions/chat");
  ASSERT_TRUE(info);
  ASSERT_EQ(info->status, 200) << info->body << a2->Log();
  EXPECT_EQ(info->Json()["tokens"], na);
  const auto [t3a, n3a] = Turn(*a2, "chat", " saying");
  const auto [t3b, n3b] = Turn(*b, "chat", " saying");
  EXPECT_EQ(t3a, t3b);
  EXPECT_EQ(n3a, n3b);
  const double writes = Metric(a2->http_port(), "mamba_session_disk_writes_total");
  EXPECT_GE(writes, 0);
}

TEST(SessionServers, AnotherModelRefusesTheFileNamingBothFingerprints) {
  TempDir dir;
  engine::RandomCheckpointOptions o;
  o.config = engine::testing::SmallConfig();
  o.seed = 99;
  const fs::path other = dir.path() / "other-model";
  ASSERT_TRUE(engine::WriteRandomCheckpoint(o, other).ok());
  auto demo = ServerProcess::Start({"--dtype", "float32"});
  auto random = ServerProcess::Start({"--model", other.string()});
  ASSERT_TRUE(demo && random);
  Turn(*demo, "s", "In the beginning");
  std::optional<Response> r = ImportState(*random, "s", ExportState(*demo, "s"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  const std::string message = r->Json()["error"]["message"];
  auto demo_ckpt = engine::Checkpoint::Open(engine::tools::DemoModelDir());
  auto other_ckpt = engine::Checkpoint::Open(other);
  ASSERT_TRUE(demo_ckpt.ok() && other_ckpt.ok());
  EXPECT_THAT(message, HasSubstr((*demo_ckpt)->fingerprint()));
  EXPECT_THAT(message, HasSubstr((*other_ckpt)->fingerprint()));
  // Nothing was created.
  EXPECT_EQ(HttpRequest(random->http_port(), "GET", "/v1/sessions/s")->status, 404);
}

TEST(SessionServers, SessionsOffAndBadFlags) {
  auto off = ServerProcess::Start({"--session-bytes", "0"});
  ASSERT_TRUE(off);
  EXPECT_THAT(off->Log(), HasSubstr("sessions: off"));
  std::optional<Response> r = HttpRequest(off->http_port(), "GET", "/v1/sessions");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;

  EXPECT_EQ(off->Terminate(), 0);

  // Bad values are usage errors (exit code 2) whose message names the flag.
  TempDir dir;
  const fs::path log = dir.path() / "log";
  for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--session-bytes -5", "--session-bytes"},
           {"--session-ttl 0", "--session-ttl"},
           {"--session-ttl -1", "--session-ttl"},
           {"--session-dir-bytes -1", "--session-dir-bytes"},
           {"--state-cache-policy fifo", "--state-cache-policy"},
           {"--session-bytes 0 --session-dir /tmp/x", "--session-dir"}}) {
    SCOPED_TRACE(args);
    const std::string cmd = BinaryPath("mamba-server").string() + " --http-port 0 --grpc-port 0 " +
                            args + " > " + log.string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(log);
    const std::string out((std::istreambuf_iterator<char>(in)), {});
    ASSERT_TRUE(WIFEXITED(rc)) << rc;
    EXPECT_EQ(WEXITSTATUS(rc), 2) << out;
    EXPECT_THAT(out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace mamba::testing
