// The HTTP front end's APIs end to end: OpenAI completions (unary and SSE, prompt forms, n,
// echo, logprobs, stop), TGI generate / generate_stream, tokenize, models, health, metrics,
// keep-alive and pipelining, over a real engine with a tiny random model.
#include <set>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/session_state.h"
#include "tests/server/http/http_test_server.h"

namespace mamba::server::http_testing {
namespace {

using ::nlohmann::json;

class HttpServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerSetup setup;
    setup.num_slots = 8;
    server_ = HttpTestServer::Start(setup).release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }
  void TearDown() override { EXPECT_TRUE(server_->WaitEngineIdle()); }

  static int port() { return server_->port(); }

  // POSTs and expects `status`; returns the parsed body.
  static json Post(const std::string& path, const json& body, int status = 200) {
    std::optional<Response> r = PostJson(port(), path, body);
    EXPECT_TRUE(r.has_value());
    if (!r) return json();
    EXPECT_EQ(r->status, status) << r->body;
    return r->Json();
  }

  // A streamed call's `data:` payloads (asserting SSE headers and a 200).
  static std::vector<std::string> Stream(const std::string& path, const json& body) {
    std::optional<Response> r = PostJson(port(), path, body);
    EXPECT_TRUE(r.has_value());
    if (!r) return {};
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->Header("content-type"), "text/event-stream");
    return SseData(r->body);
  }

  static json Greedy(json prompt, int max_tokens) {
    return {{"prompt", std::move(prompt)},
            {"max_tokens", max_tokens},
            {"temperature", 0},
            {"ignore_eos", true}};
  }

  std::vector<engine::TokenId> Encode(const std::string& text) {
    return server_->tokenizer().Encode(text).value();
  }

  static HttpTestServer* server_;
};

HttpTestServer* HttpServerTest::server_ = nullptr;

TEST_F(HttpServerTest, HealthAndModels) {
  std::optional<Response> h = Call(port(), "GET", "/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->Json()["status"], "ok");

  json models = json::parse(Call(port(), "GET", "/v1/models")->body);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], kModelName);
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(Call(port(), "GET", std::string("/v1/models/") + kModelName)->status, 200);
  EXPECT_EQ(Call(port(), "GET", "/v1/models/other")->status, 404);
}

TEST_F(HttpServerTest, HealthIs503WhileStartingOrDraining) {
  for (Health h : {Health::kStarting, Health::kDraining}) {
    server_->state().health = h;
    std::optional<Response> r = Call(port(), "GET", "/health");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_TRUE(r->Json().contains("error"));
    // Generation is refused too.
    EXPECT_EQ(PostJson(port(), "/v1/completions", Greedy("hi", 2))->status, 503);
  }
  server_->state().health = Health::kServing;
  EXPECT_EQ(Call(port(), "GET", "/health")->status, 200);
}

TEST_F(HttpServerTest, UnaryCompletionShape) {
  const std::string prompt = "The quick brown fox";
  json r = Post("/v1/completions", Greedy(prompt, 8));
  EXPECT_THAT(r["id"].get<std::string>(), ::testing::StartsWith("cmpl-"));
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], kModelName);
  EXPECT_TRUE(r["created"].is_number_integer());
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
  EXPECT_TRUE(r["choices"][0]["text"].is_string());
  const int64_t prompt_tokens = static_cast<int64_t>(Encode(prompt).size());
  EXPECT_EQ(r["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(r["usage"]["completion_tokens"], 8);
  EXPECT_EQ(r["usage"]["total_tokens"], prompt_tokens + 8);
  // Greedy is deterministic; max_tokens defaults to 16.
  EXPECT_EQ(Post("/v1/completions", Greedy(prompt, 8))["choices"][0]["text"],
            r["choices"][0]["text"]);
  json d = Post("/v1/completions", {{"prompt", prompt}, {"temperature", 0}, {"ignore_eos", true}});
  EXPECT_EQ(d["usage"]["completion_tokens"], 16);
}

TEST_F(HttpServerTest, StreamEqualsUnary) {
  json req = Greedy("Once upon a time", 12);
  const std::string unary = Post("/v1/completions", req)["choices"][0]["text"];
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  std::vector<std::string> events = Stream("/v1/completions", req);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  std::set<std::string> ids;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    json e = json::parse(events[i]);
    ids.insert(e["id"].get<std::string>());
    EXPECT_EQ(e["object"], "text_completion");
    ASSERT_EQ(e["choices"].size(), 1u);
    EXPECT_TRUE(e.contains("usage") && e["usage"].is_null());
    text += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, unary);
  EXPECT_EQ(finish, "length");
  json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 12);
  ids.insert(usage["id"].get<std::string>());
  EXPECT_EQ(ids.size(), 1u);
}

