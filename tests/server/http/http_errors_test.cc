// The HTTP front end under bad input and bad clients: malformed requests of every kind (the
// server answers and stays up), auth, overload (429), client disconnects and slow readers
// (requests cancelled, slots freed), deadlines, shutdown mid-stream, and TLS.
#include <cstdlib>
#include <fstream>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/request_validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/api_error.h"
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

// An error response on an OpenAI route: the status and OpenAI's error object {"error":
// {"message", "type", "param", "code"}}; `param` is checked when given ("" = null).
void ExpectError(const std::optional<Response>& r, int status, const std::string& what = "",
                 std::optional<std::string> param = std::nullopt) {
  ASSERT_TRUE(r.has_value()) << what;
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  json j = r->Json();
  ASSERT_TRUE(j.is_object() && j.contains("error") && j["error"].is_object())
      << what << ": " << r->body;
  const json& e = j["error"];
  EXPECT_TRUE(e["message"].is_string()) << what;
  EXPECT_TRUE(e["type"].is_string()) << what;
  if (status == 400) {
    EXPECT_EQ(e["type"], "invalid_request_error") << what;
  }
  ASSERT_TRUE(e.contains("param") && e.contains("code")) << what << ": " << r->body;
  EXPECT_TRUE(e["param"].is_null() || e["param"].is_string()) << what;
  EXPECT_TRUE(e["code"].is_null() || e["code"].is_string()) << what;
  if (param) {
    if (param->empty()) {
      EXPECT_TRUE(e["param"].is_null()) << what << ": " << r->body;
    } else {
      EXPECT_EQ(e["param"], *param) << what << ": " << r->body;
    }
  }
}

// An error response on a TGI route: {"error": "...", "error_type": ...}.
void ExpectTgiError(const std::optional<Response>& r, int status, const std::string& error_type,
                    const std::string& what = "") {
  ASSERT_TRUE(r.has_value()) << what;
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  json j = r->Json();
  ASSERT_TRUE(j.is_object()) << what << ": " << r->body;
  EXPECT_TRUE(j["error"].is_string()) << what << ": " << r->body;
  EXPECT_EQ(j["error_type"], error_type) << what << ": " << r->body;
}

double CancelledCount(HttpTestServer& s) {
  return MetricValue(s.metrics().Render(s.engine().Stats()),
                     "mamba_request_completions_total{reason=\"cancelled\"}");
}

