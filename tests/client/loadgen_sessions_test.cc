// The load generator's server-side features without a real server: Prometheus parsing and the
// reuse deltas, TTFT by turn, session-mode conversations (the runner with a fake generator, the
// OpenAI and TGI generators against a scripted HTTP server with sessions), session cleanup, and
// the mamba-loadgen binary end to end against that server.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/loadgen/report.h"
#include "client/loadgen/runner.h"
#include "client/loadgen/server_state.h"
#include "client/loadgen/workload.h"
#include "client/openai_api.h"
#include "client/tgi_api.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_util.h"

namespace mamba::client::loadgen {
namespace {

using client::testing::Chunk;
using client::testing::FakeHttpServer;
using client::testing::FakeRequest;
using client::testing::Response;
using client::testing::SendAll;

// ---------------------------------------------------------------- Prometheus text and deltas

TEST(PrometheusTextTest, ParsesSamplesLabelsAndSkipsWhatIsNotASample) {
  const PrometheusText t = PrometheusText::Parse(
      "# HELP mamba_x_total Things\n"
      "# TYPE mamba_x_total counter\n"
      "mamba_x_total 12\n"
      "mamba_lookups_total{result=\"hit\",model=\"m\"} 3 1700000000000\n"
      "mamba_lookups_total{model=\"m\", result=\"miss\",} 4.5\r\n"
      "mamba_lookups_total{result=\"hit\",model=\"other\"} 1e1\n"
      "  mamba_padded 7  \n"
      "mamba_esc{path=\"a\\\"b\\\\c\\n\"} 1\n"
      "mamba_inf +Inf\n"
      "mamba_broken{result=\"hit\" 9\n"
      "mamba_novalue\n"
      "mamba_bad abc\n"
      "mamba_three 1 2 3\n"
      "\n");
  EXPECT_EQ(t.samples().size(), 7u);
  EXPECT_EQ(t.Value("mamba_x_total"), 12);
  EXPECT_EQ(t.Value("mamba_lookups_total", {{"result", "hit"}}), 13);  // summed over models
  EXPECT_EQ(t.Value("mamba_lookups_total", {{"result", "hit"}, {"model", "m"}}), 3);
  EXPECT_EQ(t.Value("mamba_lookups_total", {{"result", "miss"}}), 4.5);
  EXPECT_EQ(t.Value("mamba_lookups_total"), 17.5);
  EXPECT_FALSE(t.Value("mamba_lookups_total", {{"result", "partial"}}).has_value());
  EXPECT_EQ(t.Value("mamba_padded"), 7);
  EXPECT_EQ(t.Value("mamba_esc", {{"path", "a\"b\\c\n"}}), 1);
  EXPECT_TRUE(std::isinf(*t.Value("mamba_inf")));
  EXPECT_FALSE(t.Value("mamba_broken").has_value());
  EXPECT_FALSE(t.Value("mamba_bad").has_value());
  EXPECT_FALSE(t.Value("mamba_x").has_value());  // a prefix is not a name
  EXPECT_TRUE(PrometheusText::Parse("").samples().empty());
}

// The value column of the report row whose label is `label`, or "(no row)".
std::string RowValue(const std::string& text, const std::string& label) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, label)) return std::string(absl::StripAsciiWhitespace(line));
  }
  return "(no row)";
}

std::optional<double> Figure(const ServerReuse& r, const std::string& key) {
  for (const ServerFigure& f : r.figures) {
    if (f.key == key) return f.value;
  }
  ADD_FAILURE() << "no figure " << key;
  return std::nullopt;
}