TEST_F(HttpServerTest, PromptForms) {
  const std::string a = "Hello there", b = "General Kenobi";
  const std::vector<engine::TokenId> ia = Encode(a), ib = Encode(b);
  const std::string ta = Post("/v1/completions", Greedy(a, 5))["choices"][0]["text"];
  const std::string tb = Post("/v1/completions", Greedy(b, 5))["choices"][0]["text"];
  // Token ids give what the text gives.
  EXPECT_EQ(Post("/v1/completions", Greedy(ia, 5))["choices"][0]["text"], ta);
  for (const json& prompts : {json::array({a, b}), json::array({ia, ib})}) {
    json r = Post("/v1/completions", Greedy(prompts, 5));
    ASSERT_EQ(r["choices"].size(), 2u);
    EXPECT_EQ(r["choices"][0]["index"], 0);
    EXPECT_EQ(r["choices"][0]["text"], ta);
    EXPECT_EQ(r["choices"][1]["index"], 1);
    EXPECT_EQ(r["choices"][1]["text"], tb);
    EXPECT_EQ(r["usage"]["prompt_tokens"], ia.size() + ib.size());
    EXPECT_EQ(r["usage"]["completion_tokens"], 10);
  }
}

TEST_F(HttpServerTest, SeveralPromptsTimesN) {
  json req = {{"prompt", {"one", "two"}}, {"n", 3},     {"max_tokens", 4},
              {"temperature", 1.0},       {"seed", 11}, {"ignore_eos", true}};
  json r = Post("/v1/completions", req);
  ASSERT_EQ(r["choices"].size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r["choices"][i]["index"], i);
  EXPECT_EQ(r["usage"]["completion_tokens"], 24);
  EXPECT_EQ(r["usage"]["prompt_tokens"], Encode("one").size() + Encode("two").size());
  // Seeded: the same again.
  EXPECT_EQ(Post("/v1/completions", req)["choices"], r["choices"]);

  // Streamed: every choice gets its finish, indexes prompt_index * n + i.
  req["stream"] = true;
  std::vector<std::string> events = Stream("/v1/completions", req);
  std::map<int, std::string> texts;
  std::map<int, int> finishes;
  for (const std::string& e : events) {
    if (e == "[DONE]") continue;
    json j = json::parse(e);
    const int index = j["choices"][0]["index"];
    texts[index] += j["choices"][0]["text"].get<std::string>();
    if (!j["choices"][0]["finish_reason"].is_null()) ++finishes[index];
  }
  ASSERT_EQ(finishes.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(finishes[i], 1);
    EXPECT_EQ(texts[i], r["choices"][i]["text"]) << i;
  }
}

