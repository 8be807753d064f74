// mamba-client and mamba-loadgen against the real mamba-server on 127.0.0.1 (the bundled demo
// model): every CLI command over gRPC and HTTP (plain and TLS), every load-generator mode with
// small counts, token counts against the server's own counters, 429 accounting, and cancellation
// freeing the server's state slots. Skipped when the server binary is not built.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/endpoint.h"
#include "client/http_api.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_util.h"

namespace mamba::client {
namespace {

using nlohmann::json;
using testing::ProcessResult;
using testing::RunProcess;
using testing::ServerProcess;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `http` may be https:// (with options.tls.ca_file).
double Metric(const std::string& http, const std::string& name, const std::string& labels = "",
              const HttpClientOptions& options = {}) {
  HttpApi api(ParseEndpoint(http).value(), "", options);
  absl::StatusOr<std::string> text = api.Metrics(10);
  if (!text.ok()) return -1;
  return PrometheusValue(*text, name, labels).value_or(-1);
}

// Polls until the server's slots-used gauge is 0 (at most 15 s); returns the last value.
double WaitForFreeSlots(const std::string& http, const HttpClientOptions& options = {}) {
  double used = -1;
  for (int i = 0; i < 300; ++i) {
    used = Metric(http, "mamba_state_slots_used", "", options);
    if (used == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return used;
}

// A self-signed certificate for `san` ("DNS:localhost,IP:127.0.0.1") in dir/<name>.pem, its key
// in dir/<name>-key.pem. "" on success, else why not.
std::string MakeCertificate(const std::string& dir, const std::string& name,
                            const std::string& san) {
  if (access("/usr/bin/openssl", X_OK) != 0) return "no openssl to make a test certificate";
  ProcessResult r =
      RunProcess({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                  "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san, "-keyout",
                  dir + "/" + name + "-key.pem", "-out", dir + "/" + name + ".pem"},
                 "", std::chrono::seconds(60));
  return r.exit_code == 0 ? "" : "openssl req failed: " + r.err;
}

class ClientServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    error_ = new std::string();
    server_ = ServerProcess::Start({"--slots", "8"}, std::chrono::seconds(120), error_).release();
  }
  // Also run by ClientHttpsTest's suite, which sets everything up again: free it all here.
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

  static ProcessResult Client(const std::string& target, std::vector<std::string> args,
                              const std::string& input = "") {
    std::vector<std::string> argv = {MAMBA_CLIENT_BIN, "--target", target, "--timeout", "60"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, input, std::chrono::seconds(120));
  }

  // Runs mamba-loadgen with --json; returns the parsed result (null on failure, reported).
  static json Loadgen(const std::string& target, std::vector<std::string> args,
                      ProcessResult* out = nullptr) {
    const std::string path =
        dir_->path().string() + "/result-" + std::to_string(counter_++) + ".json";
    std::vector<std::string> argv = {
        MAMBA_LOADGEN_BIN,   "--target", target,         "--json", path, "--seed", "1",
        "--request-timeout", "60",       "--no-progress"};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessResult r = RunProcess(argv, "", std::chrono::seconds(180));
    if (out) *out = r;
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    json j = json::parse(ReadFile(path), nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    return j;
  }

  static int64_t Sum(const json& a) {
    int64_t s = 0;
    for (const json& v : a) s += v.get<int64_t>();
    return s;
  }

  static ServerProcess* server_;
  static std::string* error_;
  static testing::TempDir* dir_;
  static int counter_;
};

ServerProcess* ClientServerTest::server_ = nullptr;
std::string* ClientServerTest::error_ = nullptr;
testing::TempDir* ClientServerTest::dir_ = nullptr;
int ClientServerTest::counter_ = 0;

const char kPrompt[] = "In the beginning God created";

// ---- mamba-client ---------------------------------------------------------------------------

TEST_F(ClientServerTest, Health) {
  ProcessResult g = Client(server_->grpc(), {"health"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(g.out, "SERVING\n");
  ProcessResult h = Client(server_->http(), {"health"});
  EXPECT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(h.out.rfind("SERVING (HTTP 200", 0), 0u) << h.out;
}

TEST_F(ClientServerTest, Info) {
  ProcessResult text = Client(server_->grpc(), {"info"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("kjv-mamba-4x192"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("8 slots"), std::string::npos) << text.out;
  // The demo model's generation_config.json, which the server applies.
  EXPECT_NE(text.out.find("defaults       min_p=0.05\n"), std::string::npos) << text.out;
  ProcessResult j = Client(server_->grpc(), {"info", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  json info = json::parse(j.out);
  EXPECT_EQ(info["model_name"], "kjv-mamba-4x192");
  EXPECT_EQ(info["served_model_names"], json::array({"kjv-mamba-4x192"}));
  EXPECT_NEAR(info["generation_defaults"]["min_p"].get<double>(), 0.05, 1e-6);
  EXPECT_FALSE(info["generation_defaults"].contains("temperature"));
  EXPECT_EQ(info["slots_total"], 8);
  EXPECT_EQ(info["config"]["vocab_size"], "50280");  // int64 fields are strings in proto JSON
  ProcessResult h = Client(server_->http(), {"info"});
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(json::parse(h.out)["data"][0]["id"], "kjv-mamba-4x192");
}

TEST_F(ClientServerTest, TokenizeAndDetokenizeRoundTrip) {
  for (const std::string& target : {server_->grpc(), server_->http()}) {
    ProcessResult t = Client(target, {"tokenize", kPrompt});
    ASSERT_EQ(t.exit_code, 0) << target << t.err;
    std::vector<std::string> ids = absl::StrSplit(t.out.substr(0, t.out.find('\n')), ' ');
    EXPECT_GE(ids.size(), 4u) << t.out;
    std::vector<std::string> args = {"detokenize"};
    args.insert(args.end(), ids.begin(), ids.end());
    ProcessResult d = Client(target, args);
    ASSERT_EQ(d.exit_code, 0) << target << d.err;
    EXPECT_EQ(d.out, kPrompt);  // stdout is not a terminal: no newline added
    ProcessResult stdin_ids = Client(target, {"detokenize", "-"}, absl::StrJoin(ids, ","));
    EXPECT_EQ(stdin_ids.out, kPrompt);
    ProcessResult j = Client(target, {"tokenize", "--json", "-"}, kPrompt);
    ASSERT_EQ(j.exit_code, 0) << j.err;
    EXPECT_EQ(json::parse(j.out)["count"], ids.size());
  }
  ProcessResult spelled = Client(server_->grpc(), {"tokenize", "--show-tokens", "In the"});
  ASSERT_EQ(spelled.exit_code, 0) << spelled.err;
  EXPECT_NE(spelled.out.find("\"Ġthe\""), std::string::npos) << spelled.out;
}

TEST_F(ClientServerTest, GenerateStreamsTheSameGreedyTextOverEveryApi) {
  const std::vector<std::string> args = {"generate",      kPrompt, "--max-tokens", "8",
                                         "--temperature", "0",     "--ignore-eos", "--stats"};
  ProcessResult g = Client(server_->grpc(), args);
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_GT(g.out.size(), 1u);
  EXPECT_NE(g.err.find("8 generated tokens"), std::string::npos) << g.err;
  ProcessResult o = Client(server_->http(), args);
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_EQ(o.out, g.out);
  EXPECT_NE(o.err.find("8 generated tokens"), std::string::npos) << o.err;
  std::vector<std::string> tgi = {"--http-api", "tgi"};
  tgi.insert(tgi.end(), args.begin(), args.end());
  ProcessResult t = Client(server_->http(), tgi);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out, g.out);
}

TEST_F(ClientServerTest, GenerateJson) {
  const std::vector<std::string> args = {"generate",      kPrompt, "--max-tokens", "8",
                                         "--temperature", "0",     "--ignore-eos", "--json"};
  ProcessResult g = Client(server_->grpc(), args);
  ASSERT_EQ(g.exit_code, 0) << g.err;
  json gj = json::parse(g.out);
  EXPECT_EQ(gj["completions"][0]["token_ids"].size(), 8u);
  EXPECT_EQ(gj["usage"]["completion_tokens"], "8");
  ProcessResult o = Client(server_->http(), args);
  ASSERT_EQ(o.exit_code, 0) << o.err;
  json oj = json::parse(o.out);
  EXPECT_EQ(oj["usage"]["completion_tokens"], 8);
  EXPECT_EQ(oj["choices"][0]["text"], gj["completions"][0]["text"]);
  std::vector<std::string> tgi = {"--http-api", "tgi"};
  tgi.insert(tgi.end(), args.begin(), args.end());
  ProcessResult t = Client(server_->http(), tgi);
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(json::parse(t.out)["generated_text"], gj["completions"][0]["text"]);
}

TEST_F(ClientServerTest, GenerateWithEverySamplingOption) {
  const std::vector<std::string> args = {"generate",
                                         kPrompt,
                                         "--max-tokens",
                                         "6",
                                         "--min-tokens",
                                         "2",
                                         "--temperature",
                                         "0.8",
                                         "--top-k",
                                         "20",
                                         "--top-p",
                                         "0.9",
                                         "--min-p",
                                         "0.01",
                                         "--repetition-penalty",
                                         "1.1",
                                         "--presence-penalty",
                                         "0.5",
                                         "--frequency-penalty",
                                         "0.5",
                                         "--seed",
                                         "42",
                                         "--stop",
                                         "\n\n",
                                         "--stop",
                                         "Amen",
                                         "-n",
                                         "2",
                                         "--logprobs",
                                         "--top-logprobs",
                                         "2"};
  for (const std::string& target : {server_->grpc(), server_->http()}) {
    ProcessResult r = Client(target, args);
    ASSERT_EQ(r.exit_code, 0) << target << r.err;
    EXPECT_NE(r.out.find("--- completion 1"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--- logprobs of completion 0 ---"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("top:"), std::string::npos) << r.out;
    ProcessResult again = Client(target, args);
    EXPECT_EQ(again.out, r.out) << "the same seed gives the same completions";
  }
  ProcessResult ids =
      Client(server_->grpc(), {"generate", "--token-ids", "510,3302,273", "--max-tokens", "3"});
  EXPECT_EQ(ids.exit_code, 0) << ids.err;
  ProcessResult http_ids =
      Client(server_->http(), {"generate", "--token-ids", "510 3302 273", "--max-tokens", "3"});
  EXPECT_EQ(http_ids.exit_code, 0) << http_ids.err;
}

TEST_F(ClientServerTest, PromptFromFileAndStdin) {
  const std::string file = dir_->path().string() + "/prompt.txt";
  std::ofstream(file) << kPrompt;
  const std::vector<std::string> common = {"--max-tokens", "5", "--temperature", "0"};
  std::vector<std::string> a = {"generate", "--prompt-file", file};
  a.insert(a.end(), common.begin(), common.end());
  std::vector<std::string> b = {"generate", "-"};
  b.insert(b.end(), common.begin(), common.end());
  std::vector<std::string> c = {"generate", kPrompt};
  c.insert(c.end(), common.begin(), common.end());
  ProcessResult from_file = Client(server_->grpc(), a);
  ProcessResult from_stdin = Client(server_->grpc(), b, kPrompt);
  ProcessResult from_arg = Client(server_->grpc(), c);
  ASSERT_EQ(from_file.exit_code, 0) << from_file.err;
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin.err;
  EXPECT_EQ(from_file.out, from_arg.out);
  EXPECT_EQ(from_stdin.out, from_arg.out);
}

TEST_F(ClientServerTest, EveryErrorIsReportedWithANonZeroExit) {
  const std::string nowhere = std::to_string(testing::UnusedPort());
  ProcessResult refused_grpc = Client("grpc://127.0.0.1:" + nowhere, {"generate", "hi"});
  EXPECT_EQ(refused_grpc.exit_code, 1);
  EXPECT_NE(refused_grpc.err.find("UNAVAILABLE"), std::string::npos) << refused_grpc.err;
  ProcessResult refused_http = Client("http://127.0.0.1:" + nowhere, {"tokenize", "hi"});
  EXPECT_EQ(refused_http.exit_code, 1);
  EXPECT_NE(refused_http.err.find("Connection refused"), std::string::npos) << refused_http.err;
  // OpenAI's route answers an invalid request 400 (TGI's would be 422).
  ProcessResult http_400 = Client(server_->http(), {"generate", "hi", "--temperature", "-1"});
  EXPECT_EQ(http_400.exit_code, 1);
  EXPECT_NE(http_400.err.find("HTTP 400"), std::string::npos) << http_400.err;
  EXPECT_NE(http_400.err.find("temperature"), std::string::npos) << http_400.err;
  ProcessResult grpc_invalid = Client(server_->grpc(), {"generate", "hi", "--temperature", "-1"});
  EXPECT_EQ(grpc_invalid.exit_code, 1);
  EXPECT_NE(grpc_invalid.err.find("gRPC INVALID_ARGUMENT"), std::string::npos) << grpc_invalid.err;
  ProcessResult bad_id = Client(server_->grpc(), {"detokenize", "99999999"});
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_NE(bad_id.err.find("error:"), std::string::npos);
  ProcessResult tgi_error =
      Client(server_->http(), {"--http-api", "tgi", "generate", "hi", "--max-tokens", "0"});
  EXPECT_EQ(tgi_error.exit_code, 1);
  EXPECT_NE(tgi_error.err.find("HTTP 4"), std::string::npos) << tgi_error.err;
  ProcessResult no_prompt = Client(server_->grpc(), {"generate"});
  EXPECT_EQ(no_prompt.exit_code, 1);
  EXPECT_NE(no_prompt.err.find("no prompt"), std::string::npos);
  ProcessResult bad_target = Client("ftp://127.0.0.1:1", {"health"});
  EXPECT_EQ(bad_target.exit_code, 1);
  EXPECT_NE(bad_target.err.find("unknown scheme"), std::string::npos) << bad_target.err;
  ProcessResult nobody =
      Client("https://127.0.0.1:" + std::to_string(testing::UnusedPort()), {"health"});
  EXPECT_EQ(nobody.exit_code, 1);
  EXPECT_NE(nobody.err.find("cannot connect"), std::string::npos) << nobody.err;
  ProcessResult bad_flag = Client(server_->grpc(), {"generate", "hi", "--max-tokens", "many"});
  EXPECT_EQ(bad_flag.exit_code, 2);  // a command line it cannot parse
  EXPECT_NE(bad_flag.err.find("mamba-client: error:"), std::string::npos) << bad_flag.err;
  ProcessResult no_command = Client(server_->grpc(), {});
  EXPECT_EQ(no_command.exit_code, 2);
  EXPECT_NE(no_command.err.find("mamba-client: error:"), std::string::npos) << no_command.err;
}

// ---- mamba-loadgen --------------------------------------------------------------------------

TEST_F(ClientServerTest, LoadgenTokenCountsEqualTheServerCounters) {
  for (const std::string api : {"grpc", "openai", "tgi"}) {
    const std::string target = api == "grpc" ? server_->grpc() : server_->http();
    const double gen_before = Metric(server_->http(), "mamba_generated_tokens_total");
    const double prompt_before = Metric(server_->http(), "mamba_prompt_tokens_total");
    json j = Loadgen(
        target, {"--api", api, "-n", "6", "-c", "3", "--input-len", "32", "--output-len", "8"});
    ASSERT_TRUE(j.is_object()) << api;
    EXPECT_EQ(j["completed"], 6) << api;
    EXPECT_EQ(j["failed"], 0) << api << j["errors"];
    EXPECT_EQ(j["backend"], api);
    for (const json& n : j["output_lens"]) EXPECT_EQ(n, 8) << api;
    for (const json& t : j["ttfts"]) EXPECT_GT(t.get<double>(), 0) << api;
    const double gen_after = Metric(server_->http(), "mamba_generated_tokens_total");
    const double prompt_after = Metric(server_->http(), "mamba_prompt_tokens_total");
    EXPECT_EQ(Sum(j["output_lens"]), static_cast<int64_t>(gen_after - gen_before)) << api;
    EXPECT_EQ(j["total_output_tokens"], 48) << api;
    EXPECT_EQ(j["token_counts_from_server"], true) << api;
    if (api != "tgi") {  // TGI does not report prompt tokens; its text prompts re-tokenize
      EXPECT_EQ(Sum(j["input_lens"]), static_cast<int64_t>(prompt_after - prompt_before)) << api;
      for (const json& n : j["input_lens"]) EXPECT_EQ(n, 32) << api;
    }
    if (api == "grpc") {
      for (const json& gaps : j["itls"]) EXPECT_EQ(gaps.size(), 7u);  // one message per token
      EXPECT_TRUE(j.contains("mean_queue_ms"));
    }
    for (const char* key :
         {"request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms",
          "median_tpot_ms", "p99_itl_ms", "p90_e2el_ms", "std_ttft_ms", "min_itl_ms"}) {
      EXPECT_TRUE(j.contains(key)) << key;
    }
  }
}

TEST_F(ClientServerTest, LoadgenOpenLoop) {
  json j = Loadgen(server_->grpc(),
                   {"--request-rate", "20", "--burstiness", "0.5", "--max-concurrency", "2", "-n",
                    "6", "--input-len", "16", "--output-len", "8", "--percentiles", "50,99.9"});
  EXPECT_EQ(j["completed"], 6);
  EXPECT_EQ(j["request_rate"], 20.0);
  EXPECT_EQ(j["burstiness"], 0.5);
  EXPECT_EQ(j["max_concurrency"], 2);
  EXPECT_LE(j["max_concurrent_requests"].get<int>(), 2);
  EXPECT_TRUE(j.contains("p99.9_ttft_ms"));
  json unbounded = Loadgen(server_->http(), {"--request-rate", "50", "-n", "6", "--input-len", "16",
                                             "--output-len", "8"});
  EXPECT_EQ(unbounded["completed"], 6);
  EXPECT_TRUE(unbounded["max_concurrency"].is_null());
}

TEST_F(ClientServerTest, LoadgenSharedPrefixDatasetAndGoodput) {
  json prefix = Loadgen(server_->grpc(),
                        {"-n", "6", "-c", "2", "--shared-prefix-len", "64", "--input-len", "16",
                         "--output-len", "8", "--goodput", "ttft:100000", "tpot:100000"});
  EXPECT_EQ(prefix["completed"], 6);
  for (const json& n : prefix["input_lens"]) EXPECT_EQ(n, 80);
  EXPECT_DOUBLE_EQ(prefix["request_goodput"].get<double>(),
                   prefix["request_throughput"].get<double>());
  const std::string dataset = dir_->path().string() + "/prompts.jsonl";
  std::ofstream(dataset)
      << "{\"prompt\": \"In the beginning\", \"max_tokens\": 5}\n"
      << "{\"prompt\": \"And God said\"}\n{\"prompt\": [510, 3302, 273], \"max_tokens\": 4}\n";
  for (const std::string api : {"grpc", "openai", "tgi"}) {
    const std::string target = api == "grpc" ? server_->grpc() : server_->http();
    json j = Loadgen(target, {"--api", api, "--dataset", dataset, "-n", "6", "-c", "2",
                              "--output-len", "7", "--ignore-eos", "--save-texts"});
    EXPECT_EQ(j["completed"], 6) << api << j["errors"];
    EXPECT_EQ(j["output_lens"], json({5, 7, 4, 5, 7, 4})) << api;
    EXPECT_EQ(j["generated_texts"].size(), 6u);
  }
}

TEST_F(ClientServerTest, LoadgenConversationsGrowTheirHistory) {
  json g = Loadgen(server_->grpc(), {"--turns", "3", "-n", "6", "-c", "2", "--input-len", "16",
                                     "--output-len", "8"});
  EXPECT_EQ(g["completed"], 6);
  // Each turn resends the history: 16, 16 + 8 + 16, 40 + 8 + 16 prompt tokens.
  for (size_t i = 0; i < g["input_lens"].size(); ++i) {
    EXPECT_EQ(g["input_lens"][i], 16 + 24 * g["turns"][i].get<int>()) << i;
  }
  json o = Loadgen(server_->http(), {"--turns", "3", "-n", "6", "-c", "2", "--input-len", "16",
                                     "--output-len", "8"});
  EXPECT_EQ(o["completed"], 6);
  EXPECT_EQ(o["workload"]["text_prompts"], true);
  std::map<int64_t, std::vector<int64_t>> by_conversation;
  for (size_t i = 0; i < o["input_lens"].size(); ++i) {
    by_conversation[o["conversation_ids"][i]].push_back(o["input_lens"][i]);
  }
  for (const auto& [id, lens] : by_conversation) {
    ASSERT_EQ(lens.size(), 3u);
    EXPECT_LT(lens[0], lens[1]);
    EXPECT_LT(lens[1], lens[2]);
  }
}

TEST_F(ClientServerTest, LoadgenSessionsSendTheNewInputCheckTheCountsAndCleanUp) {
  for (const std::string api : {"openai", "tgi", "grpc"}) {
    const std::string target = api == "grpc" ? server_->grpc() : server_->http();
    std::vector<std::string> args = {
        "--api", api,           "--session", "--turns",      "3", "-n", "6", "-c",
        "2",     "--input-len", "20",        "--output-len", "8"};
    if (api == "grpc") {
      args.push_back("--metrics-url");
      args.push_back(server_->http());
    }
    ProcessResult out;
    json j = Loadgen(target, args, &out);
    ASSERT_TRUE(j.is_object()) << api;
    // No "session" errors: every turn's session count was the prompt the model read + the answer.
    EXPECT_EQ(j["completed"], 6) << api << j["errors"];
    EXPECT_EQ(j["failed"], 0) << api << j["errors"];
    EXPECT_EQ(j["workload"]["sessions"], true) << api;
    ASSERT_EQ(j["session_tokens"].size(), 6u) << api;
    std::map<int64_t, std::vector<int64_t>> held;
    for (size_t i = 0; i < j["session_tokens"].size(); ++i) {
      held[j["conversation_ids"][i]].push_back(j["session_tokens"][i]);
      if (api == "grpc") {  // token ids: 20 new + 8 generated a turn
        EXPECT_EQ(j["session_tokens"][i], 28 * (j["turns"][i].get<int>() + 1)) << i;
        EXPECT_EQ(j["input_lens"][i], 20 + 28 * j["turns"][i].get<int>()) << i;  // read
      }
    }
    for (const auto& [conversation, counts] : held) {
      ASSERT_EQ(counts.size(), 3u) << api;
      EXPECT_LT(counts[0], counts[1]) << api;
      EXPECT_LT(counts[1], counts[2]) << api;
    }
    ASSERT_EQ(j["ttft_by_turn"].size(), 3u) << api;
    EXPECT_EQ(j["ttft_by_turn"][2]["completed"], 2) << api;
    EXPECT_EQ(j["session_cleanup"]["deleted"], 2) << api << j["session_cleanup"];
    EXPECT_EQ(j["session_cleanup"]["failed"], 0) << api << j["session_cleanup"];
    const json& m = j["server_metrics"];
    EXPECT_TRUE(m["error"].is_null()) << api << m;
    EXPECT_EQ(m["sessions_live"], 2) << api << m;
    EXPECT_EQ(m["sessions_live_after_cleanup"], 0) << api << m;
    EXPECT_GT(m["state_cache_tokens_reused"].get<int64_t>(), 0) << api << m;
    EXPECT_TRUE(m["prompt_tokens_computed"].is_number()) << api << m;  // 0 when all was cached
    EXPECT_NE(out.out.find("Sessions deleted after the run:"), std::string::npos) << out.out;
  }
}

TEST_F(ClientServerTest, LoadgenSweepsWriteATableAndAChart) {
  ProcessResult out;
  json context =
      Loadgen(server_->grpc(),
              {"--sweep", "context=32,128", "-n", "4", "-c", "2", "--output-len", "8"}, &out);
  ASSERT_EQ(context["results"].size(), 2u);
  EXPECT_EQ(context["sweep"]["parameter"], "context");
  EXPECT_EQ(context["results"][1]["workload"]["input_len"], 128);
  for (const json& n : context["results"][1]["input_lens"]) EXPECT_EQ(n, 128);
  EXPECT_NE(out.out.find("TTFT p99"), std::string::npos) << out.out;
  if (access("/usr/bin/gnuplot", X_OK) == 0) {
    const std::string chart =
        dir_->path().string() + "/result-" + std::to_string(counter_ - 1) + ".svg";
    EXPECT_TRUE(std::filesystem::exists(chart)) << out.err;
  } else {
    EXPECT_NE(out.err.find("gnuplot is not installed"), std::string::npos) << out.err;
  }
  const std::string png = dir_->path().string() + "/sweep.png";
  json conc = Loadgen(server_->http(),
                      {"--sweep", "concurrency=1,3", "-n", "3", "--input-len", "16", "--output-len",
                       "8", "--chart", png},
                      &out);
  ASSERT_EQ(conc["results"].size(), 2u);
  EXPECT_EQ(conc["results"][1]["max_concurrency"], 3);
  json rate = Loadgen(server_->grpc(), {"--sweep", "request-rate=10,40", "-n", "3", "--input-len",
                                        "16", "--output-len", "8", "--no-chart"});
  EXPECT_EQ(rate["results"][1]["request_rate"], 40.0);
}

TEST_F(ClientServerTest, LoadgenDurationAndWarmup) {
  ProcessResult out;
  json j = Loadgen(
      server_->grpc(),
      {"--duration", "1", "-c", "2", "--warmup", "2", "--input-len", "16", "--output-len", "8"},
      &out);
  EXPECT_GT(j["completed"].get<int>(), 0);
  for (const json& t : j["start_times"]) EXPECT_LT(t.get<double>(), 1.05);
  EXPECT_NE(out.err.find("warm-up: 2 requests, 0 failed"), std::string::npos) << out.err;
}

TEST_F(ClientServerTest, LoadgenCancellationFreesTheSlots) {
  for (const std::string api : {"grpc", "openai", "tgi"}) {
    const std::string target = api == "grpc" ? server_->grpc() : server_->http();
    const double cancelled_before =
        Metric(server_->http(), "mamba_request_completions_total", "{reason=\"cancelled\"}");
    json j =
        Loadgen(target, {"--api", api, "-n", "4", "-c", "4", "--input-len", "16", "--output-len",
                         "8000", "--cancel-fraction", "1", "--cancel-after-ms", "300"});
    EXPECT_EQ(j["cancelled"], 4) << api << j["errors"];
    EXPECT_EQ(j["failed"], 0) << api;
    EXPECT_EQ(WaitForFreeSlots(server_->http()), 0) << api;
    EXPECT_EQ(Metric(server_->http(), "mamba_request_completions_total", "{reason=\"cancelled\"}") -
                  cancelled_before,
              4)
        << api;
  }
}

// ---- HTTPS: the same commands against a second server with --tls-cert ------------------------

class ClientHttpsTest : public ClientServerTest {
 protected:
  static void SetUpTestSuite() {
    ClientServerTest::SetUpTestSuite();  // the plain server, to compare with
    tls_temp_ = new testing::TempDir();
    tls_dir_ = new std::string(tls_temp_->path().string());
    std::string made = MakeCertificate(*tls_dir_, "server", "DNS:localhost,IP:127.0.0.1");
    // Another self-signed certificate for the same names: a CA that did not sign the server's.
    if (made.empty()) made = MakeCertificate(*tls_dir_, "other", "DNS:localhost,IP:127.0.0.1");
    if (!made.empty()) {
      *error_ = made;
      return;
    }
    // A short idle timeout, so that a test can see the server close a kept-alive TLS connection.
    tls_server_ = ServerProcess::Start({"--slots", "8", "--http-idle-timeout", "2", "--tls-cert",
                                        Ca(), "--tls-key", *tls_dir_ + "/server-key.pem"},
                                       std::chrono::seconds(120), error_)
                      .release();
  }
  static void TearDownTestSuite() {
    delete tls_server_;
    tls_server_ = nullptr;
    delete tls_dir_;
    delete tls_temp_;
    ClientServerTest::TearDownTestSuite();
  }
  void SetUp() override {
    if (server_ == nullptr || tls_server_ == nullptr) GTEST_SKIP() << *error_;
  }

  static std::string Ca() { return *tls_dir_ + "/server.pem"; }
  static std::string OtherCa() { return *tls_dir_ + "/other.pem"; }
  static HttpClientOptions TlsOptions() {
    HttpClientOptions options;
    options.tls.ca_file = Ca();
    return options;
  }
  static std::string Https() {
    return "https://127.0.0.1:" + std::to_string(tls_server_->http_port());
  }

  static ServerProcess* tls_server_;
  static testing::TempDir* tls_temp_;
  static std::string* tls_dir_;
};

ServerProcess* ClientHttpsTest::tls_server_ = nullptr;
testing::TempDir* ClientHttpsTest::tls_temp_ = nullptr;
std::string* ClientHttpsTest::tls_dir_ = nullptr;

TEST_F(ClientHttpsTest, CommandsAnswerAsOverPlainHttp) {
  const std::vector<std::vector<std::string>> commands = {
      {"health"},
      // Streamed: OpenAI and TGI server-sent events.
      {"generate", kPrompt, "--max-tokens", "12", "--temperature", "0"},
      {"--http-api", "tgi", "generate", kPrompt, "--max-tokens", "12", "--temperature", "0"},
      {"generate", kPrompt, "--max-tokens", "4", "--temperature", "0", "-n", "2", "--logprobs"},
      {"tokenize", kPrompt},
      {"detokenize", "688", "253", "5068"},
  };
  for (const std::vector<std::string>& args : commands) {
    const std::string what = absl::StrJoin(args, " ");
    ProcessResult plain = Client(server_->http(), args);
    std::vector<std::string> tls_args = {"--tls-ca", Ca()};
    tls_args.insert(tls_args.end(), args.begin(), args.end());
    ProcessResult tls = Client(Https(), tls_args);
    EXPECT_EQ(plain.exit_code, 0) << what << ": " << plain.err;
    EXPECT_EQ(tls.exit_code, 0) << what << ": " << tls.err;
    EXPECT_FALSE(tls.out.empty()) << what;
    EXPECT_EQ(tls.out, plain.out) << what;
  }
  // JSON answers carry ids and times: compare what was generated.
  const std::vector<std::string> json_args = {"generate",      kPrompt, "--max-tokens", "12",
                                              "--temperature", "0",     "--json"};
  ProcessResult plain = Client(server_->http(), json_args);
  std::vector<std::string> tls_args = {"--tls-ca", Ca()};
  tls_args.insert(tls_args.end(), json_args.begin(), json_args.end());
  ProcessResult tls = Client(Https(), tls_args);
  ASSERT_EQ(tls.exit_code, 0) << tls.err;
  json p = json::parse(plain.out, nullptr, false), t = json::parse(tls.out, nullptr, false);
  ASSERT_TRUE(t.is_object()) << tls.out;
  EXPECT_EQ(t["choices"], p["choices"]);
  EXPECT_EQ(t["usage"], p["usage"]);
  ProcessResult info = Client(Https(), {"--tls-ca", Ca(), "info"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(json::parse(info.out, nullptr, false)["data"][0]["id"], "kjv-mamba-4x192") << info.out;
  // The name checked (and sent as SNI) can differ from the address dialled.
  ProcessResult by_name =
      Client(Https(), {"--tls-ca", Ca(), "--tls-server-name", "localhost", "health"});
  EXPECT_EQ(by_name.exit_code, 0) << by_name.err;
}

TEST_F(ClientHttpsTest, RefusesServersItCannotVerify) {
  auto expect_failure = [&](const std::string& target, std::vector<std::string> args,
                            const std::string& message) {
    ProcessResult r = Client(target, args);
    EXPECT_EQ(r.exit_code, 1) << absl::StrJoin(args, " ") << ": " << r.out;
    EXPECT_EQ(r.out, "") << absl::StrJoin(args, " ");
    EXPECT_NE(r.err.find(message), std::string::npos) << absl::StrJoin(args, " ") << ": " << r.err;
  };
  const std::string rejected =
      "TLS handshake failed: the server's certificate was not accepted: self-signed certificate";
  expect_failure(Https(), {"--tls-ca", OtherCa(), "generate", kPrompt, "--max-tokens", "4"},
                 rejected + " (checked against the roots in");
  expect_failure(Https(), {"--tls-ca", OtherCa(), "tokenize", kPrompt}, rejected);
  expect_failure(Https(), {"health"},
                 rejected + " (checked against the system's trusted roots");  // no --tls-ca
  expect_failure(Https(), {"--tls-ca", Ca(), "--tls-server-name", "example.org", "health"},
                 "the server's certificate is not valid for 'example.org'");
  expect_failure(Https(), {"--tls-ca", *tls_dir_ + "/missing.pem", "health"},
                 "cannot read the TLS CA file");
  // TLS to the plain server, plain HTTP with TLS options.
  const std::string plain_as_https = "https://127.0.0.1:" + std::to_string(server_->http_port());
  expect_failure(plain_as_https, {"--tls-ca", Ca(), "health"}, "TLS handshake failed");
  expect_failure(server_->http(), {"--tls-ca", Ca(), "health"},
                 "--tls-ca needs a TLS target: use https://");
  ProcessResult lg_usage =
      RunProcess({MAMBA_LOADGEN_BIN, "--target", server_->http(), "--tls-ca", Ca(), "-n", "1"}, "",
                 std::chrono::seconds(60));
  EXPECT_EQ(lg_usage.exit_code, 1);
  EXPECT_NE(lg_usage.err.find("--tls-ca needs a TLS target"), std::string::npos) << lg_usage.err;
  // The load generator counts such failures as "tls".
  ProcessResult lg =
      RunProcess({MAMBA_LOADGEN_BIN, "--target", Https(), "--tls-ca", OtherCa(), "-n", "2",
                  "--input-len", "8", "--output-len", "4", "--vocab-size", "100", "--no-progress"},
                 "", std::chrono::seconds(120));
  EXPECT_EQ(lg.exit_code, 1) << lg.out << lg.err;
  EXPECT_NE(lg.out.find("errors tls"), std::string::npos) << lg.out;
}

TEST_F(ClientHttpsTest, LoadgenStreamsOverHttps) {
  for (const std::string api : {"openai", "tgi"}) {
    json j = Loadgen(Https(), {"--tls-ca", Ca(), "--api", api, "-n", "6", "-c", "2", "--input-len",
                               "16", "--output-len", "8"});
    EXPECT_EQ(j["completed"], 6) << api << j["errors"];
    EXPECT_EQ(j["failed"], 0) << api;
    EXPECT_TRUE(j["errors_by_code"].empty()) << api << j["errors_by_code"];
    EXPECT_EQ(Sum(j["output_lens"]), 6 * 8) << api;
  }
  // Multi-turn OpenAI conversations also detokenize over HTTPS first.
  json turns = Loadgen(Https(), {"--tls-ca", Ca(), "-n", "4", "-c", "2", "--turns", "2",
                                 "--input-len", "8", "--output-len", "4"});
  EXPECT_EQ(turns["completed"], 4) << turns["errors"];
  EXPECT_EQ(WaitForFreeSlots(Https(), TlsOptions()), 0);
}

TEST_F(ClientHttpsTest, KeepsTheConnectionAndReconnectsAfterTheServerClosedIt) {
  HttpApi api(ParseEndpoint(Https()).value(), "", TlsOptions());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = api.Tokenize(kPrompt, 30);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_FALSE(ids->empty());
  }
  EXPECT_EQ(api.client().connections_opened(), 1);
  // The server closes idle connections after 2 s; the next call notices and reconnects once.
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  absl::StatusOr<std::string> text = api.Detokenize({688, 253, 5068}, 30);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(api.client().connections_opened(), 2);
}

// ---- servers with other settings ------------------------------------------------------------

TEST(ClientServerLimitsTest, RejectionsAreCountedByCode) {
  std::string error;
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--slots", "1", "--max-queue", "1"}, std::chrono::seconds(120), &error);
  if (!server) GTEST_SKIP() << error;
  const testing::TempDir temp;
  const std::string dir = temp.path().string();
  for (const std::string api : {"openai", "grpc", "tgi"}) {
    const std::string target = api == "grpc" ? server->grpc() : server->http();
    const std::string path = dir + "/r.json";
    ProcessResult r =
        RunProcess({MAMBA_LOADGEN_BIN, "--target", target, "--api", api, "-n", "6", "-c", "6",
                    "--input-len", "16", "--output-len", "256", "--json", path, "--no-progress"},
                   "", std::chrono::seconds(180));
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    json j = json::parse(ReadFile(path));
    const std::string kind = api == "grpc" ? "grpc_resource_exhausted" : "http_429";
    EXPECT_GT(j["errors_by_code"].value(kind, 0), 0) << api << j["errors_by_code"];
    EXPECT_EQ(j["completed"].get<int>() + j["failed"].get<int>(), 6) << api;
    EXPECT_GE(j["completed"].get<int>(), 1) << api;
    EXPECT_NE(r.out.find("errors " + kind), std::string::npos) << r.out;
  }
  EXPECT_EQ(WaitForFreeSlots(server->http()), 0);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(ClientServerLimitsTest, ApiKeys) {
  std::string error;
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--api-key", "s3cret"}, std::chrono::seconds(120), &error);
  if (!server) GTEST_SKIP() << error;
  auto client = [&](const std::string& target, std::vector<std::string> args) {
    std::vector<std::string> argv = {MAMBA_CLIENT_BIN, "--target", target};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv);
  };
  ProcessResult http_denied = client(server->http(), {"generate", "hi", "--max-tokens", "2"});
  EXPECT_EQ(http_denied.exit_code, 1);
  EXPECT_NE(http_denied.err.find("HTTP 401"), std::string::npos) << http_denied.err;
  ProcessResult grpc_denied = client(server->grpc(), {"info"});
  EXPECT_EQ(grpc_denied.exit_code, 1);
  EXPECT_NE(grpc_denied.err.find("UNAUTHENTICATED"), std::string::npos) << grpc_denied.err;
  EXPECT_EQ(client(server->http(), {"--api-key", "s3cret", "generate", "hi", "--max-tokens", "2"})
                .exit_code,
            0);
  EXPECT_EQ(client(server->grpc(), {"--api-key", "s3cret", "info"}).exit_code, 0);
  setenv("MAMBA_API_KEY", "s3cret", 1);
  EXPECT_EQ(client(server->grpc(), {"generate", "hi", "--max-tokens", "2"}).exit_code, 0);
  const testing::TempDir temp;
  const std::string dir = temp.path().string();
  const std::string path = dir + "/r.json";
  ProcessResult lg =
      RunProcess({MAMBA_LOADGEN_BIN, "--target", server->grpc(), "-n", "2", "--input-len", "8",
                  "--output-len", "4", "--json", path, "--no-progress"});
  unsetenv("MAMBA_API_KEY");
  EXPECT_EQ(lg.exit_code, 0) << lg.err;
  EXPECT_EQ(json::parse(ReadFile(path))["completed"], 2);
  ProcessResult lg_denied = RunProcess({MAMBA_LOADGEN_BIN, "--target", server->http(), "-n", "2",
                                        "--input-len", "8", "--output-len", "4", "--no-progress"});
  EXPECT_EQ(lg_denied.exit_code, 1);  // every request failed
  EXPECT_NE(lg_denied.out.find("errors http_401"), std::string::npos) << lg_denied.out;
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(ClientServerLimitsTest, GrpcOverTls) {
  const testing::TempDir temp;
  const std::string dir = temp.path().string();
  if (std::string why = MakeCertificate(dir, "cert", "DNS:localhost,IP:127.0.0.1"); !why.empty()) {
    GTEST_SKIP() << why;
  }
  std::string error;
  std::unique_ptr<ServerProcess> server =
      ServerProcess::Start({"--tls-cert", dir + "/cert.pem", "--tls-key", dir + "/cert-key.pem"},
                           std::chrono::seconds(120), &error);
  if (!server) GTEST_SKIP() << error;
  const std::string target = "grpcs://localhost:" + std::to_string(server->grpc_port());
  ProcessResult ok = RunProcess({MAMBA_CLIENT_BIN, "--target", target, "--tls-ca",
                                 dir + "/cert.pem", "generate", "hi", "--max-tokens", "3"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  ProcessResult plaintext =
      RunProcess({MAMBA_CLIENT_BIN, "--target", server->grpc(), "--timeout", "5", "info"});
  EXPECT_EQ(plaintext.exit_code, 1);
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace mamba::client