TEST(ServerReuseTest, DeltasOfWhatTheServerExports) {
  const PrometheusText before = PrometheusText::Parse(
      "mamba_state_cache_lookups_total{result=\"hit\"} 5\n"
      "mamba_state_cache_lookups_total{result=\"miss\"} 10\n"
      "mamba_state_cache_tokens_reused_total 1000\n"
      "mamba_prompt_tokens_total 4000\n"
      "mamba_engine_prefill_tokens_total 3000\n"
      "mamba_sessions_live 2\n");
  const PrometheusText after = PrometheusText::Parse(
      "mamba_state_cache_lookups_total{result=\"hit\"} 9\n"
      "mamba_state_cache_lookups_total{result=\"partial\"} 6\n"  // new child: counts from 0
      "mamba_state_cache_lookups_total{result=\"miss\"} 12\n"
      "mamba_state_cache_tokens_reused_total 1500\n"
      "mamba_prompt_tokens_total 4800\n"
      "mamba_engine_prefill_tokens_total 3300\n"
      "mamba_sessions_live 7\n");
  const ServerReuse r = ComputeReuse(before, after);
  EXPECT_EQ(Figure(r, "state_cache_hits"), 4);
  EXPECT_EQ(Figure(r, "state_cache_partial_hits"), 6);
  EXPECT_EQ(Figure(r, "state_cache_misses"), 2);
  EXPECT_EQ(Figure(r, "state_cache_tokens_reused"), 500);
  EXPECT_EQ(Figure(r, "prompt_tokens"), 800);
  EXPECT_EQ(Figure(r, "prompt_tokens_computed"), 300);
  EXPECT_EQ(Figure(r, "sessions_live"), 7);  // a gauge: the value after
  for (const ServerFigure& f : r.figures) EXPECT_EQ(f.gauge, f.key == "sessions_live") << f.key;
}

TEST(ServerReuseTest, OtherNamesAndMissingMetrics) {
  // Unlabelled counter names are accepted too; what the server lacks is n/a.
  const PrometheusText before = PrometheusText::Parse("mamba_state_cache_hits_total 1\n");
  const PrometheusText after =
      PrometheusText::Parse("mamba_state_cache_hits_total 4\nmamba_state_cache_misses_total 2\n");
  const ServerReuse r = ComputeReuse(before, after);
  EXPECT_EQ(Figure(r, "state_cache_hits"), 3);
  EXPECT_EQ(Figure(r, "state_cache_misses"), 2);
  EXPECT_FALSE(Figure(r, "state_cache_partial_hits").has_value());
  EXPECT_FALSE(Figure(r, "prompt_tokens_computed").has_value());
  EXPECT_FALSE(Figure(r, "sessions_live").has_value());
  const ServerReuse none = ComputeReuse(PrometheusText(), PrometheusText());
  for (const ServerFigure& f : none.figures) EXPECT_FALSE(f.value.has_value()) << f.key;
}

TEST(ServerReuseTest, MetricsUrl) {
  auto e = ParseMetricsUrl("http://127.0.0.1:9400/metrics");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->port, 9400);
  EXPECT_EQ(e->base_path, "");
  EXPECT_EQ(ParseMetricsUrl("https://h:1/proxy/metrics")->base_path, "/proxy");
  EXPECT_EQ(ParseMetricsUrl("http://h:1/proxy")->base_path, "/proxy");
  EXPECT_FALSE(ParseMetricsUrl("grpc://127.0.0.1:50051").ok());
  EXPECT_FALSE(ParseMetricsUrl("127.0.0.1:50051").ok());
}

// ------------------------------------------------------------------------- TTFT by turn

RequestRecord Done(int turn, double ttft_s, int64_t input) {
  RequestRecord r;
  r.ok = true;
  r.turn = turn;
  r.ttft_s = ttft_s;
  r.e2e_s = ttft_s + 0.1;
  r.input_tokens = input;
  r.output_tokens = 4;
  r.streamed_tokens = 4;
  return r;
}

