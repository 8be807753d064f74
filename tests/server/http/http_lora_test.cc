// LoRA adapters over HTTP (issue 15): vLLM's load / unload routes and every error they give,
// selection by OpenAI `model` and TGI `adapter_id` (the adapter's output, not the base model's,
// and the same as on a server that loaded it before serving anything), /v1/models, the metrics,
// and a bounded soak: clients on three adapters and the base model while a fourth adapter is
// loaded and unloaded again and again.
#include <atomic>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/http/http_test_server.h"
#include "tests/server/lora_fixtures.h"
#include "tests/support/temp_dir.h"

namespace mamba::server::http_testing {
namespace {

using ::mamba::testing::TempDir;
using ::mamba::testing::WriteDoraAdapter;
using ::mamba::testing::WriteTinyAdapter;
using ::nlohmann::json;

std::optional<Response> Load(int port, const std::string& name, const std::string& path,
                             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return PostJson(port, "/v1/load_lora_adapter", {{"lora_name", name}, {"lora_path", path}},
                  headers);
}

std::optional<Response> Unload(int port, const std::string& name) {
  return PostJson(port, "/v1/unload_lora_adapter", {{"lora_name", name}});
}

// An OpenAI error: the status, and the message / param when given.
void ExpectError(const std::optional<Response>& r, int status, const std::string& what,
                 const std::string& message_part = "", const char* param = nullptr) {
  ASSERT_TRUE(r.has_value()) << what;
  EXPECT_EQ(r->status, status) << what << ": " << r->body;
  const json j = r->Json();
  ASSERT_TRUE(j.contains("error") && j["error"].is_object()) << what << ": " << r->body;
  if (!message_part.empty()) {
    EXPECT_NE(j["error"]["message"].get<std::string>().find(message_part), std::string::npos)
        << what << ": " << r->body;
  }
  if (param) {
    EXPECT_EQ(j["error"]["param"], param) << what << ": " << r->body;
  }
}

json Greedy(const std::string& model, const std::string& prompt = "In the beginning") {
  json j = {{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}};
  if (!model.empty()) j["model"] = model;
  return j;
}

// The greedy completion's text under `model` ("" = the base model); fails the test unless 200.
std::string Complete(int port, const std::string& model,
                     const std::string& prompt = "In the beginning") {
  std::optional<Response> r = PostJson(port, "/v1/completions", Greedy(model, prompt));
  EXPECT_TRUE(r.has_value());
  if (!r) return "";
  EXPECT_EQ(r->status, 200) << model << ": " << r->body;
  const json j = r->Json();
  if (r->status != 200) return "";
  EXPECT_EQ(j["model"], model.empty() ? kModelName : model);
  return j["choices"][0]["text"].get<std::string>();
}

ServerSetup Strict(int max_loras = 8) {
  ServerSetup s;
  s.strict_model_name = true;
  s.engine.lora.max_loras = max_loras;
  return s;
}

TEST(HttpLoraTest, LoadAndUnloadRoutes) {
  TempDir dir;
  auto s = HttpTestServer::Start(Strict(2));
  ASSERT_TRUE(s);
  const int port = s->port();
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1).string();
  const std::string b = WriteTinyAdapter(dir.path(), "b", 2).string();
  const std::string c = WriteTinyAdapter(dir.path(), "c", 3).string();

  std::optional<Response> ok = Load(port, "a", a);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_EQ(ok->body, "Success: LoRA adapter 'a' added successfully.");
  ExpectError(Load(port, "a", b), 409, "the name is taken", "a", "lora_name");
  ASSERT_EQ(Load(port, "b", b)->status, 200);
  // --max-loras 2: a third is refused until one goes.
  ExpectError(Load(port, "c", c), 429, "max_loras");
  std::optional<Response> gone = Unload(port, "b");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 200) << gone->body;
  EXPECT_EQ(gone->body, "Success: LoRA adapter 'b' removed successfully.");
  ASSERT_TRUE(WaitFor([&] { return s->engine().adapters()->resident() == 1; }, 10s));
  EXPECT_EQ(Load(port, "c", c)->status, 200);
  ExpectError(Unload(port, "b"), 404, "unloaded twice", "b", "lora_name");
  ExpectError(Unload(port, "nope"), 404, "never loaded", "nope", "lora_name");
  // Unloaded: the name selects nothing any more (strict names).
  ExpectError(PostJson(port, "/v1/completions", Greedy("b")), 404, "unloaded adapter", "b",
              "model");
  EXPECT_FALSE(Complete(port, "c").empty());
}

