// Sessions over HTTP (server/http/sessions.h), on a real engine with the state cache off: a
// conversation continued by session_id gives exactly what the whole conversation sent as one
// prompt gives (OpenAI and TGI, unary and streamed), forks diverge independently, a busy session
// answers 409, export/import round-trips, and every management route refuses unknown ids (404),
// bad ids (400), corrupt, truncated, oversized and other-model uploads (400).
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/http/http_test_server.h"

namespace mamba::server::http_testing {
namespace {

using ::mamba::testing::RunAlone;
using ::nlohmann::json;
using ::testing::HasSubstr;

constexpr int kTurnTokens = 6;

// A greedy turn of `max_tokens` that never stops early, on `session` ("" for none).
json TurnBody(json prompt, const std::string& session, int max_tokens = kTurnTokens) {
  json body = {{"prompt", std::move(prompt)},
               {"max_tokens", max_tokens},
               {"temperature", 0},
               {"ignore_eos", true}};
  if (!session.empty()) body["session_id"] = session;
  return body;
}

// `body` with `key` set to `value`.
json With(json body, const std::string& key, json value) {
  body[key] = std::move(value);
  return body;
}

// An OpenAI-shaped error with `status` whose param is `param` (null when "").
void ExpectOpenAiStatus(const std::optional<Response>& r, int status, const std::string& param) {
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, status) << r->body;
  const json e = r->Json()["error"];
  ASSERT_TRUE(e.is_object()) << r->body;
  EXPECT_TRUE(e["message"].is_string()) << r->body;
  if (param.empty()) {
    EXPECT_TRUE(e["param"].is_null()) << r->body;
  } else {
    EXPECT_EQ(e["param"], param) << r->body;
  }
}

ServerSetup SessionSetup() {
  ServerSetup s;
  s.num_slots = 4;
  s.engine.sessions.max_bytes = 64 << 20;
  s.engine.max_new_tokens_limit = 1 << 20;  // a turn that runs until its client goes
  return s;
}

class HttpSessionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = HttpTestServer::Start(SessionSetup()).release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }
  void TearDown() override { EXPECT_TRUE(server_->WaitEngineIdle()); }

  static int port() { return server_->port(); }

  static json Post(const std::string& path, const json& body, int status = 200) {
    std::optional<Response> r = PostJson(port(), path, body);
    EXPECT_TRUE(r.has_value());
    if (!r) return json();
    EXPECT_EQ(r->status, status) << path << " " << body.dump() << " -> " << r->body;
    return r->Json();
  }

  static Response Send(const std::string& method, const std::string& path,
                       const std::string& body = "") {
    std::optional<Response> r = Call(port(), method, path, body);
    EXPECT_TRUE(r.has_value()) << method << " " << path;
    return r ? *r : Response();
  }

  static std::vector<engine::TokenId> Encode(const std::string& text) {
    return server_->tokenizer().Encode(text).value();
  }

  // One OpenAI turn on `session`; checks the cold run of the whole history and returns the text.
  // `history` grows by the turn's prompt and completion.
  static std::string CheckedTurn(const std::string& session, const std::string& text,
                                 std::vector<engine::TokenId>* history) {
    const json r = Post("/v1/completions", TurnBody(text, session));
    const std::vector<engine::TokenId> added = Encode(text);
    history->insert(history->end(), added.begin(), added.end());
    const ::mamba::testing::AloneResult want = RunAlone(server_->engine(), *history, kTurnTokens);
    history->insert(history->end(), want.ids.begin(), want.ids.end());
    EXPECT_EQ(r["choices"][0]["text"], want.text) << session << ": " << text;
    EXPECT_EQ(r["session"], json({{"id", session}, {"tokens", history->size()}}));
    return r["choices"][0]["text"].is_string() ? r["choices"][0]["text"].get<std::string>() : "";
  }

  static HttpTestServer* server_;
};

HttpTestServer* HttpSessionsTest::server_ = nullptr;