TEST(TtftByTurnTest, OneDistributionPerTurn) {
  RunResult run;
  run.turns = 3;
  run.duration_s = 1;
  for (int i = 1; i <= 4; ++i) run.requests.push_back(Done(0, 0.01 * i, 100));  // 10..40 ms
  for (int i = 1; i <= 2; ++i) run.requests.push_back(Done(1, 0.1 * i, 200 + i));
  RequestRecord failed = Done(1, 9, 999);
  failed.ok = false;
  failed.error_kind = "session";
  run.requests.push_back(failed);
  RequestRecord no_token = Done(1, 0, 300);
  no_token.streamed_tokens = 0;  // counts for the input mean, not for TTFT
  run.requests.push_back(no_token);
  const std::vector<TurnLatency> turns = TtftByTurn(run.requests, 3, {50, 90, 99});
  ASSERT_EQ(turns.size(), 3u);
  EXPECT_EQ(turns[0].turn, 1);
  EXPECT_EQ(turns[0].ttft_ms.count, 4u);
  EXPECT_NEAR(turns[0].ttft_ms.median, 25, 1e-9);
  EXPECT_NEAR(turns[0].ttft_ms.percentiles[1].second, 37, 1e-9);  // numpy: [10,20,30,40], 90
  EXPECT_NEAR(turns[0].ttft_ms.percentiles[2].second, 39.7, 1e-9);
  EXPECT_DOUBLE_EQ(turns[0].mean_input_tokens, 100);
  EXPECT_EQ(turns[1].ttft_ms.count, 2u);
  EXPECT_EQ(turns[1].completed, 3);
  EXPECT_NEAR(turns[1].ttft_ms.mean, 150, 1e-9);
  EXPECT_DOUBLE_EQ(turns[1].mean_input_tokens, (201 + 202 + 300) / 3.0);
  EXPECT_EQ(turns[2].ttft_ms.count, 0u);  // nothing in turn 3: zeros
  EXPECT_EQ(turns[2].ttft_ms.percentiles.size(), 3u);

  Metrics m = ComputeMetrics(run, {50, 90, 99}, {});
  ASSERT_EQ(m.ttft_by_turn.size(), 3u);
  EXPECT_EQ(m.errors_by_kind.at("session"), 1);
  RunInfo info;
  info.turns = 3;
  const Json j = ResultJson(info, run, m, {50, 90, 99}, {}, false);
  ASSERT_EQ(j["ttft_by_turn"].size(), 3u);
  EXPECT_EQ(j["ttft_by_turn"][0]["turn"], 1);
  EXPECT_EQ(j["ttft_by_turn"][0]["completed"], 4);
  EXPECT_EQ(j["ttft_by_turn"][1]["completed"], 3);  // one of them without a token event
  EXPECT_NEAR(j["ttft_by_turn"][0]["p90_ttft_ms"].get<double>(), 37, 1e-9);
  EXPECT_NEAR(j["ttft_by_turn"][1]["p50_ttft_ms"].get<double>(), 150, 1e-9);
  EXPECT_TRUE(j["ttft_by_turn"][2].contains("p99_ttft_ms"));
  EXPECT_FALSE(j.contains("server_metrics"));
  EXPECT_FALSE(j.contains("session_tokens"));
  const std::string text = FormatSummary(info, m, {50, 90, 99}, {});
  EXPECT_NE(text.find("TTFT by turn"), std::string::npos) << text;
  EXPECT_NE(text.find("3 turns, each turn resends the history"), std::string::npos) << text;

  run.turns = 1;  // single-turn runs have no per-turn table
  EXPECT_TRUE(ComputeMetrics(run, {50}, {}).ttft_by_turn.empty());
}

TEST(ReportTest, ServerCountersInTextAndJson) {
  RunResult run;
  run.requests.push_back(Done(0, 0.01, 10));
  run.session_prefix = "lg-00ab-";
  run.requests[0].session_tokens = 14;
  Metrics m = ComputeMetrics(run, {50}, {});
  m.server = ComputeReuse(PrometheusText::Parse("mamba_state_cache_tokens_reused_total 10\n"),
                          PrometheusText::Parse("mamba_state_cache_tokens_reused_total 25\n"
                                                "mamba_sessions_live 3\n"));
  m.server->url = "http://127.0.0.1:1/metrics";
  m.server->sessions_live_after_cleanup = 0;
  m.session_cleanup = SessionCleanup{2, 1, 0, ""};
  RunInfo info;
  info.sessions = true;
  const std::string text = FormatSummary(info, m, {50}, {});
  EXPECT_EQ(RowValue(text, "Prompt tokens reused (not computed):"), "15") << text;
  EXPECT_EQ(RowValue(text, "State cache hits (whole prompt):"), "n/a") << text;
  EXPECT_EQ(RowValue(text, "Sessions live after the run:"), "3") << text;
  EXPECT_EQ(RowValue(text, "Sessions live after deleting the run's:"), "0") << text;
  EXPECT_EQ(RowValue(text, "Sessions deleted after the run:"), "2 (1 not found, 0 failed)") << text;
  EXPECT_NE(text.find("server sessions"), std::string::npos) << text;
  const Json j = ResultJson(info, run, m, {50}, {}, false);
  EXPECT_EQ(j["server_metrics"]["state_cache_tokens_reused"], 15);
  EXPECT_TRUE(j["server_metrics"]["state_cache_hits"].is_null());
  EXPECT_EQ(j["server_metrics"]["sessions_live"], 3);
  EXPECT_EQ(j["server_metrics"]["sessions_live_after_cleanup"], 0);
  EXPECT_TRUE(j["server_metrics"]["error"].is_null());
  EXPECT_EQ(j["session_cleanup"]["deleted"], 2);
  EXPECT_EQ(j["session_prefix"], "lg-00ab-");
  EXPECT_EQ(j["session_tokens"], Json::array({14}));
}