TEST(HttpErrorsTest, MalformedInputIsAnsweredAndHarmless) {
  ServerSetup setup;
  setup.strict_model_name = true;  // an unknown model is 404 (not strict: any name serves)
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
  ExpectError(post("/v1/completions", R"({"prompt": "x", "best_of": 0})"), 400, "best_of");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "logit_bias": [1]})"), 400, "logit_bias");
  ExpectError(post("/v1/completions", R"({"max_tokens": 3})"), 400, "no prompt");
  ExpectError(post("/v1/completions", R"({"prompt": ""})"), 400, "empty prompt");
  ExpectError(post("/v1/completions", R"({"prompt": []})"), 400, "empty array");
  ExpectError(post("/v1/completions", "{\"prompt\": \"bad \xff\xfe utf8\"}"), 400, "invalid UTF-8");
  ExpectError(post("/v1/completions", R"({"prompt": "x", "stream_options": 3})"), 400,
              "stream_options");
  // TGI routes answer every invalid request with 422 and TGI's shape.
  ExpectTgiError(post("/generate", R"({"inputs": ["x"]})"), 422, "validation", "tgi inputs");
  ExpectTgiError(post("/generate", R"({"inputs": "x", "parameters": 1})"), 422, "validation",
                 "tgi parameters");
  ExpectTgiError(post("/generate", R"({"parameters": {}})"), 422, "validation", "tgi no inputs");
  ExpectTgiError(post("/generate", "{\"inputs\": "), 422, "validation", "tgi truncated JSON");
  // Well-formed but out of range: 400 too on OpenAI routes (as OpenAI and vLLM), naming the
  // field in OpenAI's spelling.
  for (const auto& [bad, param] : std::vector<std::pair<std::string, std::string>>{
           {R"("temperature": -1)", "temperature"},
           {R"("top_p": 0)", "top_p"},
           {R"("top_p": 1.5)", "top_p"},
           {R"("n": 0)", "n"},
           {R"("max_tokens": 0)", "max_tokens"},
           {R"("max_tokens": 100000000)", "max_tokens"},
           {R"("top_k": -5)", "top_k"},
           {R"("min_p": 2)", "min_p"},
           {R"("presence_penalty": 3)", "presence_penalty"},
           {R"("logprobs": 21)", "logprobs"},
           {R"("repetition_penalty": 0)", "repetition_penalty"},
           {R"("temperature": 1e300)", "temperature"},
           {R"("n": 1000)", "n"},
           {R"("min_tokens": 50, "max_tokens": 5)", "min_tokens"},
           {R"("timeout": -1)", "timeout"},
           {R"("stop_token_ids": [60000])", "stop_token_ids"}}) {
    ExpectError(post("/v1/completions", std::string(R"({"prompt": "x", )") + bad + "}"), 400, bad,
                param);
  }
  ExpectError(post("/v1/completions", R"({"prompt": [1, 60000]})"), 400, "id beyond vocab",
              "prompt");
  ExpectError(post("/v1/completions", R"({"prompt": [1, -1]})"), 400, "negative id", "prompt");
  ExpectTgiError(post("/generate", R"({"inputs": "x", "parameters": {"temperature": 0}})"), 422,
                 "validation", "tgi t=0");
  ExpectTgiError(post("/generate", R"({"inputs": "x", "parameters": {"top_p": 1.5}})"), 422,
                 "validation", "tgi top_p");
  ExpectTgiError(post("/generate_stream", R"({"inputs": "x", "parameters": {"top_n_tokens": 21}})"),
                 422, "validation", "tgi stream top_n_tokens");
  // 404 / 405.
  ExpectError(post("/v1/completions", R"({"prompt": "x", "model": "gpt-4"})"), 404, "model");
  ExpectError(Call(port, "GET", "/nope"), 404, "path");
  ExpectError(Call(port, "POST", "/v1/chat/completions", "{}"), 404, "chat");
  std::optional<Response> wrong = Call(port, "GET", "/v1/completions");
  ExpectError(wrong, 405, "method");
  EXPECT_EQ(wrong->Header("allow"), "POST");
  // 413: a body over max_body_bytes (the transport's limit).
  ExpectError(post("/v1/completions", R"({"prompt": ")" + std::string(70 * 1024, 'a') + "\"}"), 413,
              "body");
  // A prompt over max_prompt_tokens is an invalid request: 400 with OpenAI's
  // context_length_exceeded (422 on TGI routes).
  std::string many = "[";
  for (int i = 0; i < 101; ++i) many += (i ? ",1" : "1");
  std::optional<Response> long_ids = post("/v1/completions", R"({"prompt": )" + many + "]}");
  ExpectError(long_ids, 400, "prompt ids", "prompt");
  EXPECT_EQ(long_ids->Json()["error"]["code"], "context_length_exceeded");
  std::string words;
  for (int i = 0; i < 150; ++i) words += " word";
  ExpectError(post("/v1/completions", R"({"prompt": ")" + words + "\"}"), 400, "prompt text",
              "prompt");
  ExpectTgiError(post("/generate", R"({"inputs": ")" + words + "\"}"), 422, "validation",
                 "tgi prompt text");
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
  ExpectError(PostJson(s->port(), "/v1/completions", {{"prompt", "text"}}), 400, "text prompt",
              "prompt");
  ExpectError(PostJson(s->port(), "/v1/completions", {{"prompt", {1, 2}}, {"stop", "x"}}), 400,
              "stop", "stop");
  ExpectTgiError(PostJson(s->port(), "/generate", {{"inputs", "text"}}), 422, "validation", "tgi");
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
  EXPECT_EQ(none->Json()["error"]["type"], "authentication_error");
  EXPECT_EQ(none->Json()["error"]["code"], "invalid_api_key");
  ExpectTgiError(Call(s->port(), "POST", "/generate", R"({"inputs": "x"})"), 401, "authentication",
                 "tgi no key");
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
  EXPECT_EQ(c->Json()["error"]["type"], "rate_limit_error");
  std::optional<Response> tgi = PostJson(s->port(), "/generate", {{"inputs", "x"}});
  ExpectTgiError(tgi, 429, "overloaded", "tgi queue full");
  EXPECT_EQ(tgi->Header("retry-after"), "1");
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
  EXPECT_EQ(json::parse(events[events.size() - 2])["error"]["type"], "timeout_error");
  EXPECT_TRUE(s->WaitEngineIdle());
}