TEST_F(HttpServerTest, LogprobsShape) {
  json req = Greedy("Logprobs are", 6);
  req["logprobs"] = 3;
  json r = Post("/v1/completions", req);
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << r.dump();
  for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
    ASSERT_EQ(lp[k].size(), 6u) << k;
  }
  int64_t last_offset = -1;
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(lp["tokens"][i].is_string());
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_TRUE(lp["top_logprobs"][i].is_object());
    EXPECT_GE(lp["top_logprobs"][i].size(), 1u);
    EXPECT_LE(lp["top_logprobs"][i].size(), 3u);
    // Greedy: the chosen token is the best one.
    double best = -1e30;
    for (auto& [tok, v] : lp["top_logprobs"][i].items()) best = std::max(best, v.get<double>());
    EXPECT_NEAR(best, lp["token_logprobs"][i].get<double>(), 1e-5);
    EXPECT_GE(lp["text_offset"][i].get<int64_t>(), last_offset);
    last_offset = lp["text_offset"][i];
  }
  EXPECT_EQ(lp["text_offset"][0], 0);

  // Streamed: one token per chunk, with its own logprobs object.
  req["stream"] = true;
  int tokens = 0;
  for (const std::string& e : Stream("/v1/completions", req)) {
    if (e == "[DONE]") continue;
    json j = json::parse(e);
    const json& l = j["choices"][0]["logprobs"];
    if (l.is_null()) continue;
    EXPECT_EQ(l["tokens"][0], lp["tokens"][tokens]);
    EXPECT_EQ(l["text_offset"][0], lp["text_offset"][tokens]);
    ++tokens;
  }
  EXPECT_EQ(tokens, 6);
}

TEST_F(HttpServerTest, Echo) {
  const std::string prompt = "Echo this";
  json req = Greedy(prompt, 4);
  const std::string plain = Post("/v1/completions", req)["choices"][0]["text"];
  req["echo"] = true;
  EXPECT_EQ(Post("/v1/completions", req)["choices"][0]["text"], prompt + plain);

  req["logprobs"] = 1;
  json r = Post("/v1/completions", req);
  const json& lp = r["choices"][0]["logprobs"];
  const size_t n_prompt = Encode(prompt).size();
  ASSERT_EQ(lp["tokens"].size(), n_prompt + 4);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_TRUE(lp["token_logprobs"][n_prompt].is_number());
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][n_prompt], static_cast<int64_t>(prompt.size()));  // ASCII prompt

  req.erase("logprobs");
  req["stream"] = true;
  std::string text;
  for (const std::string& e : Stream("/v1/completions", req)) {
    if (e != "[DONE]") text += json::parse(e)["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, prompt + plain);
}

TEST_F(HttpServerTest, StopStrings) {
  const std::string full = Post("/v1/completions", Greedy("Stop me if", 24))["choices"][0]["text"];
  // An ASCII stop string from the middle of the greedy text.
  std::string stop;
  for (size_t i = 3; i + 2 <= full.size() && stop.empty(); ++i) {
    if (std::isalnum(static_cast<unsigned char>(full[i])) &&
        std::isalnum(static_cast<unsigned char>(full[i + 1]))) {
      stop = full.substr(i, 2);
    }
  }
  if (stop.empty()) GTEST_SKIP() << "no ASCII pair in the random model's text: " << full;
  const std::string want = full.substr(0, full.find(stop));
  for (json stops : {json(stop), json::array({"\x01never", stop})}) {
    json req = Greedy("Stop me if", 24);
    req["stop"] = stops;
    json r = Post("/v1/completions", req);
    EXPECT_EQ(r["choices"][0]["text"], want);
    EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
    req["stream"] = true;
    std::string text;
    std::string finish;
    for (const std::string& e : Stream("/v1/completions", req)) {
      if (e == "[DONE]") continue;
      json j = json::parse(e);
      text += j["choices"][0]["text"].get<std::string>();
      if (!j["choices"][0]["finish_reason"].is_null()) finish = j["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(text, want);
    EXPECT_EQ(finish, "stop");
  }
}

TEST_F(HttpServerTest, TgiGenerateWithDetails) {
  const std::string prompt = "TGI says";
  json req = {{"inputs", prompt},
              {"parameters",
               {{"max_new_tokens", 7},
                {"details", true},
                {"top_n_tokens", 2},
                {"decoder_input_details", true}}}};
  json r = Post("/generate", req);
  ASSERT_TRUE(r["generated_text"].is_string()) << r.dump();
  const json& d = r["details"];
  const int generated = d["generated_tokens"];
  EXPECT_GE(generated, 1);
  EXPECT_LE(generated, 7);
  EXPECT_TRUE(d["finish_reason"] == "length" || d["finish_reason"] == "eos_token") << d;
  EXPECT_TRUE(d["seed"].is_null());  // do_sample false: greedy, no seed
  ASSERT_EQ(d["tokens"].size(), static_cast<size_t>(generated));
  ASSERT_EQ(d["top_tokens"].size(), static_cast<size_t>(generated));
  EXPECT_EQ(d["prefill"].size(), Encode(prompt).size());
  for (int i = 0; i < generated; ++i) {
    const json& t = d["tokens"][i];
    EXPECT_TRUE(t["id"].is_number_integer());
    EXPECT_TRUE(t["text"].is_string());
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    EXPECT_TRUE(t["special"].is_boolean());
    ASSERT_EQ(d["top_tokens"][i].size(), 2u);
    EXPECT_EQ(d["top_tokens"][i][0]["id"], t["id"]);  // greedy picks the best
  }
  // Greedy matches the OpenAI endpoint's greedy text; return_full_text prepends the inputs.
  json oa = Post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 7}, {"temperature", 0}});
  EXPECT_EQ(r["generated_text"], oa["choices"][0]["text"]);
  req["parameters"]["return_full_text"] = true;
  EXPECT_EQ(Post("/generate", req)["generated_text"],
            prompt + oa["choices"][0]["text"].get<std::string>());
  // Without details: only the text.
  json plain = Post("/generate", {{"inputs", prompt}, {"parameters", {{"max_new_tokens", 3}}}});
  EXPECT_FALSE(plain.contains("details"));
}