// ---------------------------------------------------------------- the session check

GenerateResult Answer(std::optional<int64_t> prompt, int64_t generated,
                      std::optional<SessionReport> session) {
  GenerateResult r;
  r.completions.resize(1);
  r.completions[0].streamed_tokens = generated;
  if (prompt) r.usage = Usage{*prompt, generated, *prompt + generated};
  r.server_counted_output = prompt.has_value();
  r.session = std::move(session);
  return r;
}

TEST(SessionCheckTest, CountsMustGrowByPromptAndAnswer) {
  std::optional<int64_t> held = 0;
  EXPECT_FALSE(CheckSessionGrowth(Answer(5, 3, SessionReport{"s", 8}), "s", &held));
  EXPECT_EQ(held, 8);
  // The usage's prompt is the whole prompt read: the 8 held + 4 new.
  EXPECT_FALSE(CheckSessionGrowth(Answer(12, 3, SessionReport{"s", 15}), "s", &held));
  std::optional<std::string> e =
      CheckSessionGrowth(Answer(19, 3, SessionReport{"s", 21}), "s", &held);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->find("expected 22"), std::string::npos) << *e;
  EXPECT_EQ(held, 21);  // re-synchronised on the server's count
  EXPECT_FALSE(CheckSessionGrowth(Answer(22, 1, SessionReport{"", 23}), "s", &held));  // no id
  e = CheckSessionGrowth(Answer(24, 1, SessionReport{"t", 25}), "s", &held);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->find("'t'"), std::string::npos) << *e;
  e = CheckSessionGrowth(Answer(1, 1, std::nullopt), "s", &held);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->find("no \"session\""), std::string::npos) << *e;
  EXPECT_FALSE(held.has_value());
  // Unknown before: any count is taken.
  EXPECT_FALSE(CheckSessionGrowth(Answer(1, 1, SessionReport{"s", 99}), "s", &held));
  // Without the prompt count: at least held + generated.
  EXPECT_FALSE(CheckSessionGrowth(Answer(std::nullopt, 3, SessionReport{"s", 110}), "s", &held));
  EXPECT_TRUE(CheckSessionGrowth(Answer(std::nullopt, 3, SessionReport{"s", 111}), "s", &held));
}

// ---------------------------------------------------- the runner with a fake session server

// Keeps sessions: each answer appends prompt + max_tokens tokens to the request's session and
// reports the count (plus `skew`, to fake a wrong count).
struct FakeSessions {
  std::mutex mu;
  std::map<std::string, int64_t> held;
  std::vector<GenerateSpec> specs;
  int64_t skew = 0;
};

class FakeSessionGenerator : public Generator {
 public:
  explicit FakeSessionGenerator(FakeSessions* s) : s_(s) {}
  absl::StatusOr<GenerateResult> Stream(const GenerateSpec& spec, const EventCallback& on_event,
                                        CancelToken*) override {
    const int n = spec.sampling.max_tokens.value_or(1);
    const int64_t prompt = spec.prompt.use_ids
                               ? static_cast<int64_t>(spec.prompt.ids.size())
                               : static_cast<int64_t>(std::count(spec.prompt.text.begin(),
                                                                 spec.prompt.text.end(), ' '));
    GenerateResult r;
    r.completions.resize(1);
    for (int i = 0; i < n; ++i) {
      StreamEvent e;
      e.tokens = 1;
      e.text = " w";
      if (on_event) on_event(e);
      r.completions[0].text += e.text;
      ++r.completions[0].streamed_tokens;
    }
    r.completions[0].finish_reason = "length";
    r.server_counted_output = true;
    std::lock_guard<std::mutex> lock(s_->mu);
    s_->specs.push_back(spec);
    int64_t read = prompt;  // the usage counts the whole prompt read: a session's history too
    if (!spec.session_id.empty()) {
      int64_t& held = s_->held[spec.session_id];
      read += held;
      held += prompt + n;
      r.session = SessionReport{spec.session_id, held + s_->skew};
    }
    r.usage = Usage{read, n, read + n};
    return r;
  }
  const char* api_name() const override { return "fake"; }