TEST_F(HttpSessionsTest, ThreeTurnsEqualTheWholeConversationSentCold) {
  const std::vector<std::string> turns = {"The quick brown fox", " jumps over the", " lazy dog."};
  std::vector<engine::TokenId> history;
  for (const std::string& turn : turns) {
    const std::string got = CheckedTurn("conv-1", turn, &history);
    // The same conversation as one token-id prompt over the API (the state cache is off).
    std::vector<engine::TokenId> prompt(history.begin(), history.end() - kTurnTokens);
    EXPECT_EQ(Post("/v1/completions", TurnBody(prompt, ""))["choices"][0]["text"], got);
  }
  const json info = json::parse(Send("GET", "/v1/sessions/conv-1").body);
  EXPECT_EQ(info["id"], "conv-1");
  EXPECT_EQ(info["object"], "session");
  EXPECT_EQ(info["tokens"], history.size());
  EXPECT_EQ(info["in_use"], false);
  EXPECT_GT(info["bytes"].get<int64_t>(), 0);
  EXPECT_TRUE(info["created"].is_number_integer());
  EXPECT_GE(info["last_used"].get<int64_t>(), info["created"].get<int64_t>());
  // The default TTL is an hour.
  EXPECT_NEAR(info["expires_at"].get<double>() - info["last_used"].get<double>(), 3600, 2);
}

TEST_F(HttpSessionsTest, TokenIdTurnsAndEmptyTurns) {
  std::vector<engine::TokenId> history = Encode("In the beginning");
  json r = Post("/v1/completions", TurnBody(history, "ids"));
  ::mamba::testing::AloneResult want = RunAlone(server_->engine(), history, kTurnTokens);
  EXPECT_EQ(r["choices"][0]["text"], want.text);
  history.insert(history.end(), want.ids.begin(), want.ids.end());
  // "" and [] add nothing: the session continues from its own last token.
  for (const json& empty : {json(""), json::array()}) {
    r = Post("/v1/completions", TurnBody(empty, "ids"));
    want = RunAlone(server_->engine(), history, kTurnTokens);
    EXPECT_EQ(r["choices"][0]["text"], want.text) << empty.dump();
    // The usage counts the prompt the model read (the session's tokens), all but the last of
    // them restored.
    EXPECT_EQ(r["usage"]["prompt_tokens"], history.size());
    EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], history.size() - 1);
    history.insert(history.end(), want.ids.begin(), want.ids.end());
    EXPECT_EQ(r["session"]["tokens"], history.size());
  }
  // A new session needs a prompt.
  ExpectOpenAiStatus(PostJson(port(), "/v1/completions", TurnBody("", "ids-new")), 400, "prompt");
}

