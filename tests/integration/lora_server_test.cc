// LoRA adapters on the real mamba-server (the bundled demo model): --lora NAME=DIR serves the
// adapter from start-up (listed by /v1/models, selected by "model"), with the same output as a
// server that loads it at run time; MAMBA_LORA does the same; a bad --lora stops start-up with
// exit code 2 and a message naming the adapter and the reason; mamba-client's lora commands and
// generate --adapter, and mamba-loadgen --adapters, against it.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/lora/lora_writer.h"
#include "engine/tools/demo_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_util.h"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"

namespace mamba::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kDemoName[] = "kjv-mamba-4x192";

// A random adapter of the demo model under root/name.
std::string WriteDemoAdapter(const fs::path& root, const std::string& name, uint64_t seed,
                             bool dora = false) {
  auto demo = engine::Checkpoint::Open(engine::tools::DemoModelDir());
  EXPECT_TRUE(demo.ok()) << demo.status();
  if (!demo.ok()) return "";
  engine::RandomLoraOptions o;
  o.config = (*demo)->config();
  o.rank = 8;
  o.seed = seed;
  const fs::path dir = root / name;
  const absl::Status s = engine::WriteRandomLoraAdapter(o, dir);
  EXPECT_TRUE(s.ok()) << s;
  if (dora) {
    json config;
    std::ifstream(dir / "adapter_config.json") >> config;
    config["use_dora"] = true;
    std::ofstream(dir / "adapter_config.json") << config.dump(2);
  }
  return dir.string();
}

