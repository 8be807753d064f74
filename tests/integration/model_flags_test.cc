// mamba-server's flags for what clients send: --served-model-name and --strict-model-name (the
// names /v1/models lists, answers report and requests may give) and --generation-config (the
// model's sampling defaults: the bundled demo model's generation_config.json, none, or a file).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"

namespace mamba::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const char* kReference =
    " unto him, Go, and let us go.\nAnd he said unto him, Go, and say, I will not be a man of the";

std::optional<Response> Complete(int port, json body) {
  return HttpRequest(port, "POST", "/v1/completions", body.dump());
}

TEST(ModelFlags, ServedNamesAndStrictMode) {
  auto server = ServerProcess::Start(
      {"--served-model-name", "kjv,bible", "--served-model-name", "av1611", "--strict-model-name"});
  ASSERT_TRUE(server);
  const int port = server->http_port();
  auto models = HttpRequest(port, "GET", "/v1/models");
  ASSERT_TRUE(models);
  const json list = json::parse(models->body);
  ASSERT_EQ(list["data"].size(), 3u) << models->body;
  EXPECT_EQ(list["data"][0]["id"], "kjv");
  EXPECT_EQ(list["data"][1]["id"], "bible");
  EXPECT_EQ(list["data"][2]["id"], "av1611");
  auto ok = Complete(port, {{"model", "bible"}, {"prompt", "And God said"}, {"max_tokens", 2}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(json::parse(ok->body)["model"], "bible");
  auto no = Complete(port, {{"model", "gpt-4"}, {"prompt", "And God said"}, {"max_tokens", 2}});
  ASSERT_TRUE(no);
  EXPECT_EQ(no->status, 404) << no->body;
  auto info = HttpRequest(port, "GET", "/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(json::parse(info->body)["model_id"], "kjv");
  EXPECT_EQ(server->Terminate(), 0);
}

// --dtype int8: the demo model served with int8 weights (quantized at load), reported as such,
// and its greedy text starting as the float model's (docs/PERF.md, "int8 weights (issue 17)": the
// first 16 tokens of this prompt agree with fp32).
void ExpectServesInt8(const std::vector<std::string>& flags) {
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server);
  const int port = server->http_port();
  auto info = HttpRequest(port, "GET", "/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(json::parse(info->body)["model_dtype"], "torch.int8") << info->body;
  auto r = Complete(port, {{"prompt", "And God said"}, {"max_tokens", 8}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], " unto him, Go, and let us");
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(ModelFlags, Int8Weights) { ExpectServesInt8({"--dtype", "int8"}); }

// A quantized checkpoint (mamba-quantize of the demo model) is served in int8 under the default
// --dtype auto, reported as int8, with the greedy text of --dtype int8 on the float model.
TEST(ModelFlags, QuantizedCheckpoint) {
  TempDir dir;
  const fs::path q = dir.path() / "kjv-int8";
  const std::string cmd = BinaryPath("mamba-quantize").string() + " --model " +
                          (SourceDir() / "models/kjv-mamba-4x192").string() + " --out " +
                          q.string() + " > " + (dir.path() / "log").string() + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ExpectServesInt8({"--model", q.string()});
}

TEST(ModelFlags, AnyNameWithoutStrictMode) {
  auto server = ServerProcess::Start({});
  ASSERT_TRUE(server);
  auto r =
      Complete(server->http_port(),
               {{"model", "http://127.0.0.1:1"}, {"prompt", "And God said"}, {"max_tokens", 2}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["model"], "kjv-mamba-4x192");
  EXPECT_EQ(server->Terminate(), 0);
}

// --decode-path decode: decode tokens through Backend::DecodeAndDraw (what a GPU takes) give the
// demo model's greedy text exactly; a bad value stops the start-up naming the flag.
TEST(ModelFlags, DecodePath) {
  for (const char* path : {"decode", "prefill"}) {
    SCOPED_TRACE(path);
    auto server = ServerProcess::Start({"--dtype", "float32", "--decode-path", path});
    ASSERT_TRUE(server);
    EXPECT_NE(server->Log().find(std::string("(--decode-path ") + path + ")"), std::string::npos)
        << server->Log();
    auto r = Complete(server->http_port(), {{"prompt", "And God said"},
                                            {"max_tokens", 30},
                                            {"temperature", 0},
                                            {"ignore_eos", true},
                                            {"n", 2},
                                            {"logprobs", 2}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json body = json::parse(r->body);
    for (int i = 0; i < 2; ++i) EXPECT_EQ(body["choices"][i]["text"], kReference);
    EXPECT_EQ(server->Terminate(), 0);
  }
  TempDir dir;
  const std::string log = (dir.path() / "log").string();
  const std::string cmd = BinaryPath("mamba-server").string() +
                          " --http-port 0 --grpc-port 0 --decode-path fast > " + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc)) << rc;
  EXPECT_NE(WEXITSTATUS(rc), 0);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("--decode-path"), std::string::npos) << text;
}

TEST(ModelFlags, GenerationConfig) {
  TempDir dir;
  const fs::path file = dir.path() / "generation_config.json";
  std::ofstream(file) << R"({"temperature": 0, "max_new_tokens": 30, "do_sample": true})";
  auto server = ServerProcess::Start({"--dtype", "float32", "--generation-config", file.string()});
  ASSERT_TRUE(server);
  // Unset fields take the file's values: greedy, 30 tokens.
  auto r = Complete(server->http_port(), {{"prompt", "And God said"}, {"ignore_eos", true}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], kReference);
  EXPECT_NE(server->Log().find("temperature=0 max_new_tokens=30"), std::string::npos)
      << server->Log();
  EXPECT_EQ(server->Terminate(), 0);

  // The demo model's own file is read by default and ignored with none.
  auto demo = ServerProcess::Start({});
  ASSERT_TRUE(demo);
  EXPECT_NE(demo->Log().find("(--generation-config auto): min_p=0.05"), std::string::npos)
      << demo->Log();
  EXPECT_EQ(demo->Terminate(), 0);
  auto none = ServerProcess::Start({"--generation-config", "none"});
  ASSERT_TRUE(none);
  EXPECT_NE(none->Log().find("(--generation-config none): none"), std::string::npos) << none->Log();
  EXPECT_EQ(none->Terminate(), 0);

  // A bad file or a missing one stops the start-up.
  std::ofstream(file) << R"({"top_p": 0})";
  const std::string bin = BinaryPath("mamba-server").string();
  const std::string log = (dir.path() / "log").string();
  EXPECT_NE(std::system((bin + " --http-port 0 --grpc-port 0 --generation-config " + file.string() +
                         " > " + log + " 2>&1")
                            .c_str()),
            0);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("top_p"), std::string::npos) << text;
  EXPECT_NE(std::system((bin + " --http-port 0 --grpc-port 0 --generation-config " +
                         (dir.path() / "missing.json").string() + " > /dev/null 2>&1")
                            .c_str()),
            0);
}

}  // namespace
}  // namespace mamba::testing