TEST_F(HttpSessionsTest, StreamedTurnCarriesTheSessionOnItsLastChunk) {
  std::vector<engine::TokenId> history = Encode("Once upon a time");
  json body = TurnBody("Once upon a time", "stream-1");
  body["stream"] = true;
  std::optional<Response> r = PostJson(port(), "/v1/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const ::mamba::testing::AloneResult want = RunAlone(server_->engine(), history, kTurnTokens);
  std::string text;
  int with_session = 0;
  for (const std::string& data : SseData(r->body)) {
    if (data == "[DONE]") continue;
    const json chunk = json::parse(data);
    text += chunk["choices"][0]["text"].get<std::string>();
    const bool finishes = !chunk["choices"][0]["finish_reason"].is_null();
    EXPECT_EQ(chunk.contains("session"), finishes) << data;
    if (finishes) {
      ++with_session;
      EXPECT_EQ(chunk["session"],
                json({{"id", "stream-1"}, {"tokens", history.size() + kTurnTokens}}));
    }
  }
  EXPECT_EQ(with_session, 1);
  EXPECT_EQ(text, want.text);
}

TEST_F(HttpSessionsTest, TgiTurnsGiveTheColdRunsTokens) {
  std::vector<engine::TokenId> history;
  const std::vector<std::string> turns = {"And God said", " Let there be"};
  for (size_t i = 0; i < turns.size(); ++i) {
    const bool stream = i == 1;
    json body = {{"inputs", turns[i]},
                 {"session_id", "tgi-1"},
                 {"parameters", {{"max_new_tokens", kTurnTokens}, {"details", true}}}};
    const std::vector<engine::TokenId> added = Encode(turns[i]);
    history.insert(history.end(), added.begin(), added.end());
    const ::mamba::testing::AloneResult want = RunAlone(server_->engine(), history, kTurnTokens);
    history.insert(history.end(), want.ids.begin(), want.ids.end());
    std::vector<engine::TokenId> ids;
    json session;
    if (!stream) {
      const json r = Post("/generate", body);
      for (const json& t : r["details"]["tokens"]) ids.push_back(t["id"].get<int>());
      EXPECT_EQ(r["generated_text"], want.text);
      session = r["session"];
    } else {
      std::optional<Response> r = PostJson(port(), "/generate_stream", body);
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
      for (const std::string& data : SseData(r->body)) {
        const json ev = json::parse(data);
        ids.push_back(ev["token"]["id"].get<int>());
        EXPECT_EQ(ev.contains("session"), !ev["generated_text"].is_null()) << data;
        if (ev.contains("session")) session = ev["session"];
      }
    }
    EXPECT_EQ(ids, want.ids) << "turn " << i;
    EXPECT_EQ(session, json({{"id", "tgi-1"}, {"tokens", history.size()}})) << "turn " << i;
  }
}

TEST_F(HttpSessionsTest, ForkThenDiverge) {
  std::vector<engine::TokenId> history;
  CheckedTurn("root", "The story begins", &history);
  std::optional<Response> fork = PostJson(port(), "/v1/sessions/root/fork", {{"id", "branch"}});
  ASSERT_TRUE(fork);
  EXPECT_EQ(fork->status, 201) << fork->body;
  EXPECT_EQ(fork->Json()["id"], "branch");
  EXPECT_EQ(fork->Json()["object"], "session");
  EXPECT_EQ(fork->Json()["tokens"], history.size());
  // The target exists now.
  std::optional<Response> again = PostJson(port(), "/v1/sessions/root/fork", {{"id", "branch"}});
  ExpectOpenAiStatus(again, 409, "");
  EXPECT_EQ(again->Json()["error"]["code"], "session_exists");
  // Without a body the server names the copy.
  const Response unnamed = Send("POST", "/v1/sessions/root/fork");
  EXPECT_EQ(unnamed.status, 201) << unnamed.body;
  const std::string generated = unnamed.Json()["id"].get<std::string>();
  EXPECT_FALSE(generated.empty());
  EXPECT_NE(generated, "root");
  EXPECT_EQ(Send("DELETE", "/v1/sessions/" + generated).status, 200);

  std::vector<engine::TokenId> branch = history;
  CheckedTurn("root", " in a castle", &history);
  CheckedTurn("branch", " at sea", &branch);
  CheckedTurn("branch", " and ends", &branch);
  CheckedTurn("root", " and ends", &history);
}

TEST_F(HttpSessionsTest, BusySessionIs409) {
  std::vector<engine::TokenId> history;
  CheckedTurn("busy", "Before", &history);
  // A stream of a million tokens holds the session until its client goes; its response head
  // comes after Submit took the session. It is read meanwhile, so that the server never cuts it
  // for falling behind.
  auto held = Connection::Open(port());
  ASSERT_TRUE(held);
  json body = TurnBody("Hold on", "busy", 1 << 20);
  body["stream"] = true;
  ASSERT_TRUE(held->Send(
      RawRequest("POST", "/v1/completions", body.dump(), {{"Content-Type", "application/json"}})));
  std::optional<Response> head = held->ReadHead();
  ASSERT_TRUE(head);
  ASSERT_EQ(head->status, 200);
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) held->ReadBodySome(100ms);
  });

  std::optional<Response> second = PostJson(port(), "/v1/completions", TurnBody("x", "busy"));
  ExpectOpenAiStatus(second, 409, "session_id");
  EXPECT_EQ(second->Json()["error"]["code"], "session_in_use");
  std::optional<Response> tgi =
      PostJson(port(), "/generate", {{"inputs", "x"}, {"session_id", "busy"}});
  ASSERT_TRUE(tgi);
  EXPECT_EQ(tgi->status, 409) << tgi->body;
  EXPECT_TRUE(tgi->Json()["error"].is_string()) << tgi->body;
  EXPECT_EQ(json::parse(Send("GET", "/v1/sessions/busy").body)["in_use"], true);
  // Importing over a session in use is refused the same way.
  std::vector<engine::TokenId> other;
  CheckedTurn("busy-other", "Other", &other);
  const Response import =
      Send("PUT", "/v1/sessions/busy/state", Send("GET", "/v1/sessions/busy-other/state").body);
  EXPECT_EQ(import.status, 409) << import.body;
  EXPECT_EQ(import.Json()["error"]["code"], "session_in_use");
  stop = true;
  reader.join();
  held->Close();  // cancels the turn: the session is left as it was
  EXPECT_TRUE(server_->WaitEngineIdle());
  // The cancelled turn left the session as it was before it.
  EXPECT_TRUE(WaitFor(
      [] { return json::parse(Send("GET", "/v1/sessions/busy").body)["in_use"] == false; }, 10s));
  EXPECT_EQ(json::parse(Send("GET", "/v1/sessions/busy").body)["tokens"], history.size());
  CheckedTurn("busy", " after", &history);
}