// Greedy text under `model`; empty with a test failure unless 200.
std::string Complete(const ServerProcess& server, const std::string& model) {
  const json body = {{"model", model},
                     {"prompt", "And God said"},
                     {"max_tokens", 12},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  std::optional<Response> r = HttpRequest(server.http_port(), "POST", "/v1/completions",
                                          body.dump(), {"Content-Type: application/json"});
  EXPECT_TRUE(r.has_value());
  if (!r) return "";
  EXPECT_EQ(r->status, 200) << r->body;
  if (r->status != 200) return "";
  return r->Json()["choices"][0]["text"];
}

TEST(LoraServer, LoraFlagServesTheAdapterFromStartUp) {
  TempDir dir;
  const std::string a = WriteDemoAdapter(dir.path(), "a", 1);
  auto with = ServerProcess::Start({"--lora", "bible-a=" + a, "--strict-model-name"});
  auto without = ServerProcess::Start({"--strict-model-name"});
  ASSERT_TRUE(with && without);
  EXPECT_THAT(with->Log(), HasSubstr("LoRA adapter 'bible-a' loaded"));

  std::optional<Response> models = HttpRequest(with->http_port(), "GET", "/v1/models");
  ASSERT_TRUE(models);
  const json data = models->Json()["data"];
  ASSERT_EQ(data.size(), 2u) << models->body;
  EXPECT_EQ(data[1]["id"], "bible-a");
  EXPECT_EQ(data[1]["root"], a);
  EXPECT_EQ(data[1]["parent"], kDemoName);

  const std::string base = Complete(*with, kDemoName);
  const std::string adapted = Complete(*with, "bible-a");
  EXPECT_NE(adapted, base);
  EXPECT_EQ(Complete(*without, kDemoName), base);
  // Loaded at run time on the other server: the same text.
  const json load = {{"lora_name", "bible-a"}, {"lora_path", a}};
  std::optional<Response> r = HttpRequest(without->http_port(), "POST", "/v1/load_lora_adapter",
                                          load.dump(), {"Content-Type: application/json"});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(Complete(*without, "bible-a"), adapted);
  EXPECT_GE(Metric(with->http_port(), "mamba_lora_adapters_loaded"), 1);
  EXPECT_EQ(with->Terminate(), 0);
}

TEST(LoraServer, LoraEnvironmentVariable) {
  TempDir dir;
  const std::string a = WriteDemoAdapter(dir.path(), "a", 1);
  const std::string b = WriteDemoAdapter(dir.path(), "b", 2);
  setenv("MAMBA_LORA", ("x=" + a + ",y=" + b).c_str(), 1);
  auto server = ServerProcess::Start({});
  unsetenv("MAMBA_LORA");
  ASSERT_TRUE(server);
  std::optional<Response> models = HttpRequest(server->http_port(), "GET", "/v1/models");
  ASSERT_TRUE(models);
  const json data = models->Json()["data"];
  ASSERT_EQ(data.size(), 3u) << models->body;
  EXPECT_EQ(data[1]["id"], "x");
  EXPECT_EQ(data[2]["id"], "y");
  // With adapters, a name that is neither the model's nor an adapter's is 404 (no
  // --strict-model-name needed): a misspelt adapter never silently runs the base model.
  const json body = {{"model", "z"}, {"prompt", "And God said"}, {"max_tokens", 2}};
  std::optional<Response> r = HttpRequest(server->http_port(), "POST", "/v1/completions",
                                          body.dump(), {"Content-Type: application/json"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404) << r->body;
  EXPECT_EQ(r->Json()["error"]["code"], "model_not_found") << r->body;
}

TEST(LoraServer, ClientAndLoadgen) {
  using client::testing::ProcessResult;
  using client::testing::RunProcess;
  TempDir dir;
  const std::string a = WriteDemoAdapter(dir.path(), "a", 1);
  auto server = ServerProcess::Start({"--lora", "a=" + a});
  ASSERT_TRUE(server);
  const std::string adapted = Complete(*server, "a");
  const std::string client = BinaryPath("mamba-client").string();
  for (const std::string& target : {server->grpc(), server->http()}) {
    SCOPED_TRACE(target);
    auto run = [&](std::vector<std::string> args) {
      args.insert(args.begin(), {client, "-t", target});
      return RunProcess(args);
    };
    ProcessResult r = run({"lora", "load", "b", a});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = run({"lora", "list"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json list = json::parse(r.out, nullptr, false);
    ASSERT_TRUE(list.is_object()) << r.out;
    ASSERT_EQ(list["data"].size(), 2u) << r.out;
    EXPECT_EQ(list["data"][1]["id"], "b");
    EXPECT_EQ(list["data"][1]["root"], a);
    for (const char* api : {"openai", "tgi"}) {
      r = run({"--http-api", api, "generate", "--adapter", "b", "-m", "12", "--temperature", "0",
               "--ignore-eos", "And God said"});
      EXPECT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(r.out, adapted + "\n") << api;
    }
    r = run({"lora", "unload", "b"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = run({"lora", "unload", "b"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("'b'"));
    r = run({"generate", "--adapter", "b", "-m", "2", "x"});
    EXPECT_EQ(r.exit_code, 1);
  }
  const fs::path report = dir.path() / "lg.json";
  ProcessResult lg =
      RunProcess({BinaryPath("mamba-loadgen").string(), "-t", server->http(), "--adapters",
                  "a,base", "-n", "6", "-c", "2", "--json", report.string()});
  ASSERT_EQ(lg.exit_code, 0) << lg.err;
  json j;
  std::ifstream(report) >> j;
  EXPECT_EQ(j["completed"], 6) << j.dump();
  EXPECT_EQ(j["adapters"], json({"a", "", "a", "", "a", ""})) << j.dump();
}

TEST(LoraServer, BadLoraStopsStartUp) {
  TempDir dir;
  const std::string a = WriteDemoAdapter(dir.path(), "a", 1);
  const std::string dora = WriteDemoAdapter(dir.path(), "dora", 3, /*dora=*/true);
  const fs::path log = dir.path() / "log";
  // {flags, what the message must say}.
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"--lora justaname", {"--lora", "NAME=DIR", "justaname"}},
      {"--lora =" + a, {"--lora", "NAME=DIR"}},
      {"--lora a=" + a + " --lora a=" + a, {"'a'", "twice"}},
      {std::string("--lora ") + kDemoName + "=" + a, {kDemoName, "served model"}},
      {"--lora a=" + a + " --lora b=" + a + " --max-loras 1", {"--max-loras"}},
      {"--max-loras 0", {"--max-loras"}},
      {"--max-lora-rank 0", {"--max-lora-rank"}},
      {"--lora gone=" + (dir.path() / "missing").string(), {"'gone'", "missing"}},
      {"--lora my-dora=" + dora, {"'my-dora'", "use_dora"}},
      {"--lora small=" + a + " --max-lora-rank 4", {"'small'", "rank"}},
      {"--lora bad/../name!=" + a, {"bad/../name!"}},
  };
  for (const auto& [flags, says] : cases) {
    SCOPED_TRACE(flags);
    // Bounded: a server that wrongly started would otherwise serve forever.
    const std::string cmd = "timeout 60 " + BinaryPath("mamba-server").string() +
                            " --http-port 0 --grpc-port 0 " + flags + " > " + log.string() +
                            " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(log);
    const std::string out((std::istreambuf_iterator<char>(in)), {});
    ASSERT_TRUE(WIFEXITED(rc)) << rc;
    EXPECT_EQ(WEXITSTATUS(rc), 2) << out;
    for (const std::string& s : says) EXPECT_THAT(out, HasSubstr(s));
  }
}

}  // namespace
}  // namespace mamba::testing