 private:
  FakeSessions* s_;
};

WorkloadOptions TextTurns(int turns) {
  WorkloadOptions o;
  o.input_len = 6;
  o.output_len = 3;
  o.vocab_size = 1000;
  o.seed = 11;
  o.turns = turns;
  o.text_prompts = true;
  return o;
}

LoadOptions SessionLoad(int concurrency, int64_t n) {
  LoadOptions o;
  o.concurrency = concurrency;
  o.num_requests = n;
  o.request_timeout_s = 30;
  o.sessions = true;
  return o;
}

TEST(SessionRunnerTest, EachTurnSendsItsNewInputOnTheConversationsSession) {
  FakeSessions s;
  auto w = Workload::Create(TextTurns(3), nullptr).value();
  LoadOptions o = SessionLoad(2, 12);
  auto r =
      RunLoad(o, GenerateSpec(), w.get(), [&](int) -> absl::StatusOr<std::unique_ptr<Generator>> {
        return std::make_unique<FakeSessionGenerator>(&s);
      });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->requests.size(), 12u);
  ASSERT_EQ(r->session_ids.size(), 4u);
  EXPECT_EQ(r->turns, 3);
  EXPECT_TRUE(absl::StartsWith(r->session_prefix, "lg-")) << r->session_prefix;
  EXPECT_EQ(r->session_prefix.size(), 3u + 16 + 1);
  std::set<std::string> ids(r->session_ids.begin(), r->session_ids.end());
  for (int c = 0; c < 4; ++c) EXPECT_EQ(ids.count(absl::StrCat(r->session_prefix, c)), 1u);
  for (const RequestRecord& rec : r->requests) {
    EXPECT_TRUE(rec.ok) << rec.error;
    EXPECT_EQ(rec.input_tokens, 6 + 9 * rec.turn);  // the prompt read: the session's + 6 new
    ASSERT_TRUE(rec.session_tokens.has_value());
    EXPECT_EQ(*rec.session_tokens, 9 * (rec.turn + 1));
  }
  for (const GenerateSpec& spec : s.specs) {
    const int64_t conv = std::stoll(spec.session_id.substr(r->session_prefix.size()));
    const Conversation c = w->Make(conv).value();
    bool found = false;
    for (const Turn& t : c.turns) found = found || t.input.text == spec.prompt.text;
    EXPECT_TRUE(found) << "not one turn's new text: " << spec.prompt.text;
  }
  Metrics m = ComputeMetrics(*r, {50, 90, 99}, {});
  EXPECT_EQ(m.completed, 12);
  ASSERT_EQ(m.ttft_by_turn.size(), 3u);
  for (const TurnLatency& t : m.ttft_by_turn) {
    EXPECT_EQ(t.ttft_ms.count, 4u);
    EXPECT_DOUBLE_EQ(t.mean_input_tokens, 6 + 9 * (t.turn - 1));  // the prompt read
  }
  // Two runs never share session ids; a given prefix is used as is.
  FakeSessions s2;
  o.session_prefix = "fixed-";
  auto again =
      RunLoad(o, GenerateSpec(), w.get(), [&](int) -> absl::StatusOr<std::unique_ptr<Generator>> {
        return std::make_unique<FakeSessionGenerator>(&s2);
      });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->session_prefix, "fixed-");
  EXPECT_EQ(std::set<std::string>(again->session_ids.begin(), again->session_ids.end()),
            (std::set<std::string>{"fixed-0", "fixed-1", "fixed-2", "fixed-3"}));
}