TEST_F(HttpServerTest, TgiSamplingReportsSeed) {
  json req = {{"inputs", "Seeded"},
              {"parameters",
               {{"max_new_tokens", 5}, {"do_sample", true}, {"seed", 42}, {"details", true}}}};
  json a = Post("/generate", req);
  EXPECT_EQ(a["details"]["seed"], 42);
  EXPECT_EQ(Post("/generate", req)["generated_text"], a["generated_text"]);
  req["parameters"].erase("seed");
  json b = Post("/generate", req);
  EXPECT_TRUE(b["details"]["seed"].is_number_unsigned() ||
              b["details"]["seed"].is_number_integer());
}

// As TGI: temperature (other than 1), top_k or top_p below 1 sample even without do_sample.
TEST_F(HttpServerTest, TgiWarpersSampleWithoutDoSample) {
  json req = {{"inputs", "Warped"},
              {"parameters",
               {{"max_new_tokens", 8}, {"temperature", 1.5}, {"seed", 7}, {"details", true}}}};
  json a = Post("/generate", req);
  EXPECT_EQ(a["details"]["seed"], 7) << a.dump();
  req["parameters"]["do_sample"] = true;
  EXPECT_EQ(Post("/generate", req)["generated_text"], a["generated_text"]);
  for (json p : {json{{"top_k", 5}}, json{{"top_p", 0.9}}}) {
    p["details"] = true;
    json d = Post("/generate", {{"inputs", "Warped"}, {"parameters", p}});
    EXPECT_TRUE(d["details"]["seed"].is_number()) << p.dump() << " did not sample: " << d.dump();
  }
  // temperature 1 is no warper: greedy, no seed.
  json g = Post("/generate",
                {{"inputs", "Warped"}, {"parameters", {{"temperature", 1.0}, {"details", true}}}});
  EXPECT_TRUE(g["details"]["seed"].is_null());
}

