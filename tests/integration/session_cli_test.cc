// mamba-client's session support against the real mamba-server (the bundled demo model), over
// HTTP (OpenAI and TGI generation) and gRPC: `generate --session` reports the session's token
// count, and `session get|list|delete|fork|export|import` manage it; a file exported over one
// protocol imports over the other.
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_util.h"

namespace mamba::client {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::ProcessResult;
using testing::RunProcess;
using testing::ServerProcess;

class SessionCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    error_ = new std::string();
    dir_ = new testing::TempDir();
    server_ =
        ServerProcess::Start({"--dtype", "float32"}, std::chrono::seconds(120), error_).release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete dir_;
    dir_ = nullptr;
    delete error_;
    error_ = nullptr;
  }
  void SetUp() override {
    if (server_ == nullptr) GTEST_SKIP() << *error_;
  }

  static ProcessResult Client(const std::string& target, std::vector<std::string> args) {
    std::vector<std::string> argv = {::mamba::testing::BinaryPath("mamba-client").string(),
                                     "--target", target, "--timeout", "60"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, "", std::chrono::seconds(120));
  }

  static json Json(const ProcessResult& r) {
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    return j;
  }

  struct Turn {
    std::string text;     // what generate printed
    int64_t tokens = -1;  // the session's token count it reported on stderr
  };
  // `generate --session` on `target` (global options first, then the generate arguments).
  static Turn Generate(const std::string& target, const std::string& session,
                       const std::vector<std::string>& extra,
                       const std::vector<std::string>& global = {}) {
    std::vector<std::string> args = global;
    for (const char* a : {"generate", "--session", session.c_str(), "--max-tokens", "5",
                          "--temperature", "0", "--ignore-eos"}) {
      args.push_back(a);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    const ProcessResult r = Client(target, args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string tag = "[session " + session + ": ";
    const size_t at = r.err.find(tag);
    EXPECT_NE(at, std::string::npos) << r.err;
    if (at == std::string::npos) return {};
    return {r.out, std::stoll(r.err.substr(at + tag.size()))};
  }

  static ServerProcess* server_;
  static testing::TempDir* dir_;
  static std::string* error_;
};

ServerProcess* SessionCliTest::server_ = nullptr;
testing::TempDir* SessionCliTest::dir_ = nullptr;
std::string* SessionCliTest::error_ = nullptr;

TEST_F(SessionCliTest, GenerateOnASessionOverEveryApi) {
  const std::string http = server_->http(), grpc = server_->grpc();
  const int64_t first = Generate(http, "cli-1", {"And God said"}).tokens;
  EXPECT_GT(first, 5);
  // The turns add up, whichever API continues the session; an empty turn adds only its answer.
  const int64_t second = Generate(grpc, "cli-1", {" unto"}).tokens;
  EXPECT_GT(second, first + 5);
  const int64_t third = Generate(http, "cli-1", {" Moses"}, {"--http-api", "tgi"}).tokens;
  EXPECT_GT(third, second + 5);
  EXPECT_EQ(Generate(grpc, "cli-1", {}).tokens, third + 5);
  EXPECT_EQ(Generate(http, "cli-1", {}).tokens, third + 10);
  const ProcessResult get = Client(grpc, {"session", "get", "cli-1"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(Json(get)["tokens"], third + 10);
}

TEST_F(SessionCliTest, ManageSessionsOverBothProtocols) {
  for (const std::string& target : {server_->http(), server_->grpc()}) {
    SCOPED_TRACE(target);
    const std::string id = target.starts_with("http") ? "h" : "g";
    const int64_t tokens = Generate(target, id + "-src", {"In the beginning"}).tokens;

    ProcessResult r = Client(target, {"session", "get", id + "-src"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json info = Json(r);
    EXPECT_EQ(info["id"], id + "-src");
    EXPECT_EQ(info["object"], "session");
    EXPECT_EQ(info["tokens"], tokens);
    EXPECT_EQ(info["in_use"], false);

    r = Client(target, {"session", "fork", id + "-src", "--new-id", id + "-fork"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(Json(r)["id"], id + "-fork");
    EXPECT_EQ(Json(r)["tokens"], tokens);

    r = Client(target, {"session", "list"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::set<std::string> ids;
    const json list = Json(r);
    for (const json& s : list["data"]) ids.insert(s["id"].get<std::string>());
    EXPECT_TRUE(ids.count(id + "-src") && ids.count(id + "-fork")) << r.out;

    const std::string file = (dir_->path() / (id + ".safetensors")).string();
    r = Client(target, {"session", "export", id + "-src", file});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GT(std::filesystem::file_size(file), 0u);
    // Imported over the other protocol, then again (replaced).
    const std::string other = target == server_->http() ? server_->grpc() : server_->http();
    r = Client(other, {"session", "import", id + "-copy", file});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.err, HasSubstr("created"));
    EXPECT_EQ(Json(r)["tokens"], tokens);
    r = Client(target, {"session", "import", id + "-copy", file});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.err, HasSubstr("replaced"));
    // The copy continues as the original does.
    const Turn copied = Generate(target, id + "-copy", {" and"});
    const Turn original = Generate(target, id + "-src", {" and"});
    EXPECT_EQ(copied.text, original.text);
    EXPECT_EQ(copied.tokens, original.tokens);

    r = Client(target, {"session", "delete", id + "-fork"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("deleted " + id + "-fork"));
    r = Client(target, {"session", "get", id + "-fork"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr(target == server_->http() ? "HTTP 404" : "NOT_FOUND"));
    r = Client(target, {"session", "get", "bad/id"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr(target == server_->http() ? "HTTP 400" : "INVALID_ARGUMENT"));
    // A file that is not a session file.
    const std::string junk = (dir_->path() / "junk").string();
    std::ofstream(junk) << "not a session";
    r = Client(target, {"session", "import", id + "-junk", junk});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr(target == server_->http() ? "HTTP 400" : "INVALID_ARGUMENT"));
  }
}

TEST_F(SessionCliTest, UsageErrors) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"session"}, {"session", "get"}, {"session", "export", "x"}, {"session", "nope"}}) {
    const ProcessResult r = Client(server_->http(), args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
  }
}

}  // namespace
}  // namespace mamba::client