TEST_F(HttpSessionsTest, UnknownIdsAre404OnEveryRoute) {
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/sessions/nope"},
                                                        {"DELETE", "/v1/sessions/nope"},
                                                        {"POST", "/v1/sessions/nope/fork"},
                                                        {"GET", "/v1/sessions/nope/state"}}) {
    const Response r = Send(method, path);
    EXPECT_EQ(r.status, 404) << method << " " << path << ": " << r.body;
    EXPECT_EQ(r.Json()["error"]["type"], "not_found_error") << r.body;
    EXPECT_EQ(r.Json()["error"]["code"], "session_not_found") << r.body;
  }
}

TEST_F(HttpSessionsTest, BadIdsAre400BeforeAnythingElse) {
  const std::string longest(engine::kMaxSessionIdBytes, 'a');
  EXPECT_EQ(Send("GET", "/v1/sessions/" + longest).status, 404);  // valid, unknown
  for (const std::string& id :
       {longest + "a", std::string("a/b"), std::string(".."), std::string("."),
        std::string("a%20b"), std::string("a+b"), std::string("caf\xc3\xa9")}) {
    for (const auto& [method, suffix] :
         std::vector<std::pair<std::string, std::string>>{{"GET", ""},
                                                          {"DELETE", ""},
                                                          {"POST", "/fork"},
                                                          {"GET", "/state"},
                                                          {"PUT", "/state"}}) {
      const Response r = Send(method, "/v1/sessions/" + id + suffix, "x");
      EXPECT_EQ(r.status, 400) << method << " '" << id << suffix << "': " << r.body;
      EXPECT_EQ(r.Json()["error"]["type"], "invalid_request_error") << r.body;
    }
  }
  // A raw space breaks the request line itself: the transport's 400.
  std::optional<Response> space = Call(port(), "GET", "/v1/sessions/a b");
  ASSERT_TRUE(space);
  EXPECT_EQ(space->status, 400);
  // In a generation request's body, and as a fork target.
  for (const json& id : {json(""), json(longest + "a"), json("a/b"), json(".."), json(5)}) {
    ExpectOpenAiStatus(
        PostJson(port(), "/v1/completions", With(TurnBody("x", ""), "session_id", id)), 400,
        "session_id");
    std::optional<Response> tgi =
        PostJson(port(), "/generate", {{"inputs", "x"}, {"session_id", id}});
    ASSERT_TRUE(tgi);
    EXPECT_EQ(tgi->status, 422) << tgi->body;
  }
  std::vector<engine::TokenId> history;
  CheckedTurn("fork-src", "Hello", &history);
  ExpectOpenAiStatus(PostJson(port(), "/v1/sessions/fork-src/fork", {{"id", "a/b"}}), 400, "id");
  ExpectOpenAiStatus(PostJson(port(), "/v1/sessions/fork-src/fork", {{"id", 7}}), 400, "id");
}

TEST_F(HttpSessionsTest, GenerationRequestsASessionCannotServe) {
  // n > 1, several prompts, best_of > 1.
  ExpectOpenAiStatus(PostJson(port(), "/v1/completions", With(TurnBody("x", "n2"), "n", 2)), 400,
                     "n");
  ExpectOpenAiStatus(
      PostJson(port(), "/v1/completions", TurnBody(json::array({"a", "b"}), "multi")), 400,
      "prompt");
  ExpectOpenAiStatus(
      PostJson(port(), "/v1/completions",
               TurnBody(json::array({json::array({1, 2}), json::array({3})}), "multi")),
      400, "prompt");
  ExpectOpenAiStatus(PostJson(port(), "/v1/completions", With(TurnBody("x", "bo"), "best_of", 2)),
                     400, "best_of");
  // None of them created a session.
  for (const char* id : {"n2", "multi", "bo"}) {
    EXPECT_EQ(Send("GET", std::string("/v1/sessions/") + id).status, 404) << id;
  }
  // One prompt in a list is fine.
  EXPECT_EQ(Post("/v1/completions", TurnBody(json::array({"one"}), "single"))["session"]["id"],
            "single");
}