TEST_F(HttpServerTest, TgiStreamMatchesGenerate) {
  json req = {{"inputs", "Streaming TGI"},
              {"parameters", {{"max_new_tokens", 9}, {"details", true}, {"top_n_tokens", 1}}}};
  json unary = Post("/generate", req);
  std::vector<std::string> events = Stream("/generate_stream", req);
  ASSERT_EQ(events.size(), unary["details"]["generated_tokens"].get<size_t>());
  std::string text;
  for (size_t i = 0; i < events.size(); ++i) {
    json e = json::parse(events[i]);
    EXPECT_EQ(e["index"], i + 1);
    EXPECT_EQ(e["token"]["id"], unary["details"]["tokens"][i]["id"]);
    EXPECT_EQ(e["top_tokens"].size(), 1u);
    if (!e["token"]["special"].get<bool>()) text += e["token"]["text"].get<std::string>();
    if (i + 1 < events.size()) {
      EXPECT_TRUE(e["generated_text"].is_null());
      EXPECT_TRUE(e["details"].is_null());
    } else {
      EXPECT_EQ(e["generated_text"], unary["generated_text"]);
      EXPECT_EQ(e["details"]["finish_reason"], unary["details"]["finish_reason"]);
      EXPECT_EQ(e["details"]["generated_tokens"], events.size());
    }
  }
  EXPECT_EQ(text, unary["generated_text"]);
}

TEST_F(HttpServerTest, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Hello, wörld! <|endoftext|> 123";
  json t = Post("/tokenize", {{"prompt", text}});
  EXPECT_EQ(t["tokens"].get<std::vector<int>>(), Encode(text));
  EXPECT_EQ(t["count"], t["tokens"].size());
  json d = Post("/detokenize", {{"tokens", t["tokens"]}});
  EXPECT_EQ(d["prompt"], text);
  Post("/detokenize", {{"tokens", {1, 999999}}}, 400);  // OpenAI-style route: 400
  Post("/tokenize", {{"prompt", 5}}, 400);
}

TEST_F(HttpServerTest, MetricsExposition) {
  Post("/v1/completions", Greedy("count me", 3));
  std::optional<Response> r = Call(port(), "GET", "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->Header("content-type"), ::testing::StartsWith("text/plain"));
  for (const char* name :
       {"mamba_request_completions_total", "mamba_requests_rejected_total", "mamba_queue_length",
        "mamba_running_requests", "mamba_state_slots_used", "mamba_state_slots_total",
        "mamba_prompt_tokens_total", "mamba_generated_tokens_total",
        "mamba_time_to_first_token_seconds", "mamba_inter_token_latency_seconds",
        "mamba_e2e_request_latency_seconds", "mamba_queue_wait_seconds",
        "mamba_step_duration_seconds", "mamba_step_batch_size", "mamba_frontend_responses_total"}) {
    EXPECT_NE(r->body.find(name), std::string::npos) << name;
  }
  EXPECT_EQ(MetricValue(r->body, "mamba_state_slots_total"), 8);
  EXPECT_GE(MetricValue(r->body, "mamba_request_completions_total{reason=\"length\"}"), 1);
  EXPECT_GE(MetricValue(r->body, "mamba_generated_tokens_total"), 3);
  EXPECT_GE(MetricValue(r->body, "mamba_time_to_first_token_seconds_count"), 1);
}

TEST_F(HttpServerTest, KeepAliveAndPipelining) {
  std::unique_ptr<Connection> c = Connection::Open(port());
  ASSERT_TRUE(c);
  const std::string body = Greedy("keep alive", 3).dump();
  ASSERT_TRUE(c->Send(RawRequest("POST", "/v1/completions", body)));
  std::optional<Response> first = c->Read();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->Header("connection"), "keep-alive");
  // Three at once, a stream in the middle: answered in order on the same connection.
  json streamed = Greedy("keep alive", 3);
  streamed["stream"] = true;
  ASSERT_TRUE(c->Send(RawRequest("POST", "/v1/completions", body) +
                      RawRequest("POST", "/v1/completions", streamed.dump()) +
                      RawRequest("GET", "/health")));
  std::optional<Response> a = c->Read();
  std::optional<Response> b = c->Read();
  std::optional<Response> h = c->Read();
  ASSERT_TRUE(a && b && h);
  EXPECT_EQ(a->Json()["choices"][0]["text"], first->Json()["choices"][0]["text"]);
  EXPECT_EQ(SseData(b->body).back(), "[DONE]");
  EXPECT_EQ(h->Json()["status"], "ok");
}