TEST(SessionRunnerTest, AWrongCountIsASessionErrorAndTheConversationGoesOn) {
  FakeSessions s;
  s.skew = 1;  // every count one too many: the first turn (from 0) is already wrong
  auto w = Workload::Create(TextTurns(3), nullptr).value();
  auto r = RunLoad(SessionLoad(1, 6), GenerateSpec(), w.get(),
                   [&](int) -> absl::StatusOr<std::unique_ptr<Generator>> {
                     return std::make_unique<FakeSessionGenerator>(&s);
                   });
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->requests.size(), 6u);  // nothing abandoned
  EXPECT_EQ(r->abandoned_turns, 0);
  Metrics m = ComputeMetrics(*r, {50}, {});
  // Every turn fails the check: the session count is always one more than the prompt the
  // usage says was read plus the answer (turn 1: reported 10, expected 6 + 3).
  EXPECT_EQ(m.errors_by_kind.at("session"), 6);
  EXPECT_EQ(m.completed, 0);
  EXPECT_NE(m.error_examples.at("session").find("expected 9"), std::string::npos)
      << m.error_examples.at("session");
}

// ------------------------------------------- OpenAI and TGI generators against a scripted server

// A server with sessions, in the shapes our server uses: POST /v1/completions (OpenAI SSE: the
// finishing chunk carries "session", then a usage chunk) and POST /generate_stream (TGI: the final
// event carries "session"); each generates max tokens " w" and appends prompt words + answer to
// the request's session. DELETE /v1/sessions/{id}; GET /metrics (hits = answers so far, live
// sessions); GET /v1/models; anything else 404.
struct SessionServer {
  std::mutex mu;
  std::vector<nlohmann::json> bodies;
  std::vector<std::string> paths;
  std::map<std::string, int64_t> sessions;
  std::vector<std::string> deleted;
  int64_t answers = 0, scrapes = 0;

  FakeHttpServer server{[this](const FakeRequest& r, int fd) { return Handle(r, fd); }};

  std::string url() const { return absl::StrCat("http://127.0.0.1:", server.port()); }
  Endpoint endpoint() const { return ParseEndpoint(url()).value(); }