TEST(HttpErrorsTest, ServerTimeoutOption) {
  ServerSetup setup = LongSetup(1);
  setup.front_end.request_timeout_ms = 200;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  ExpectError(PostJson(s->port(), "/v1/completions", LongRequest(false)), 504, "server timeout");
  ExpectTgiError(PostJson(s->port(), "/generate",
                          {{"inputs", "x"},
                           {"parameters", {{"max_new_tokens", 1000000}, {"ignore_eos", true}}}}),
                 504, "incomplete_generation", "tgi server timeout");
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

// The one mapping from absl codes to HTTP statuses, per API family.
TEST(HttpErrorsTest, OneStatusPerCode) {
  using absl::StatusCode;
  const std::vector<std::tuple<StatusCode, int, int>> table = {
      {StatusCode::kInvalidArgument, 400, 422},   {StatusCode::kFailedPrecondition, 400, 422},
      {StatusCode::kOutOfRange, 400, 422},        {StatusCode::kUnauthenticated, 401, 401},
      {StatusCode::kPermissionDenied, 403, 403},  {StatusCode::kNotFound, 404, 404},
      {StatusCode::kAlreadyExists, 409, 409},     {StatusCode::kAborted, 409, 409},
      {StatusCode::kResourceExhausted, 429, 429}, {StatusCode::kUnimplemented, 501, 501},
      {StatusCode::kUnavailable, 503, 503},       {StatusCode::kCancelled, 503, 503},
      {StatusCode::kDeadlineExceeded, 504, 504},  {StatusCode::kInternal, 500, 500},
      {StatusCode::kUnknown, 500, 500},           {StatusCode::kDataLoss, 500, 500},
  };
  for (const auto& [code, openai, tgi] : table) {
    SCOPED_TRACE(absl::StatusCodeToString(code));
    EXPECT_EQ(http::HttpStatus(code, http::ApiStyle::kOpenAi), openai);
    EXPECT_EQ(http::HttpStatus(code, http::ApiStyle::kTgi), tgi);
  }
  // The engine's field becomes OpenAI's spelling; its reason becomes OpenAI's code.
  const http::ApiError e = http::ToApiError(
      engine::InvalidField("max_new_tokens", "too many", engine::kContextLengthExceeded),
      http::ApiStyle::kOpenAi);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_EQ(e.code, "context_length_exceeded");
  const json body = json::parse(http::ErrorJson(e));
  EXPECT_EQ(body, json::parse(R"({"error": {"message": "too many", "type": "invalid_request_error",
                                  "param": "max_tokens", "code": "context_length_exceeded"}})"));
  // A session in use (the only Aborted the engine gives) has its own OpenAI code.
  const http::ApiError busy =
      http::ToApiError(absl::AbortedError("session 'x' is in use"), http::ApiStyle::kOpenAi);
  EXPECT_EQ(busy.status, 409);
  EXPECT_EQ(busy.code, http::kSessionInUse);
  EXPECT_EQ(http::ToApiError(absl::AbortedError("in use"), http::ApiStyle::kTgi).status, 409);
  const json tgi = json::parse(http::ErrorJson(
      http::ToApiError(absl::ResourceExhaustedError("the queue is full"), http::ApiStyle::kTgi)));
  EXPECT_EQ(tgi, json::parse(R"({"error": "the queue is full", "error_type": "overloaded"})"));
}