TEST(HttpLoraTest, LoadErrors) {
  TempDir dir;
  auto s = HttpTestServer::Start(Strict());
  ASSERT_TRUE(s);
  const int port = s->port();
  auto post = [&](const std::string& path, const std::string& body) {
    return Call(port, "POST", path, body, {{"Content-Type", "application/json"}});
  };
  for (const char* route : {"/v1/load_lora_adapter", "/v1/unload_lora_adapter"}) {
    ExpectError(post(route, "{not json"), 400, route);
    ExpectError(post(route, "[1, 2]"), 400, route);
    ExpectError(post(route, "{}"), 400, route, "lora_name", "lora_name");
    ExpectError(post(route, R"({"lora_name": 5, "lora_path": "/x"})"), 400, route, "lora_name",
                "lora_name");
    ExpectError(post(route, R"({"lora_name": "", "lora_path": "/x"})"), 400, route, "lora_name",
                "lora_name");
    std::optional<Response> get = Call(port, "GET", route);
    ASSERT_TRUE(get);
    EXPECT_EQ(get->status, 405) << route;
  }
  ExpectError(post("/v1/load_lora_adapter", R"({"lora_name": "x"})"), 400, "no path", "lora_path",
              "lora_path");
  ExpectError(Load(port, "x", (dir.path() / "missing").string()), 404, "no such directory", "",
              "lora_path");
  // The loader's refusal, with the adapter's name and the reason.
  const std::string dora = WriteDoraAdapter(dir.path(), "dora").string();
  std::optional<Response> bad = Load(port, "my-dora", dora);
  ExpectError(bad, 400, "use_dora", "use_dora");
  ExpectError(bad, 400, "use_dora", "my-dora");
  // An adapter of a model with other shapes.
  engine::ModelConfig wider = ::mamba::testing::TinyModel(false)->config();
  wider.intermediate_size *= 2;
  const std::string other =
      ::mamba::testing::WriteAdapterFor(wider, dir.path(), "other", 5).string();
  ExpectError(Load(port, "other", other), 400, "shapes of another model", "other");
  // The served model's own name cannot name an adapter.
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1).string();
  ExpectError(Load(port, kModelName, a), 400, "the base model's name", kModelName, "lora_name");
  ExpectError(Load(port, "bad name!", a), 400, "a malformed name", "bad name!");
  // Nothing was loaded by any of these.
  EXPECT_TRUE(s->engine().adapters()->List().empty());
  EXPECT_EQ(s->engine().adapters()->resident(), 0);
}

TEST(HttpLoraTest, RankAboveTheLimitIsRefused) {
  TempDir dir;
  ServerSetup setup = Strict();
  setup.engine.lora.load.max_rank = 2;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  ExpectError(Load(s->port(), "r4", WriteTinyAdapter(dir.path(), "r4", 1).string()), 400,
              "rank 4 > 2", "r4");
}