  bool Handle(const FakeRequest& r, int fd) {
    std::unique_lock<std::mutex> lock(mu);
    paths.push_back(absl::StrCat(r.method, " ", r.path));
    if (r.method == "GET" && r.path == "/metrics") {
      ++scrapes;
      SendAll(fd, Response(200,
                           absl::StrCat("# TYPE mamba_state_cache_lookups_total counter\n"
                                        "mamba_state_cache_lookups_total{result=\"hit\"} ",
                                        answers, "\nmamba_sessions_live ", sessions.size(), "\n"),
                           "text/plain; version=0.0.4"));
      return true;
    }
    if (r.method == "GET" && r.path == "/v1/models") {
      SendAll(fd, Response(200, R"({"object":"list","data":[{"id":"fake-model"}]})"));
      return true;
    }
    if (r.method == "DELETE" && absl::StartsWith(r.path, "/v1/sessions/")) {
      const std::string id = r.path.substr(std::string("/v1/sessions/").size());
      deleted.push_back(id);
      if (sessions.erase(id) == 0) {
        SendAll(fd, Response(404, R"({"error":{"message":"no such session"}})"));
      } else {
        SendAll(fd, Response(200, R"({"id":")" + id + R"(","deleted":true})"));
      }
      return true;
    }
    const bool openai = r.method == "POST" && r.path == "/v1/completions";
    const bool tgi = r.method == "POST" && r.path == "/generate_stream";
    if (!openai && !tgi) {
      SendAll(fd, Response(404, R"({"error":"not found"})"));
      return true;
    }
    nlohmann::json body = nlohmann::json::parse(r.body);
    bodies.push_back(body);
    const std::string prompt = (openai ? body["prompt"] : body["inputs"]).get<std::string>();
    const int64_t prompt_tokens = std::count(prompt.begin(), prompt.end(), ' ');
    const int n =
        openai ? body["max_tokens"].get<int>() : body["parameters"]["max_new_tokens"].get<int>();
    const std::string id = body.value("session_id", "");
    nlohmann::json session;
    int64_t read = prompt_tokens;  // usage: the whole prompt read, a session's history too
    if (!id.empty()) {
      int64_t& held = sessions[id];
      read += held;
      held += prompt_tokens + n;
      session = {{"id", id}, {"tokens", held}};
    }
    ++answers;
    lock.unlock();
    SendAll(fd,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
    auto event = [&](const nlohmann::json& j) { SendAll(fd, Chunk("data: " + j.dump() + "\n\n")); };
    for (int i = 0; i < n; ++i) {
      const bool last = i + 1 == n;
      nlohmann::json e;
      if (openai) {
        nlohmann::json choice = {{"index", 0}, {"text", " w"}, {"finish_reason", nullptr}};
        if (last) choice["finish_reason"] = "length";
        e["choices"] = nlohmann::json::array({choice});
      } else {
        e = {{"token", {{"id", 7}, {"text", " w"}, {"special", false}}},
             {"generated_text", nullptr},
             {"details", nullptr}};
        if (last) {
          e["generated_text"] = "w";
          e["details"] = {
              {"finish_reason", "length"}, {"generated_tokens", n}, {"input_length", read}};
        }
      }
      if (last && !session.is_null()) e["session"] = session;
      event(e);
    }
    if (openai) {
      event({{"choices", nlohmann::json::array()},
             {"usage",
              {{"prompt_tokens", read},
               {"completion_tokens", n},
               {"total_tokens", prompt_tokens + n}}}});
      SendAll(fd, Chunk("data: [DONE]\n\n"));
    }
    SendAll(fd, "0\r\n\r\n");
    return true;
  }
};

TEST(SessionHttpTest, OpenAiAndTgiBodiesCarryTheSessionAndOnlyTheNewText) {
  for (const bool openai : {true, false}) {
    SCOPED_TRACE(openai ? "openai" : "tgi");
    SessionServer s;
    auto w = Workload::Create(TextTurns(3), nullptr).value();
    GenerateSpec base;
    base.sampling.temperature = 0;
    base.sampling.ignore_eos = true;
    const Endpoint endpoint = s.endpoint();
    auto r = RunLoad(SessionLoad(2, 6), base, w.get(),
                     [&](int) -> absl::StatusOr<std::unique_ptr<Generator>> {
                       if (openai) return std::make_unique<OpenAiGenerator>(endpoint, "");
                       return std::make_unique<TgiGenerator>(endpoint, "");
                     });
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->requests.size(), 6u);
    for (const RequestRecord& rec : r->requests) {
      EXPECT_TRUE(rec.ok) << rec.error;
      EXPECT_EQ(rec.session_tokens, 9 * (rec.turn + 1));
    }
    std::lock_guard<std::mutex> lock(s.mu);
    ASSERT_EQ(s.bodies.size(), 6u);
    std::map<std::string, std::vector<std::string>> sent;  // per session, in order
    for (const nlohmann::json& b : s.bodies) {
      ASSERT_TRUE(b.contains("session_id")) << b.dump();  // top-level in both APIs
      sent[b["session_id"].get<std::string>()].push_back(openai ? b["prompt"].get<std::string>()
                                                                : b["inputs"].get<std::string>());
    }
    ASSERT_EQ(sent.size(), 2u);
    for (int c = 0; c < 2; ++c) {
      const std::string id = absl::StrCat(r->session_prefix, c);
      const Conversation conv = w->Make(c).value();
      ASSERT_EQ(sent[id].size(), 3u) << id;
      for (int k = 0; k < 3; ++k) EXPECT_EQ(sent[id][k], conv.turns[k].input.text) << id << k;
    }
  }
}

TEST(SessionHttpTest, CleanupDeletesAndScrapesRead) {
  SessionServer s;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.sessions = {{"a", 3}, {"b", 4}};
    s.answers = 5;
  }
  auto before = ScrapeMetrics(s.endpoint(), "", {}, 5);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->Value("mamba_sessions_live"), 2);
  const SessionCleanup c = DeleteSessions(s.endpoint(), "", {}, {}, {"a", "gone", "b"}, 10);
  EXPECT_EQ(c.deleted, 2);
  EXPECT_EQ(c.not_found, 1);
  EXPECT_EQ(c.failed, 0);
  auto after = ScrapeMetrics(s.endpoint(), "", {}, 5);
  ASSERT_TRUE(after.ok());
  const ServerReuse reuse = ComputeReuse(*before, *after);
  EXPECT_EQ(Figure(reuse, "state_cache_hits"), 0);
  EXPECT_EQ(Figure(reuse, "sessions_live"), 0);
  std::lock_guard<std::mutex> lock(s.mu);
  EXPECT_EQ(s.deleted, (std::vector<std::string>{"a", "gone", "b"}));
  // An unreachable server: every id fails, with the reason.
  const Endpoint closed =
      ParseEndpoint(absl::StrCat("http://127.0.0.1:", mamba::testing::UnusedPort())).value();
  const SessionCleanup f = DeleteSessions(closed, "", {}, {}, {"x", "y"}, 10);
  EXPECT_EQ(f.failed, 2);
  EXPECT_FALSE(f.first_error.empty());
  EXPECT_FALSE(ScrapeMetrics(closed, "", {}, 5).ok());
}