TEST_F(HttpSessionsTest, ListAndDelete) {
  std::vector<engine::TokenId> a, b;
  CheckedTurn("list-a", "First", &a);
  CheckedTurn("list-b", "Second", &b);
  const json list = json::parse(Send("GET", "/v1/sessions").body);
  EXPECT_EQ(list["object"], "list");
  std::map<std::string, json> by_id;
  for (const json& s : list["data"]) by_id[s["id"].get<std::string>()] = s;
  ASSERT_TRUE(by_id.count("list-a") && by_id.count("list-b")) << list.dump();
  EXPECT_EQ(by_id["list-a"]["tokens"], a.size());
  EXPECT_EQ(by_id["list-a"]["object"], "session");

  const Response del = Send("DELETE", "/v1/sessions/list-a");
  EXPECT_EQ(del.status, 200);
  EXPECT_EQ(del.Json(), json({{"id", "list-a"}, {"object", "session.deleted"}, {"deleted", true}}));
  EXPECT_EQ(Send("GET", "/v1/sessions/list-a").status, 404);
  EXPECT_EQ(Send("DELETE", "/v1/sessions/list-a").status, 404);
  // A deleted session starts afresh: its next turn is a new conversation.
  std::vector<engine::TokenId> fresh;
  CheckedTurn("list-a", "Third", &fresh);

  // Methods per route.
  for (const auto& [method, path, allow] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"POST", "/v1/sessions", "GET"},
           {"PATCH", "/v1/sessions/list-b", "GET, DELETE"},
           {"GET", "/v1/sessions/list-b/fork", "POST"},
           {"DELETE", "/v1/sessions/list-b/state", "GET, PUT"}}) {
    const Response r = Send(method, path);
    EXPECT_EQ(r.status, 405) << method << " " << path;
    EXPECT_EQ(r.Header("allow"), allow) << method << " " << path;
  }
}

TEST_F(HttpSessionsTest, ExportImportRoundTrip) {
  std::vector<engine::TokenId> history;
  CheckedTurn("orig", "A file of state", &history);
  const Response exported = Send("GET", "/v1/sessions/orig/state");
  ASSERT_EQ(exported.status, 200) << exported.body;
  EXPECT_EQ(exported.Header("content-type"), "application/octet-stream");
  EXPECT_EQ(exported.Header("content-disposition"), "attachment; filename=\"orig.safetensors\"");
  EXPECT_LE(static_cast<int64_t>(exported.body.size()),
            server_->engine().sessions()->max_file_bytes());

  const Response created = Send("PUT", "/v1/sessions/copy/state", exported.body);
  EXPECT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.Json()["id"], "copy");
  EXPECT_EQ(created.Json()["tokens"], history.size());
  const Response replaced = Send("PUT", "/v1/sessions/copy/state", exported.body);
  EXPECT_EQ(replaced.status, 200) << replaced.body;

  std::vector<engine::TokenId> copy = history;
  const std::string a = CheckedTurn("orig", " continues", &history);
  const std::string b = CheckedTurn("copy", " continues", &copy);
  EXPECT_EQ(a, b);
}

TEST_F(HttpSessionsTest, BadUploadsAre400) {
  std::vector<engine::TokenId> history;
  CheckedTurn("upload-src", "Something to export", &history);
  const std::string file = Send("GET", "/v1/sessions/upload-src/state").body;
  ASSERT_GT(file.size(), 64u);
  std::string corrupt = file;
  corrupt[corrupt.size() - 9] ^= 0x55;  // inside the data, past the header
  std::string header_corrupt = file;
  header_corrupt[12] ^= 0x55;
  for (const auto& [what, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"truncated", file.substr(0, file.size() / 2)},
           {"cut by one byte", file.substr(0, file.size() - 1)},
           {"corrupt data", corrupt},
           {"corrupt header", header_corrupt},
           {"not a file", "hello"},
           {"empty", ""}}) {
    const Response r = Send("PUT", "/v1/sessions/upload-dst/state", bytes);
    EXPECT_EQ(r.status, 400) << what << ": " << r.body;
    EXPECT_EQ(r.Json()["error"]["type"], "invalid_request_error") << what;
  }
  EXPECT_EQ(Send("GET", "/v1/sessions/upload-dst").status, 404);
  // Larger than any session file of this model: refused by the transport from its
  // Content-Length, before the body is read, with the reason.
  const int64_t limit = server_->engine().sessions()->max_file_bytes();
  const Response big = Send("PUT", "/v1/sessions/upload-dst/state",
                            std::string(static_cast<size_t>(limit) + 1, 'x'));
  EXPECT_EQ(big.status, 400) << big.body;
  EXPECT_EQ(big.Json()["error"]["code"], "session_file_too_large") << big.body;
  EXPECT_THAT(big.Json()["error"]["message"].get<std::string>(), HasSubstr(std::to_string(limit)));
}

