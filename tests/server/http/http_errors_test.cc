// The HTTP front end under bad input and bad clients: malformed requests of every kind (the
// server answers and stays up), auth, overload (429), client disconnects and slow readers
// (requests cancelled, slots freed), deadlines, shutdown mid-stream, and TLS.
#include <cstdlib>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"
#include "tests/server/http/http_test_server.h"

namespace mamba::server::http_testing {
namespace {

using ::nlohmann::json;

json LongRequest(bool stream) {
  return {{"prompt", "a long story"},
          {"max_tokens", 1000000},
          {"temperature", 0},
          {"ignore_eos", true},
          {"stream", stream}};
}

ServerSetup LongSetup(int slots) {
  ServerSetup s;
  s.num_slots = slots;
  s.engine.max_new_tokens_limit = 1 << 20;
  return s;
}

// An error response: the status and OpenAI's error object.
void ExpectError(const std::optional<Response>& r, int status, const std::string& what = "") {
  ASSERT_TRUE(r.has_value()) << what;
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  json j = r->Json();
  ASSERT_TRUE(j.is_object() && j.contains("error")) << what << ": " << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string()) << what;
  EXPECT_TRUE(j["error"]["type"].is_string()) << what;
  EXPECT_EQ(j["error"]["code"], status) << what;
}

double CancelledCount(HttpTestServer& s) {
  return MetricValue(s.metrics().Render(s.engine().Stats()),
                     "mamba_request_completions_total{reason=\"cancelled\"}");
}

TEST(HttpErrorsTest, MalformedInputIsAnsweredAndHarmless) {
  ServerSetup setup;
  setup.front_end.max_body_bytes = 64 * 1024;
  setup.engine.max_prompt_tokens = 100;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  auto post = [&](const std::string& path, const std::string& body) {
    return Call(port, "POST", path, body);
  };
  // 400: not JSON, not an object, wrong types, missing or empty prompt, invalid UTF-8.
  ExpectError(post("/v1/completions", "{\"prompt\": "), 400, "truncated JSON");
  ExpectError(post("/v1/completions", "[1, 2]"), 400, "array body");
  ExpectError(post("/v1/completions", ""), 400, "empty body");
  ExpectError(post("/v1/completions", std::string(100, '[') + std::string(100, ']')), 400, "deep");
  ExpectError(post("/v1/completions", R"({"prompt": 5})"), 400, "prompt int");
  ExpectError(post("/v1/completions", R"({"prompt": [1, "a"]})"), 400, "mixed prompt");
  ExpectError(post("/v1/completions", R"({"prompt": [[1], "a"]})"), 400, "mixed nested");
  ExpectError(post("/v1/completions", R"({"prompt": [1.5]})"), 400, "float id");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "max_tokens": "8"})"), 400,
              "max_tokens str");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "max_tokens": 2.5})"), 400,
              "max_tokens float");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "temperature": "hot"})"), 400, "temp str");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "stream": 1})"), 400, "stream int");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "stop": [1]})"), 400, "stop int");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "suffix": "y"})"), 400, "suffix");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "best_of": 3})"), 400, "best_of");
  ExpectError(post("/v1/completions", R"({"max_tokens": 3})"), 400, "no prompt");
  ExpectError(post("/v1/completions", R"({"prompt": ""})"), 400, "empty prompt");
  ExpectError(post("/v1/completions", R"({"prompt": []})"), 400, "empty array");
  ExpectError(post("/v1/completions", "{\"prompt\": \"bad \xff\xfe utf8\"}"), 400, "invalid UTF-8");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "stream_options": 3})"), 400,
              "stream_options");
  ExpectError(post("/generate", R"({"inputs": ["x"]})"), 400, "tgi inputs");
  ExpectError(post("/generate", R"({"inputs": "x", "parameters": 1})"), 400, "tgi parameters");
  ExpectError(post("/generate", R"({"parameters": {}})"), 400, "tgi no inputs");
  // 422: well-formed but out of range.
  for (const char* bad : {R"("temperature": -1)", R"("top_p": 0)", R"("top_p": 1.5)", R"("n": 0)",
                          R"("max_tokens": 0)", R"("max_tokens": 100000000)", R"("top_k": -5)",
                          R"("min_p": 2)", R"("presence_penalty": 3)", R"("logprobs": 21)",
                          R"("repetition_penalty": 0)", R"("temperature": 1e300)", R"("n": 1000)",
                          R"("min_tokens": 50, "max_tokens": 5)", R"("timeout": -1)"}) {
    ExpectError(post("/v1/completions", std::string(R"({"prompt": "x", )") + bad + "}"), 422, bad);
  }
  ExpectError(post("/v1/completions", R"({"prompt": [1, 60000]})"), 422, "id beyond vocab");
  ExpectError(post("/v1/completions", R"({"prompt": [1, -1]})"), 422, "negative id");
  ExpectError(post("/generate", R"({"inputs": "x", "parameters": {"temperature": 0}})"), 422,
              "tgi t=0");
  // 404 / 405.
  ExpectError(post("/v1/completions", R"({"prompt": "x", "model": "gpt-4"})"), 404, "model");
  ExpectError(Call(port, "GET", "/nope"), 404, "path");
  ExpectError(Call(port, "POST", "/v1/chat/completions", "{}"), 404, "chat");
  std::optional<Response> wrong = Call(port, "GET", "/v1/completions");
  ExpectError(wrong, 405, "method");
  EXPECT_EQ(wrong->Header("allow"), "POST");
  // 413: a body over max_body_bytes, a prompt over max_prompt_tokens.
  ExpectError(post("/v1/completions", R"({"prompt": ")" + std::string(70 * 1024, 'a') + "\"}"), 413,
              "body");
  std::string many = "[";
  for (int i = 0; i < 101; ++i) many += (i ? ",1" : "1");
  ExpectError(post("/v1/completions", R"({"prompt": )" + many + "]}"), 413, "prompt ids");
  std::string words;
  for (int i = 0; i < 150; ++i) words += " word";
  ExpectError(post("/v1/completions", R"({"prompt": ")" + words + "\"}"), 413, "prompt text");
  // A malformed request line.
  {
    std::unique_ptr<Connection> c = Connection::Open(port);
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->Send("GARBAGE\x01 / HTTP/1.1\r\n\r\n"));
    ExpectError(c->Read(5s), 400, "request line");
  }
  // A huge declared body is refused from its headers alone.
  {
    std::unique_ptr<Connection> c = Connection::Open(port);
    ASSERT_TRUE(c);
    ASSERT_TRUE(
        c->Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"));
    ExpectError(c->Read(5s), 413, "declared body");
  }
  // Unknown fields are ignored; the server still serves.
  std::optional<Response> ok =
      post("/v1/completions", R"({"prompt": "x", "max_tokens": 2, "whatever": [1]})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_TRUE(s->WaitEngineIdle());
  // Engine refusals count in the metrics; HTTP answers too.
  const std::string m = Call(port, "GET", "/metrics")->body;
  EXPECT_GE(MetricValue(m,
                        "mamba_frontend_responses_total{code=\"400\",endpoint=\"/v1/"
                        "completions\",protocol=\"http\"}"),
            10)
      << m;
}

TEST(HttpErrorsTest, WithoutTokenizer) {
  ServerSetup setup;
  setup.with_tokenizer = false;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  ExpectError(PostJson(s->port(), "/v1/completions", {{"prompt", "text"}}), 400, "text prompt");
  ExpectError(PostJson(s->port(), "/v1/completions", {{"prompt", {1, 2}}, {"stop", "x"}}), 400,
              "stop");
  ExpectError(PostJson(s->port(), "/generate", {{"inputs", "text"}}), 400, "tgi");
  ExpectError(PostJson(s->port(), "/tokenize", {{"prompt", "text"}}), 400, "tokenize");
  // Token ids still work (without text).
  std::optional<Response> r =
      PostJson(s->port(), "/v1/completions",
               {{"prompt", {1, 2, 3}}, {"max_tokens", 3}, {"ignore_eos", true}, {"logprobs", 1}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->Json()["usage"]["completion_tokens"], 3);
}

TEST(HttpErrorsTest, ApiKey) {
  ServerSetup setup;
  setup.front_end.api_key = "sekrit";
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const std::string body = R"({"prompt": "x", "max_tokens": 2})";
  std::optional<Response> none = Call(s->port(), "POST", "/v1/completions", body);
  ExpectError(none, 401, "no key");
  EXPECT_EQ(none->Header("www-authenticate"), "Bearer");
  ExpectError(Call(s->port(), "POST", "/v1/completions", body, {{"Authorization", "Bearer wrong"}}),
              401, "wrong");
  ExpectError(Call(s->port(), "POST", "/v1/completions", body, {{"Authorization", "sekrit"}}), 401,
              "no scheme");
  ExpectError(Call(s->port(), "GET", "/metrics"), 401, "metrics");
  ExpectError(Call(s->port(), "GET", "/nope"), 401, "unknown path");
  EXPECT_EQ(Call(s->port(), "POST", "/v1/completions", body, {{"Authorization", "Bearer sekrit"}})
                ->status,
            200);
  EXPECT_EQ(Call(s->port(), "GET", "/v1/models", "", {{"authorization", "bearer sekrit"}})->status,
            200);
  EXPECT_EQ(Call(s->port(), "GET", "/health")->status, 200);  // always open
}

TEST(HttpErrorsTest, OverloadIs429) {
  ServerSetup setup = LongSetup(1);
  setup.engine.max_queue = 1;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  // A holds the only slot, B waits in the queue, C finds the queue full.
  std::unique_ptr<Connection> a = Connection::Open(s->port());
  ASSERT_TRUE(a && a->Send(RawRequest("POST", "/v1/completions", LongRequest(true).dump())));
  ASSERT_TRUE(WaitFor([&] { return s->engine().Stats().running == 1; }, 10s));
  std::unique_ptr<Connection> b = Connection::Open(s->port());
  ASSERT_TRUE(b && b->Send(RawRequest("POST", "/v1/completions", LongRequest(true).dump())));
  ASSERT_TRUE(WaitFor([&] { return s->engine().Stats().waiting == 1; }, 10s));
  std::optional<Response> c =
      PostJson(s->port(), "/v1/completions", {{"prompt", "x"}, {"max_tokens", 2}});
  ExpectError(c, 429, "queue full");
  EXPECT_EQ(c->Header("retry-after"), "1");
  std::optional<Response> tgi = PostJson(s->port(), "/generate", {{"inputs", "x"}});
  ExpectError(tgi, 429, "tgi queue full");
  a->Close();
  b->Close();
  EXPECT_TRUE(s->WaitEngineIdle());
  EXPECT_GE(MetricValue(s->metrics().Render(s->engine().Stats()),
                        "mamba_requests_rejected_total{code=\"resource_exhausted\"}"),
            2);
}

TEST(HttpErrorsTest, DisconnectCancels) {
  auto s = HttpTestServer::Start(LongSetup(2));
  ASSERT_TRUE(s);
  // Streaming: read a few events, then hang up.
  {
    std::unique_ptr<Connection> c = Connection::Open(s->port());
    ASSERT_TRUE(c && c->Send(RawRequest("POST", "/v1/completions", LongRequest(true).dump())));
    std::optional<Response> head = c->ReadHead();
    ASSERT_TRUE(head);
    EXPECT_EQ(head->status, 200);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->ReadBodySome());
    c->Close();
    EXPECT_TRUE(s->WaitEngineIdle(10s));
  }
  EXPECT_EQ(CancelledCount(*s), 1);
  // Unary, TGI streaming and unary: hang up while the engine works.
  for (const auto& [path, body] :
       {std::pair<std::string, json>{"/v1/completions", LongRequest(false)},
        {"/generate_stream",
         {{"inputs", "x"}, {"parameters", {{"max_new_tokens", 1000000}, {"ignore_eos", true}}}}},
        {"/generate",
         {{"inputs", "x"}, {"parameters", {{"max_new_tokens", 1000000}, {"ignore_eos", true}}}}}}) {
    std::unique_ptr<Connection> c = Connection::Open(s->port());
    ASSERT_TRUE(c && c->Send(RawRequest("POST", path, body.dump())));
    ASSERT_TRUE(WaitFor([&] { return s->engine().Stats().running == 1; }, 10s)) << path;
    c->Close();
    EXPECT_TRUE(s->WaitEngineIdle(10s)) << path;
  }
  EXPECT_EQ(CancelledCount(*s), 4);
}

TEST(HttpErrorsTest, SlowReaderIsCancelled) {
  ServerSetup setup = LongSetup(8);
  setup.front_end.max_stream_buffer_bytes = 32 * 1024;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  // Big chunks (8 prompts, 20 alternatives per token), a tiny receive window and no reading:
  // once the kernel's buffers are full, the server's own queue passes the limit.
  json req = LongRequest(true);
  req["prompt"] = {"a", "b", "c", "d", "e", "f", "g", "h"};
  req["logprobs"] = 20;
  std::unique_ptr<Connection> c = Connection::Open(s->port(), false, 4096);
  ASSERT_TRUE(c && c->Send(RawRequest("POST", "/v1/completions", req.dump())));
  EXPECT_TRUE(WaitFor([&] { return s->engine().Stats().running == 8; }, 10s));
  EXPECT_TRUE(s->WaitEngineIdle(60s));
  EXPECT_EQ(CancelledCount(*s), 8);
  EXPECT_TRUE(c->WaitClosed(10s));
}

TEST(HttpErrorsTest, Deadline) {
  ServerSetup setup = LongSetup(1);
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  json req = LongRequest(false);
  req["timeout"] = 0.2;
  ExpectError(PostJson(s->port(), "/v1/completions", req), 504, "per-request timeout");
  // Streamed: an error event, then [DONE].
  req["stream"] = true;
  std::optional<Response> r = PostJson(s->port(), "/v1/completions", req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  std::vector<std::string> events = SseData(r->body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[events.size() - 2])["error"]["code"], 504);
  EXPECT_TRUE(s->WaitEngineIdle());
}

TEST(HttpErrorsTest, ServerTimeoutOption) {
  ServerSetup setup = LongSetup(1);
  setup.front_end.request_timeout_ms = 200;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  ExpectError(PostJson(s->port(), "/v1/completions", LongRequest(false)), 504, "server timeout");
  ExpectError(PostJson(s->port(), "/generate",
                       {{"inputs", "x"},
                        {"parameters", {{"max_new_tokens", 1000000}, {"ignore_eos", true}}}}),
              504, "tgi server timeout");
}

TEST(HttpErrorsTest, ShutdownMidStream) {
  auto s = HttpTestServer::Start(LongSetup(2));
  ASSERT_TRUE(s);
  std::unique_ptr<Connection> c = Connection::Open(s->port());
  ASSERT_TRUE(c && c->Send(RawRequest("POST", "/v1/completions", LongRequest(true).dump())));
  ASSERT_TRUE(c->ReadHead());
  ASSERT_TRUE(c->ReadBodySome());
  const auto t0 = std::chrono::steady_clock::now();
  s->server().Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_TRUE(c->WaitClosed(5s));
  EXPECT_TRUE(s->WaitEngineIdle(10s));  // the stream's request was cancelled
  s->server().Shutdown();               // idempotent
  EXPECT_FALSE(Connection::Open(s->port()) && Call(s->port(), "GET", "/health").has_value());
}

TEST(HttpErrorsTest, EngineOutlivesServer) {
  // Busy streams when the server goes away: the engine still delivers events (and finally
  // drops its sinks) after the I/O side is gone. Nothing may touch the dead io_context.
  auto s = HttpTestServer::Start(LongSetup(8));
  ASSERT_TRUE(s);
  json req = LongRequest(true);
  req["prompt"] = {"a", "b", "c", "d"};
  req["n"] = 2;
  std::vector<std::unique_ptr<Connection>> clients;
  for (bool stream : {true, false}) {
    req["stream"] = stream;
    clients.push_back(Connection::Open(s->port()));
    ASSERT_TRUE(clients.back() &&
                clients.back()->Send(RawRequest("POST", "/v1/completions", req.dump())));
  }
  ASSERT_TRUE(WaitFor([&] { return s->engine().Stats().slots_used == 8; }, 10s));
  s->DestroyServer();
  EXPECT_TRUE(s->WaitEngineIdle(10s));
  for (auto& c : clients) EXPECT_TRUE(c->WaitClosed(5s));
}

TEST(HttpErrorsTest, Tls) {
  engine::testing::TempDir dir;
  const std::string key = (dir.path() / "key.pem").string();
  const std::string cert = (dir.path() / "cert.pem").string();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout " + key +
      " -out " + cert + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "no openssl to make a test certificate";
  ServerSetup setup;
  setup.front_end.tls_cert_file = cert;
  setup.front_end.tls_key_file = key;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  std::optional<Response> h = Call(s->port(), "GET", "/health", "", {}, /*tls=*/true);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  json req = {{"prompt", "secure"},
              {"max_tokens", 4},
              {"temperature", 0},
              {"ignore_eos", true},
              {"stream", true}};
  std::optional<Response> r = Call(s->port(), "POST", "/v1/completions", req.dump(), {}, true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(SseData(r->body).back(), "[DONE]");
  // Plain HTTP to a TLS port gets no answer, and the server lives on.
  std::unique_ptr<Connection> plain = Connection::Open(s->port());
  ASSERT_TRUE(plain && plain->Send(RawRequest("GET", "/health")));
  EXPECT_FALSE(plain->Read(3s).has_value());
  EXPECT_EQ(Call(s->port(), "GET", "/health", "", {}, true)->status, 200);

  // Bad TLS files: Start fails cleanly.
  FrontEndOptions bad;
  bad.tls_cert_file = cert;
  bad.tls_key_file = (dir.path() / "missing.pem").string();
  EXPECT_FALSE(HttpServer::Start(&s->state(), nullptr, bad).ok());
  bad.tls_key_file.clear();
  EXPECT_FALSE(HttpServer::Start(&s->state(), nullptr, bad).ok());
}

}  // namespace
}  // namespace mamba::server::http_testing