// ------------------------------------------------------------------ mamba-loadgen end to end

TEST(LoadgenBinaryTest, SessionRunReportsTurnsCountersAndCleansUp) {
  SessionServer s;
  const client::testing::TempDir temp;
  const std::string json_path = temp.path().string() + "/run.json";
  const client::testing::ProcessResult p = client::testing::RunProcess(
      {MAMBA_LOADGEN_BIN, "-t", s.url(), "--session", "--turns", "3", "-n", "6", "-c", "2",
       "--input-len", "5", "--output-len", "3", "--no-progress", "--json", json_path},
      "", std::chrono::seconds(60));
  ASSERT_EQ(p.exit_code, 0) << p.out << p.err;
  EXPECT_NE(p.out.find("TTFT by turn"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("Server counters"), std::string::npos) << p.out;
  EXPECT_EQ(RowValue(p.out, "State cache hits (whole prompt):"), "6") << p.out;
  EXPECT_EQ(RowValue(p.out, "Prompt tokens computed (prefill):"), "n/a") << p.out;
  EXPECT_EQ(RowValue(p.out, "Sessions live after the run:"), "2") << p.out;
  EXPECT_EQ(RowValue(p.out, "Sessions deleted after the run:"), "2 (0 not found, 0 failed)")
      << p.out;
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["completed"], 6);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["workload"]["sessions"], true);
  ASSERT_EQ(j["ttft_by_turn"].size(), 3u);
  EXPECT_EQ(j["ttft_by_turn"][2]["completed"], 2);
  EXPECT_TRUE(j["ttft_by_turn"][2].contains("p99_ttft_ms"));
  EXPECT_EQ(j["server_metrics"]["state_cache_hits"], 6);
  EXPECT_EQ(j["server_metrics"]["sessions_live"], 2);
  EXPECT_EQ(j["server_metrics"]["sessions_live_after_cleanup"], 0);
  EXPECT_EQ(j["session_cleanup"]["deleted"], 2);
  EXPECT_EQ(j["session_tokens"].size(), 6u);
  std::lock_guard<std::mutex> lock(s.mu);
  EXPECT_EQ(s.deleted.size(), 2u);
  EXPECT_TRUE(s.sessions.empty());
  for (const nlohmann::json& b : s.bodies) EXPECT_TRUE(b.contains("session_id")) << b.dump();
}

TEST(LoadgenBinaryTest, NoMetricsAndABadMetricsUrl) {
  SessionServer s;
  const client::testing::ProcessResult p = client::testing::RunProcess(
      {MAMBA_LOADGEN_BIN, "-t", s.url(), "--turns", "2", "-n", "2", "--input-len", "4",
       "--output-len", "2", "--no-progress", "--no-metrics"},
      "", std::chrono::seconds(60));
  ASSERT_EQ(p.exit_code, 0) << p.out << p.err;
  EXPECT_NE(p.out.find("TTFT by turn"), std::string::npos) << p.out;  // both modes
  EXPECT_EQ(p.out.find("Server counters"), std::string::npos) << p.out;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const std::string& path : s.paths) EXPECT_NE(path, "GET /metrics");
    for (const nlohmann::json& b : s.bodies) EXPECT_FALSE(b.contains("session_id")) << b.dump();
    EXPECT_TRUE(s.deleted.empty());
  }
  const client::testing::ProcessResult bad_url = client::testing::RunProcess(
      {MAMBA_LOADGEN_BIN, "-t", s.url(), "--metrics-url", "grpc://127.0.0.1:1", "-n", "1"}, "",
      std::chrono::seconds(30));
  EXPECT_EQ(bad_url.exit_code, 1);
  EXPECT_NE(bad_url.err.find("--metrics-url"), std::string::npos) << bad_url.err;
}

}  // namespace
}  // namespace mamba::client::loadgen