TEST_F(HttpSessionsTest, SessionMetrics) {
  std::vector<engine::TokenId> history;
  CheckedTurn("metrics-1", "Counting", &history);
  const std::string text = Send("GET", "/metrics").body;
  EXPECT_GE(MetricValue(text, "mamba_sessions_live"), 1);
  EXPECT_GE(MetricValue(text, "mamba_session_bytes"), 1);
  EXPECT_GE(MetricValue(text, "mamba_sessions_created_total"), 1);
  EXPECT_GE(MetricValue(text, "mamba_state_cache_snapshot_bytes_total"), 1);
  EXPECT_GE(MetricValue(text, "mamba_state_snapshot_seconds_count"), 1);
  for (const char* name :
       {"mamba_sessions_expired_total", "mamba_sessions_deleted_total",
        "mamba_session_conflicts_total", "mamba_session_disk_bytes",
        "mamba_session_disk_writes_total", "mamba_session_disk_write_failures_total",
        "mamba_session_disk_evictions_total", "mamba_state_restore_seconds_count"}) {
    EXPECT_GE(MetricValue(text, name), 0) << name;
  }
  // A second turn restores the session's state.
  CheckedTurn("metrics-1", " again", &history);
  EXPECT_GE(MetricValue(Send("GET", "/metrics").body, "mamba_state_restore_seconds_count"), 1);
}

// A session file of one model is refused by a server of another, naming both fingerprints.
TEST(HttpSessionsOtherModel, ImportNamesBothFingerprints) {
  auto a = HttpTestServer::Start(SessionSetup());
  ServerSetup other = SessionSetup();
  other.perturbed_model = true;
  auto b = HttpTestServer::Start(other);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(PostJson(a->port(), "/v1/completions", TurnBody("Hi", "m"))->status, 200);
  std::optional<Response> file = Call(a->port(), "GET", "/v1/sessions/m/state");
  ASSERT_TRUE(file);
  ASSERT_EQ(file->status, 200);
  std::optional<Response> r = Call(b->port(), "PUT", "/v1/sessions/m/state", file->body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  const std::string message = r->Json()["error"]["message"];
  const std::string fa = a->engine().backend().info().model_fingerprint;
  const std::string fb = b->engine().backend().info().model_fingerprint;
  ASSERT_NE(fa, fb);
  EXPECT_THAT(message, HasSubstr(fa));
  EXPECT_THAT(message, HasSubstr(fb));
}

TEST(HttpSessionsOff, EveryRouteSaysSessionsAreOff) {
  auto s = HttpTestServer::Start();  // --session-bytes 0
  ASSERT_TRUE(s);
  ExpectOpenAiStatus(PostJson(s->port(), "/v1/completions", TurnBody("x", "s")), 400, "session_id");
  std::optional<Response> tgi =
      PostJson(s->port(), "/generate", {{"inputs", "x"}, {"session_id", "s"}});
  ASSERT_TRUE(tgi);
  EXPECT_EQ(tgi->status, 422) << tgi->body;
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/sessions"},
                                                        {"GET", "/v1/sessions/s"},
                                                        {"DELETE", "/v1/sessions/s"},
                                                        {"POST", "/v1/sessions/s/fork"},
                                                        {"GET", "/v1/sessions/s/state"},
                                                        {"PUT", "/v1/sessions/s/state"}}) {
    std::optional<Response> r = Call(s->port(), method, path, "x");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << method << " " << path << ": " << r->body;
    EXPECT_THAT(r->Json()["error"]["message"].get<std::string>(), HasSubstr("sessions are off"));
  }
  // Generation without a session is unaffected.
  EXPECT_EQ(PostJson(s->port(), "/v1/completions", TurnBody("x", ""))->status, 200);
}

TEST(HttpSessionsAuth, RoutesNeedTheKey) {
  ServerSetup setup = SessionSetup();
  setup.front_end.api_key = "sekret";
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/sessions"},
                                                        {"GET", "/v1/sessions/x"},
                                                        {"DELETE", "/v1/sessions/x"},
                                                        {"POST", "/v1/sessions/x/fork"},
                                                        {"GET", "/v1/sessions/x/state"},
                                                        {"PUT", "/v1/sessions/x/state"}}) {
    std::optional<Response> r = Call(s->port(), method, path, "x");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << method << " " << path;
  }
  std::optional<Response> ok =
      Call(s->port(), "GET", "/v1/sessions", "", {{"Authorization", "Bearer sekret"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

}  // namespace
}  // namespace mamba::server::http_testing