// Each route answers errors in its family's shape: OpenAI's object on /v1/*, /tokenize,
// /detokenize, /metrics and unknown paths; TGI's on /generate and /generate_stream.
TEST(HttpErrorsTest, EachRouteAnswersInItsShape) {
  ServerSetup setup;
  setup.strict_model_name = true;  // an unknown model is 404 (not strict: any name serves)
  setup.engine.max_prompt_tokens = 100;
  setup.front_end.max_body_bytes = 64 * 1024;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  std::optional<Response> model =
      PostJson(port, "/v1/completions", {{"prompt", "x"}, {"model", "gpt-4"}});
  ExpectError(model, 404, "completions model", "model");
  EXPECT_EQ(model->Json()["error"]["type"], "not_found_error");
  EXPECT_EQ(model->Json()["error"]["code"], "model_not_found");
  std::optional<Response> card = Call(port, "GET", "/v1/models/gpt-4");
  ExpectError(card, 404, "model card", "");
  EXPECT_EQ(card->Json()["error"]["code"], "model_not_found");
  ExpectError(Call(port, "POST", "/v1/models"), 405, "models method", "");
  ExpectError(PostJson(port, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 0}}), 400,
              "completions", "max_tokens");
  ExpectError(
      PostJson(port, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 0}, {"stream", true}}),
      400, "completions stream", "max_tokens");
  ExpectError(PostJson(port, "/tokenize", {{"text", "x"}}), 400, "tokenize", "prompt");
  ExpectError(PostJson(port, "/detokenize", {{"tokens", {1, 999999}}}), 400, "detokenize",
              "tokens");
  ExpectError(PostJson(port, "/detokenize", {{"tokens", "x"}}), 400, "detokenize type", "tokens");
  ExpectError(Call(port, "GET", "/nope"), 404, "unknown path", "");
  // Session routes (sessions are off here): OpenAI's shape, the transport's 413 and 405 too.
  ExpectError(Call(port, "GET", "/v1/sessions"), 400, "sessions off", "");
  ExpectError(Call(port, "GET", "/v1/sessions/a..b/state"), 400, "sessions off", "");
  ExpectError(Call(port, "GET", "/v1/sessions/a/b"), 400, "bad session id", "");
  ExpectError(Call(port, "PATCH", "/v1/sessions/x"), 405, "session method", "");
  ExpectError(Call(port, "PUT", "/v1/sessions/x/state", std::string(70 * 1024, 'a')), 413,
              "session upload without sessions", "");
  for (const char* path : {"/generate", "/generate_stream"}) {
    SCOPED_TRACE(path);
    ExpectTgiError(PostJson(port, path, {{"inputs", "x"}, {"parameters", {{"top_k", -3}}}}), 422,
                   "validation");
    ExpectTgiError(PostJson(port, path, {{"inputs", "x"}, {"parameters", {{"max_new_tokens", 0}}}}),
                   422, "validation");
    ExpectTgiError(Call(port, "GET", path), 405, "validation");
    // Refused by the transport before any handler: still in the route's shape.
    ExpectTgiError(
        Call(port, "POST", path, R"({"inputs": ")" + std::string(70 * 1024, 'a') + "\"}"), 413,
        "validation");
  }
  // Draining: 503 in each shape.
  s->state().health = Health::kDraining;
  std::optional<Response> draining = PostJson(port, "/v1/completions", {{"prompt", "x"}});
  ExpectError(draining, 503, "draining", "");
  EXPECT_EQ(draining->Json()["error"]["type"], "service_unavailable_error");
  ExpectTgiError(PostJson(port, "/generate", {{"inputs", "x"}}), 503, "overloaded", "tgi draining");
  s->state().health = Health::kServing;
}

}  // namespace
}  // namespace mamba::server::http_testing