TEST_F(HttpServerTest, Http10StreamEndsWithTheConnection) {
  std::unique_ptr<Connection> c = Connection::Open(port());
  ASSERT_TRUE(c);
  json req = Greedy("old client", 3);
  req["stream"] = true;
  std::string raw = RawRequest("POST", "/v1/completions", req.dump());
  raw.replace(raw.find("HTTP/1.1"), 8, "HTTP/1.0");
  ASSERT_TRUE(c->Send(raw));
  std::optional<Response> r = c->Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("transfer-encoding"), "");
  EXPECT_EQ(r->Header("connection"), "close");
  EXPECT_EQ(SseData(r->body).back(), "[DONE]");
}

TEST_F(HttpServerTest, ExpectContinue) {
  std::unique_ptr<Connection> c = Connection::Open(port());
  ASSERT_TRUE(c);
  const std::string body = Greedy("continue", 2).dump();
  const std::string req = RawRequest("POST", "/v1/completions", body, {{"Expect", "100-continue"}});
  ASSERT_TRUE(c->Send(req.substr(0, req.size() - body.size())));
  std::optional<Response> cont = c->ReadHead(10s);
  ASSERT_TRUE(cont);
  EXPECT_EQ(cont->status, 100);
  ASSERT_TRUE(c->Send(body));
  std::optional<Response> r = c->Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Every (from, to) pair: Allowed exactly on `edges` and on any state -> kClosed.
template <class State>
void ExpectOnlyEdges(const std::set<std::pair<State, State>>& edges) {
  for (int f = 0; f <= static_cast<int>(State::kClosed); ++f) {
    for (int t = 0; t <= static_cast<int>(State::kClosed); ++t) {
      const auto from = static_cast<State>(f);
      const auto to = static_cast<State>(t);
      const bool want =
          edges.contains({from, to}) || (to == State::kClosed && from != State::kClosed);
      EXPECT_EQ(http::Allowed(from, to), want) << http::Name(from) << " -> " << http::Name(to);
    }
  }
}

// A connection's states move only along the documented edges (server/http/session_state.h):
// every pair is checked, so that a new edge is a deliberate change of this table.
TEST(SessionStateTest, OnlyTheDocumentedTransitionsAreAllowed) {
  using http::ReadState;
  using http::ReplyState;
  ExpectOnlyEdges<ReadState>({
      {ReadState::kIdle, ReadState::kHeader},
      {ReadState::kHeader, ReadState::kIdle},
      {ReadState::kIdle, ReadState::kBody},
      {ReadState::kBody, ReadState::kIdle},
      {ReadState::kIdle, ReadState::kWatch},
      {ReadState::kWatch, ReadState::kIdle},
      {ReadState::kWatch, ReadState::kWatchThenParse},
      {ReadState::kWatchThenParse, ReadState::kIdle},
      {ReadState::kIdle, ReadState::kLinger},
  });
  ExpectOnlyEdges<ReplyState>({
      {ReplyState::kIdle, ReplyState::kHandling},
      {ReplyState::kIdle, ReplyState::kClosing},
      {ReplyState::kHandling, ReplyState::kStreaming},
      {ReplyState::kHandling, ReplyState::kSent},
      {ReplyState::kHandling, ReplyState::kClosing},
      {ReplyState::kStreaming, ReplyState::kSent},
      {ReplyState::kStreaming, ReplyState::kClosing},
      {ReplyState::kSent, ReplyState::kIdle},
  });
}

}  // namespace
}  // namespace mamba::server::http_testing