TEST(HttpLoraTest, ApiKeyIsRequired) {
  TempDir dir;
  ServerSetup setup = Strict();
  setup.front_end.api_key = "sekrit";
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1).string();
  ExpectError(Load(s->port(), "a", a), 401, "no key");
  ExpectError(Load(s->port(), "a", a, {{"Authorization", "Bearer wrong"}}), 401, "wrong key");
  std::optional<Response> unload =
      PostJson(s->port(), "/v1/unload_lora_adapter", {{"lora_name", "a"}});
  ExpectError(unload, 401, "unload without key");
  EXPECT_TRUE(s->engine().adapters()->List().empty());
  std::optional<Response> ok = Load(s->port(), "a", a, {{"Authorization", "Bearer sekrit"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  std::optional<Response> out = PostJson(s->port(), "/v1/unload_lora_adapter", {{"lora_name", "a"}},
                                         {{"Authorization", "Bearer sekrit"}});
  ASSERT_TRUE(out);
  EXPECT_EQ(out->status, 200) << out->body;
}

// OpenAI `model` and TGI `adapter_id` select the adapter: its greedy text differs from the base
// model's and equals a server's that loaded the adapter before serving anything.
TEST(HttpLoraTest, SelectionGivesTheAdaptersOutput) {
  TempDir dir;
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1).string();
  const std::string b = WriteTinyAdapter(dir.path(), "b", 2).string();
  std::string fresh_a, fresh_b;
  {
    auto fresh = HttpTestServer::Start(Strict());
    ASSERT_TRUE(fresh);
    ASSERT_EQ(Load(fresh->port(), "a", a)->status, 200);
    ASSERT_EQ(Load(fresh->port(), "b", b)->status, 200);
    fresh_a = Complete(fresh->port(), "a");
    fresh_b = Complete(fresh->port(), "b");
  }
  auto s = HttpTestServer::Start(Strict());
  ASSERT_TRUE(s);
  const int port = s->port();
  const std::string base = Complete(port, "");
  EXPECT_EQ(Complete(port, kModelName), base);
  ASSERT_EQ(Load(port, "a", a)->status, 200);
  const std::string with_a = Complete(port, "a");
  EXPECT_NE(with_a, base);
  EXPECT_EQ(with_a, fresh_a);
  ASSERT_EQ(Load(port, "b", b)->status, 200);
  EXPECT_EQ(Complete(port, "b"), fresh_b);
  EXPECT_NE(fresh_a, fresh_b);
  EXPECT_EQ(Complete(port, ""), base);  // the base model is unchanged by loaded adapters

  // A batch mixing them: n = 1 each, submitted together, each its own text.
  std::vector<std::thread> threads;
  std::vector<std::string> got(6);
  const std::vector<std::string> models = {"a", "", "b", "a", "b", ""};
  for (size_t i = 0; i < models.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = Complete(port, models[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < models.size(); ++i) {
    EXPECT_EQ(got[i], models[i] == "a" ? fresh_a : models[i] == "b" ? fresh_b : base) << i;
  }

  // TGI: parameters.adapter_id, greedy by default.
  auto tgi = [&](const json& parameters) {
    return PostJson(port, "/generate",
                    {{"inputs", "In the beginning"}, {"parameters", parameters}});
  };
  std::optional<Response> t = tgi({{"max_new_tokens", 8}, {"adapter_id", "a"}});
  ASSERT_TRUE(t);
  ASSERT_EQ(t->status, 200) << t->body;
  EXPECT_EQ(t->Json()["generated_text"], fresh_a);
  t = tgi({{"max_new_tokens", 8}, {"adapter_id", ""}});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->Json()["generated_text"], base) << t->body;
  t = tgi({{"max_new_tokens", 8}, {"adapter_id", "nope"}});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->status, 404) << t->body;
  EXPECT_TRUE(t->Json()["error"].is_string()) << t->body;
  EXPECT_NE(t->body.find("nope"), std::string::npos) << t->body;
  // Streamed too.
  std::optional<Response> st =
      PostJson(port, "/generate_stream",
               {{"inputs", "In the beginning"},
                {"parameters", {{"max_new_tokens", 8}, {"adapter_id", "b"}}}});
  ASSERT_TRUE(st);
  ASSERT_EQ(st->status, 200) << st->body;
  const std::vector<std::string> events = SseData(st->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(json::parse(events.back())["generated_text"], fresh_b);

  // Unknown names: 404 model_not_found with strict names.
  ExpectError(PostJson(port, "/v1/completions", Greedy("nope")), 404, "unknown model", "nope",
              "model");
}

// Without --strict-model-name any `model` selects the base model (as before adapters) until an
// adapter is loaded; from then on an unknown name is 404, so that a misspelt or unloaded
// adapter's name never silently runs the base model, even once no adapter is left.
TEST(HttpLoraTest, NamesTurnStrictOnceAnAdapterIsLoaded) {
  TempDir dir;
  auto s = HttpTestServer::Start();
  ASSERT_TRUE(s);
  const int port = s->port();
  const std::string base = Complete(port, "");
  std::optional<Response> other = PostJson(port, "/v1/completions", Greedy("whatever"));
  ASSERT_TRUE(other);
  ASSERT_EQ(other->status, 200) << other->body;
  EXPECT_EQ(other->Json()["choices"][0]["text"], base);
  EXPECT_EQ(other->Json()["model"], kModelName);
  // A failed load changes nothing.
  ExpectError(Load(port, "a", (dir.path() / "missing").string()), 404, "no directory");
  EXPECT_EQ(PostJson(port, "/v1/completions", Greedy("whatever"))->status, 200);

  ASSERT_EQ(Load(port, "a", WriteTinyAdapter(dir.path(), "a", 1).string())->status, 200);
  EXPECT_NE(Complete(port, "a"), base);
  ExpectError(PostJson(port, "/v1/completions", Greedy("whatever")), 404, "unknown", "whatever",
              "model");
  ASSERT_EQ(Unload(port, "a")->status, 200);
  ExpectError(PostJson(port, "/v1/completions", Greedy("a")), 404, "unloaded", "a", "model");
  EXPECT_EQ(Complete(port, kModelName), base);
  EXPECT_EQ(Complete(port, ""), base);
}

// A session stays on the adapter (or base model) its first turn ran under: a turn under another
// is 400 naming `model`, and the session goes on under its own.
TEST(HttpLoraTest, SessionsStayOnTheirAdapter) {
  TempDir dir;
  ServerSetup setup = Strict();
  setup.engine.sessions.max_bytes = 64 << 20;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  ASSERT_EQ(Load(port, "a", WriteTinyAdapter(dir.path(), "a", 1).string())->status, 200);
  ASSERT_EQ(Load(port, "b", WriteTinyAdapter(dir.path(), "b", 2).string())->status, 200);
  auto turn = [&](const std::string& model, const std::string& session) {
    json body = Greedy(model, " and");
    body["session_id"] = session;
    return PostJson(port, "/v1/completions", body);
  };
  ASSERT_EQ(turn("a", "chat")->status, 200);
  ExpectError(turn("b", "chat"), 400, "another adapter", "", "model");
  ExpectError(turn("", "chat"), 400, "the base model", "", "model");
  std::optional<Response> again = turn("a", "chat");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  ASSERT_EQ(turn("", "plain")->status, 200);
  ExpectError(turn("a", "plain"), 400, "an adapter on a base session", "", "model");
}

TEST(HttpLoraTest, ModelsListsTheAdapters) {
  TempDir dir;
  ServerSetup setup = Strict();
  setup.served_model_names = {kModelName, "alias"};
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  const std::string b = WriteTinyAdapter(dir.path(), "b", 2).string();
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1).string();
  ASSERT_EQ(Load(port, "b", b)->status, 200);
  ASSERT_EQ(Load(port, "a", a)->status, 200);
  ExpectError(Load(port, "alias", a), 400, "an alias of the base model", "alias", "lora_name");
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  std::optional<Response> r = Call(port, "GET", "/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const json data = r->Json()["data"];
  ASSERT_EQ(data.size(), 4u) << r->body;
  EXPECT_EQ(data[0]["id"], kModelName);
  EXPECT_EQ(data[1]["id"], "alias");
  for (int i = 2; i < 4; ++i) {
    const json& card = data[i];
    const std::string id = i == 2 ? "a" : "b";  // by name
    EXPECT_EQ(card["id"], id) << card;
    EXPECT_EQ(card["object"], "model");
    EXPECT_EQ(card["owned_by"], "mambaserve");
    EXPECT_EQ(card["root"], id == "a" ? a : b);
    EXPECT_EQ(card["parent"], kModelName);
    EXPECT_LE(std::abs(card["created"].get<int64_t>() - now), 60) << card;
  }
  std::optional<Response> one = Call(port, "GET", "/v1/models/a");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(one->Json(), data[2]);
  ASSERT_EQ(Unload(port, "a")->status, 200);
  EXPECT_EQ(Call(port, "GET", "/v1/models")->Json()["data"].size(), 3u);
  EXPECT_EQ(Call(port, "GET", "/v1/models/a")->status, 404);
}

TEST(HttpLoraTest, MetricsCountRequestsAndTokensByAdapter) {
  TempDir dir;
  auto s = HttpTestServer::Start(Strict());
  ASSERT_TRUE(s);
  const int port = s->port();
  ASSERT_EQ(Load(port, "a", WriteTinyAdapter(dir.path(), "a", 1).string())->status, 200);
  ASSERT_EQ(Load(port, "b.v2", WriteTinyAdapter(dir.path(), "b", 2).string())->status, 200);
  json two = Greedy("a");
  two["n"] = 2;
  std::optional<Response> r = PostJson(port, "/v1/completions", two);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const int64_t prompt_tokens = r->Json()["usage"]["prompt_tokens"];
  Complete(port, "b.v2");
  Complete(port, "");
  ASSERT_TRUE(s->WaitEngineIdle());
  auto metrics = [&] { return Call(port, "GET", "/metrics")->body; };
  std::string m = metrics();
  EXPECT_EQ(MetricValue(m, R"(mamba_lora_requests_total{adapter="a"})"), 1) << m;
  EXPECT_EQ(MetricValue(m, R"(mamba_lora_prompt_tokens_total{adapter="a"})"), prompt_tokens);
  EXPECT_EQ(MetricValue(m, R"(mamba_lora_generation_tokens_total{adapter="a"})"), 16);
  EXPECT_EQ(MetricValue(m, R"(mamba_lora_requests_total{adapter="b.v2"})"), 1);
  EXPECT_EQ(MetricValue(m, R"(mamba_lora_generation_tokens_total{adapter="b.v2"})"), 8);
  EXPECT_EQ(m.find(R"(mamba_lora_requests_total{adapter=""})"), std::string::npos) << m;
  EXPECT_EQ(MetricValue(m, "mamba_lora_adapters_loaded"), 2);
  EXPECT_EQ(MetricValue(m, "mamba_lora_adapters_resident"), 2);
  ASSERT_EQ(Unload(port, "a")->status, 200);
  m = metrics();
  EXPECT_EQ(MetricValue(m, "mamba_lora_adapters_loaded"), 1);
  EXPECT_EQ(MetricValue(m, R"(mamba_lora_requests_total{adapter="a"})"), 1);  // counters stay
}

// Clients on three adapters and the base model while another thread loads and unloads a fourth
// again and again: every request answers, with its model's own text; the fourth's requests get
// either its text or model_not_found, never anything else (never a half-loaded adapter).
TEST(HttpLoraTest, SoakWithHotLoadAndUnload) {
  TempDir dir;
  // Room for unloaded copies of d still held by requests.
  ServerSetup setup = Strict(16);
  setup.engine.state_cache_bytes = 64 << 20;  // prefixes shared across adapters must not mix
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  const std::vector<std::string> names = {"a", "b", "c", "d"};
  std::map<std::string, std::string> dirs;
  for (size_t i = 0; i < names.size(); ++i) {
    dirs[names[i]] = WriteTinyAdapter(dir.path(), names[i], 11 + i).string();
    ASSERT_EQ(Load(port, names[i], dirs[names[i]])->status, 200);
  }
  const std::vector<std::string> prompts = {"In the beginning", "In the beginning God created"};
  std::map<std::pair<std::string, std::string>, std::string> expected;
  for (const std::string& p : prompts) {
    expected[{"", p}] = Complete(port, "", p);
    for (const std::string& n : names) expected[{n, p}] = Complete(port, n, p);
  }
  ASSERT_EQ(Unload(port, "d")->status, 200);

  std::atomic<bool> stop{false};
  std::atomic<int> loads{0}, unloads{0}, asked_d{0}, not_found{0}, served_d{0}, failures{0};
  std::thread churn([&] {
    while (!stop.load()) {
      std::optional<Response> l = Load(port, "d", dirs["d"]);
      ++(l && l->status == 200 ? loads : failures);
      std::optional<Response> u = Unload(port, "d");
      ++(u && u->status == 200 ? unloads : failures);
    }
  });
  constexpr int kClients = 6, kEach = 30;
  const std::vector<std::string> models = {"a", "b", "c", "", "d"};
  std::vector<std::thread> clients;
  std::vector<std::string> errors(kClients);
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) {
        const std::string& model = models[(c + i) % models.size()];
        const std::string& prompt = prompts[(c * 7 + i) % prompts.size()];
        if (model == "d") ++asked_d;
        std::optional<Response> r = PostJson(port, "/v1/completions", Greedy(model, prompt));
        if (!r) {
          errors[c] += "no answer; ";
          continue;
        }
        if (model == "d" && r->status == 404 && r->Json()["error"]["code"] == "model_not_found") {
          ++not_found;
          continue;
        }
        if (r->status != 200) {
          errors[c] += model + ": " + r->body + "; ";
          continue;
        }
        if (model == "d") ++served_d;
        const std::string text = r->Json()["choices"][0]["text"];
        if (text != expected.at({model, prompt})) {
          errors[c] += model + " gave '" + text + "' for '" + prompt + "'; ";
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  stop = true;
  churn.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(errors[c], "") << "client " << c;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(loads.load(), 0);
  EXPECT_EQ(not_found.load() + served_d.load(), asked_d.load());
  EXPECT_GT(asked_d.load(), 0);
  std::printf("d: %d asked, %d served, %d not found; %d loads, %d unloads\n", asked_d.load(),
              served_d.load(), not_found.load(), loads.load(), unloads.load());
  ASSERT_TRUE(s->WaitEngineIdle());
  // Nothing held beyond the three adapters once the churn stopped (d unloaded last).
  EXPECT_TRUE(WaitFor([&] { return s->engine().adapters()->resident() == 3; }, 10s));
}

}  // namespace
}  // namespace mamba::server::http_testing
