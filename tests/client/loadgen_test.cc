// The load generator's parts without a server: statistics, workloads, the runner driven by a
// fake generator (closed and open loop, cancellation, errors, conversations, duration, stop),
// metrics and the JSON result, and the gnuplot chart.
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "client/errors.h"
#include "client/loadgen/chart.h"
#include "client/loadgen/report.h"
#include "client/loadgen/runner.h"
#include "client/loadgen/stats.h"
#include "client/loadgen/workload.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace mamba::client::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

TEST(StatsTest, MatchesNumpy) {
  Distribution d = Summarize({4, 1, 3, 2}, {50, 90, 99});
  EXPECT_EQ(d.count, 4u);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  EXPECT_NEAR(d.std, 1.1180339887, 1e-9);  // numpy.std, ddof 0
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 4);
  EXPECT_NEAR(d.percentiles[1].second, 3.7, 1e-12);  // numpy.percentile([1,2,3,4], 90)
  EXPECT_NEAR(d.percentiles[2].second, 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(Summarize({7}, {99}).percentiles[0].second, 7);
  Distribution empty = Summarize({}, {99});
  EXPECT_EQ(empty.count, 0u);
  EXPECT_EQ(empty.mean, 0);
  EXPECT_EQ(PercentileKey(99), "99");
  EXPECT_EQ(PercentileKey(99.9), "99.9");
}

WorkloadOptions Random(int input, int output) {
  WorkloadOptions o;
  o.input_len = input;
  o.output_len = output;
  o.vocab_size = 1000;
  o.seed = 7;
  return o;
}

TEST(WorkloadTest, RandomPromptsAreDeterministicAndWithinRange) {
  WorkloadOptions o = Random(100, 20);
  o.range_ratio = 0.5;
  o.avoid_ids = {0, 1, 2};
  auto w = Workload::Create(o, nullptr).value();
  std::set<int> lengths;
  for (int i = 0; i < 50; ++i) {
    Conversation c = w->Make(i).value();
    ASSERT_EQ(c.turns.size(), 1u);
    const Turn& t = c.turns[0];
    ASSERT_TRUE(t.input.use_ids);
    EXPECT_GE(t.input.ids.size(), 50u);
    EXPECT_LE(t.input.ids.size(), 150u);
    EXPECT_EQ(t.planned_tokens, static_cast<int64_t>(t.input.ids.size()));
    EXPECT_GE(t.max_tokens, 10);
    EXPECT_LE(t.max_tokens, 30);
    for (int32_t id : t.input.ids) {
      EXPECT_GE(id, 3);
      EXPECT_LT(id, 1000);
    }
    lengths.insert(static_cast<int>(t.input.ids.size()));
  }
  EXPECT_GT(lengths.size(), 10u);
  auto again = Workload::Create(o, nullptr).value();
  EXPECT_EQ(again->Make(3)->turns[0].input.ids, w->Make(3)->turns[0].input.ids);
  EXPECT_NE(w->Make(3)->turns[0].input.ids, w->Make(4)->turns[0].input.ids);
  o.seed = 8;
  EXPECT_NE(Workload::Create(o, nullptr).value()->Make(3)->turns[0].input.ids,
            w->Make(3)->turns[0].input.ids);
}

TEST(WorkloadTest, SharedPrefixes) {
  WorkloadOptions o = Random(10, 5);
  o.shared_prefix_len = 30;
  o.num_prefixes = 2;
  auto w = Workload::Create(o, nullptr).value();
  auto prefix = [&](int i) {
    std::vector<int32_t> ids = w->Make(i)->turns[0].input.ids;
    EXPECT_EQ(ids.size(), 40u);
    return std::vector<int32_t>(ids.begin(), ids.begin() + 30);
  };
  EXPECT_EQ(prefix(0), prefix(2));
  EXPECT_EQ(prefix(1), prefix(3));
  EXPECT_NE(prefix(0), prefix(1));
  EXPECT_NE(w->Make(0)->turns[0].input.ids, w->Make(2)->turns[0].input.ids);  // own suffixes
}

TEST(WorkloadTest, TextPromptsAndTurns) {
  WorkloadOptions o = Random(8, 4);
  o.text_prompts = true;
  o.turns = 3;
  auto words = Workload::Create(o, nullptr).value();
  Conversation c = words->Make(0).value();
  ASSERT_EQ(c.turns.size(), 3u);
  EXPECT_FALSE(c.turns[0].input.use_ids);
  EXPECT_EQ(std::count(c.turns[0].input.text.begin(), c.turns[0].input.text.end(), ' '), 8);
  EXPECT_NE(c.turns[0].input.text, c.turns[1].input.text);
  std::vector<std::vector<int32_t>> asked;
  auto detok =
      Workload::Create(o, [&](const std::vector<int32_t>& ids) -> absl::StatusOr<std::string> {
        asked.push_back(ids);
        return std::string("<") + std::to_string(ids.size()) + ">";
      }).value();
  EXPECT_EQ(detok->Make(0)->turns[0].input.text, "<8>");
  EXPECT_EQ(asked.size(), 3u);
}

TEST(WorkloadTest, Dataset) {
  const testing::TempDir temp;
  const std::string dir = temp.path().string();
  const std::string path = dir + "/d.jsonl";
  std::ofstream(path)
      << "{\"prompt\": \"hello there\", \"max_tokens\": 5}\n\n{\"prompt\": [1, 2, 3]}\n";
  WorkloadOptions o = Random(8, 9);
  o.dataset = path;
  auto w = Workload::Create(o, nullptr).value();
  EXPECT_EQ(w->dataset_size(), 2);
  Conversation c0 = w->Make(0).value(), c1 = w->Make(1).value(), c2 = w->Make(2).value();
  EXPECT_EQ(c0.turns[0].input.text, "hello there");
  EXPECT_EQ(c0.turns[0].max_tokens, 5);
  EXPECT_EQ(c1.turns[0].input.ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(c1.turns[0].max_tokens, 9);
  EXPECT_EQ(c2.turns[0].input.text, "hello there");
  std::ofstream(path) << "{\"prompt\": \"ok\"}\n{\"text\": \"no prompt\"}\n";
  auto bad = Workload::Create(o, nullptr);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("d.jsonl:2"), absl::string_view::npos) << bad.status();
  o.dataset = dir + "/missing.jsonl";
  EXPECT_FALSE(Workload::Create(o, nullptr).ok());
}

// Generates max_tokens tokens `per_token` apart; answers ids 1000 + i; optional failure when more
// than `capacity` requests are in flight (as a server's 429).
struct FakeBackend {
  std::chrono::milliseconds per_token{1};
  int capacity = 1 << 30;
  std::atomic<int> in_flight{0}, max_seen{0}, started{0};
  std::mutex mu;
  std::vector<PromptInput> prompts;
};

class FakeGenerator : public Generator {
 public:
  explicit FakeGenerator(FakeBackend* b) : b_(b) {}
  absl::StatusOr<GenerateResult> Stream(const GenerateSpec& spec, const EventCallback& on_event,
                                        CancelToken* cancel) override {
    ++b_->started;
    {
      std::lock_guard<std::mutex> lock(b_->mu);
      b_->prompts.push_back(spec.prompt);
    }
    const int now = ++b_->in_flight;
    struct Leave {
      FakeBackend* b;
      ~Leave() { --b->in_flight; }
    } leave{b_};
    int seen = b_->max_seen;
    while (now > seen && !b_->max_seen.compare_exchange_weak(seen, now)) {
    }
    if (now > b_->capacity) return HttpError(429, "the queue is full");
    std::atomic<bool> cancelled{false};
    ScopedCancelHandler handler(cancel, [&] { cancelled = true; });
    if (!handler.installed()) return WithKind(absl::CancelledError("cancelled"), "cancelled");
    GenerateResult r;
    r.completions.resize(1);
    const int n = spec.sampling.max_tokens.value_or(16);
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(b_->per_token);
      if (cancelled) return WithKind(absl::CancelledError("cancelled by the client"), "cancelled");
      StreamEvent e;
      e.tokens = 1;
      e.token_ids = {1000 + i};
      if (on_event) on_event(e);
      r.completions[0].token_ids.push_back(1000 + i);
      ++r.completions[0].streamed_tokens;
    }
    r.completions[0].finish_reason = "length";
    const int64_t prompt = spec.prompt.use_ids ? static_cast<int64_t>(spec.prompt.ids.size())
                                               : static_cast<int64_t>(spec.prompt.text.size());
    r.usage = Usage{prompt, n, prompt + n};
    r.server_counted_output = true;
    return r;
  }
  const char* api_name() const override { return "fake"; }

 private:
  FakeBackend* b_;
};

GeneratorMaker Maker(FakeBackend* b) {
  return [b](int) -> absl::StatusOr<std::unique_ptr<Generator>> {
    return std::make_unique<FakeGenerator>(b);
  };
}

LoadOptions Closed(int concurrency, int64_t n) {
  LoadOptions o;
  o.concurrency = concurrency;
  o.num_requests = n;
  o.request_timeout_s = 30;
  return o;
}

TEST(RunnerTest, ClosedLoop) {
  FakeBackend b;
  auto w = Workload::Create(Random(20, 4), nullptr).value();
  auto r = RunLoad(Closed(3, 12), GenerateSpec(), w.get(), Maker(&b));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->requests.size(), 12u);
  EXPECT_EQ(b.max_seen.load(), 3);
  EXPECT_EQ(r->max_in_flight, 3);
  std::set<int64_t> sent;  // indexes are in order of sending, the list in workload order
  for (size_t i = 0; i < r->requests.size(); ++i) {
    const RequestRecord& rec = r->requests[i];
    EXPECT_EQ(rec.conversation, static_cast<int64_t>(i));
    EXPECT_TRUE(sent.insert(rec.index).second);
    EXPECT_LT(rec.index, 12);
    EXPECT_TRUE(rec.ok) << rec.error;
    EXPECT_EQ(rec.output_tokens, 4);
    EXPECT_EQ(rec.streamed_tokens, 4);
    EXPECT_EQ(rec.input_tokens, 20);
    EXPECT_TRUE(rec.server_usage);
    EXPECT_EQ(rec.itls.size(), 3u);
    EXPECT_GT(rec.ttft_s, 0);
    EXPECT_GE(rec.e2e_s, rec.ttft_s);
  }
  EXPECT_GT(r->duration_s, 0);
}

TEST(RunnerTest, OpenLoopHonoursTheRateAndTheCap) {
  FakeBackend b;
  b.per_token = std::chrono::milliseconds(5);
  auto w = Workload::Create(Random(5, 4), nullptr).value();
  LoadOptions o = Closed(1, 30);
  o.request_rate = 50;
  o.max_concurrency = 2;
  auto r = RunLoad(o, GenerateSpec(), w.get(), Maker(&b));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->requests.size(), 30u);
  EXPECT_LE(b.max_seen.load(), 2);

  FakeBackend fast;
  o.max_concurrency = 0;
  o.seed = 3;
  auto uncapped = RunLoad(o, GenerateSpec(), w.get(), Maker(&fast));
  ASSERT_TRUE(uncapped.ok());
  ASSERT_EQ(uncapped->requests.size(), 30u);
  // 29 gaps of mean 20 ms: about 0.58 s (a gamma sum; wide bounds).
  const double last = uncapped->requests.back().start_s;
  EXPECT_GT(last, 0.25);
  EXPECT_LT(last, 1.5);
}

TEST(RunnerTest, BurstinessChangesTheSpread) {
  auto gaps_cv = [](double burstiness) {
    FakeBackend b;
    b.per_token = std::chrono::milliseconds(0);
    auto w = Workload::Create(Random(2, 1), nullptr).value();
    LoadOptions o = Closed(1, 60);
    o.request_rate = 300;
    o.burstiness = burstiness;
    auto r = RunLoad(o, GenerateSpec(), w.get(), Maker(&b)).value();
    std::vector<double> starts;
    for (const RequestRecord& rec : r.requests) starts.push_back(rec.start_s);
    std::sort(starts.begin(), starts.end());
    std::vector<double> gaps;
    for (size_t i = 1; i < starts.size(); ++i) gaps.push_back(starts[i] - starts[i - 1]);
    Distribution d = Summarize(gaps, {});
    return d.std / d.mean;
  };
  // Coefficient of variation 1/sqrt(shape): ~0.3 for 10, ~1 for 1 (Poisson).
  EXPECT_LT(gaps_cv(10), gaps_cv(1));
}

TEST(RunnerTest, ClientCancellation) {
  FakeBackend b;
  b.per_token = std::chrono::milliseconds(5);
  auto w = Workload::Create(Random(5, 200), nullptr).value();
  LoadOptions o = Closed(4, 8);
  o.cancel_fraction = 1;
  o.cancel_after_ms = 30;
  const Clock::time_point start = Clock::now();
  auto r = RunLoad(o, GenerateSpec(), w.get(), Maker(&b));
  ASSERT_TRUE(r.ok());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  Metrics m = ComputeMetrics(*r, {99}, {});
  EXPECT_EQ(m.cancelled, 8);
  EXPECT_EQ(m.failed, 0);
  EXPECT_EQ(m.completed, 0);
  for (const RequestRecord& rec : r->requests) {
    EXPECT_TRUE(rec.cancel_scheduled);
    EXPECT_TRUE(rec.cancelled);
    EXPECT_GT(rec.streamed_tokens, 0);
    EXPECT_LT(rec.streamed_tokens, 200);
  }
  // A fraction: about half, chosen by seed.
  FakeBackend quick;
  auto short_w = Workload::Create(Random(5, 40), nullptr).value();
  o = Closed(8, 40);
  o.cancel_fraction = 0.5;
  o.cancel_after_ms = 10;
  quick.per_token = std::chrono::milliseconds(2);
  auto half = RunLoad(o, GenerateSpec(), short_w.get(), Maker(&quick)).value();
  Metrics hm = ComputeMetrics(half, {99}, {});
  EXPECT_GE(hm.cancelled, 8);
  EXPECT_LE(hm.cancelled, 32);
  EXPECT_EQ(hm.cancelled + hm.completed, 40);
}

TEST(RunnerTest, ErrorsAreCountedByKind) {
  FakeBackend b;
  b.capacity = 1;
  b.per_token = std::chrono::milliseconds(5);
  auto w = Workload::Create(Random(5, 10), nullptr).value();
  auto r = RunLoad(Closed(6, 12), GenerateSpec(), w.get(), Maker(&b));
  ASSERT_TRUE(r.ok());
  Metrics m = ComputeMetrics(*r, {99}, {});
  EXPECT_EQ(m.completed + m.failed, 12);
  EXPECT_GT(m.failed, 0);
  EXPECT_EQ(m.errors_by_kind.at("http_429"), m.failed);
  EXPECT_NE(m.error_examples.at("http_429").find("queue is full"), std::string::npos);
}

TEST(RunnerTest, ConversationsResendTheHistory) {
  FakeBackend b;
  WorkloadOptions wo = Random(10, 3);
  wo.turns = 3;
  auto w = Workload::Create(wo, nullptr).value();
  auto r = RunLoad(Closed(1, 6), GenerateSpec(), w.get(), Maker(&b));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->requests.size(), 6u);
  ASSERT_EQ(b.prompts.size(), 6u);
  // Conversation 0: prompts of 10, 10 + 3 + 10, 23 + 3 + 10 tokens.
  EXPECT_EQ(b.prompts[0].ids.size(), 10u);
  EXPECT_EQ(b.prompts[1].ids.size(), 23u);
  EXPECT_EQ(b.prompts[2].ids.size(), 36u);
  EXPECT_TRUE(
      std::equal(b.prompts[0].ids.begin(), b.prompts[0].ids.end(), b.prompts[1].ids.begin()));
  EXPECT_EQ(b.prompts[1].ids[10], 1000);  // the answer follows the first prompt
  EXPECT_EQ(b.prompts[1].ids[12], 1002);
  EXPECT_EQ(r->requests[2].turn, 2);
  EXPECT_EQ(r->requests[2].input_tokens, 36);
  EXPECT_EQ(r->requests[3].conversation, 1);
  EXPECT_EQ(b.prompts[3].ids.size(), 10u);
}

TEST(RunnerTest, DurationBoundsTheRun) {
  FakeBackend b;
  b.per_token = std::chrono::milliseconds(10);
  auto w = Workload::Create(Random(5, 2), nullptr).value();
  LoadOptions o = Closed(2, 0);
  o.duration_s = 0.3;
  const Clock::time_point start = Clock::now();
  auto r = RunLoad(o, GenerateSpec(), w.get(), Maker(&b));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_GT(r->requests.size(), 4u);
  for (const RequestRecord& rec : r->requests) EXPECT_LT(rec.start_s, 0.3 + 0.05);
  LoadOptions none = Closed(1, 0);
  EXPECT_FALSE(RunLoad(none, GenerateSpec(), w.get(), Maker(&b)).ok());
}

TEST(RunnerTest, StopFlagCancelsEverything) {
  FakeBackend b;
  b.per_token = std::chrono::milliseconds(20);
  auto w = Workload::Create(Random(5, 1000), nullptr).value();
  std::atomic<bool> stop{false};
  LoadOptions o = Closed(3, 30);
  o.stop = &stop;
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    stop = true;
  });
  const Clock::time_point start = Clock::now();
  auto r = RunLoad(o, GenerateSpec(), w.get(), Maker(&b));
  stopper.join();
  ASSERT_TRUE(r.ok());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  EXPECT_TRUE(r->interrupted);
  EXPECT_EQ(r->requests.size(), 3u);
  for (const RequestRecord& rec : r->requests) EXPECT_TRUE(rec.cancelled);
}

RunResult Synthetic() {
  RunResult run;
  run.duration_s = 2.0;
  RequestRecord a;  // 11 tokens: TTFT 100 ms, E2EL 600 ms -> TPOT 50 ms
  a.ok = true;
  a.ttft_s = 0.1;
  a.e2e_s = 0.6;
  a.input_tokens = 100;
  a.output_tokens = 11;
  a.streamed_tokens = 11;
  a.server_usage = true;
  a.itls = std::vector<double>(10, 0.05);
  a.queue_s = 0.01;
  RequestRecord b = a;  // slower: TTFT 300 ms, E2EL 1300 ms -> TPOT 100 ms
  b.index = 1;
  b.ttft_s = 0.3;
  b.e2e_s = 1.3;
  b.itls = std::vector<double>(10, 0.1);
  b.queue_s = 0.2;
  RequestRecord c;  // failed
  c.index = 2;
  c.error_kind = "http_429";
  c.error = "HTTP 429: the queue is full";
  RequestRecord d;  // cancelled
  d.index = 3;
  d.cancelled = true;
  d.error_kind = "cancelled";
  run.requests = {a, b, c, d};
  run.max_in_flight = 2;
  return run;
}

TEST(ReportTest, MetricsFollowTheDefinitions) {
  Slo slo;
  slo.ttft_ms = 200;
  slo.tpot_ms = 60;
  Metrics m = ComputeMetrics(Synthetic(), {50, 99}, slo);
  EXPECT_EQ(m.sent, 4);
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.cancelled, 1);
  EXPECT_EQ(m.total_input_tokens, 200);
  EXPECT_EQ(m.total_output_tokens, 22);
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(m.output_throughput, 11.0);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 111.0);
  EXPECT_NEAR(m.tpot_ms.mean, 75, 1e-9);
  EXPECT_NEAR(m.tpot_ms.min, 50, 1e-9);
  EXPECT_NEAR(m.ttft_ms.median, 200, 1e-9);
  EXPECT_EQ(m.itl_ms.count, 20u);
  EXPECT_NEAR(m.itl_ms.mean, 75, 1e-9);
  EXPECT_NEAR(m.e2el_ms.max, 1300, 1e-9);
  ASSERT_TRUE(m.queue_ms.has_value());
  EXPECT_NEAR(m.queue_ms->mean, 105, 1e-9);
  EXPECT_EQ(m.good_requests, 1);
  EXPECT_DOUBLE_EQ(*m.request_goodput, 0.5);
  EXPECT_EQ(m.errors_by_kind.at("http_429"), 1);
  EXPECT_EQ(m.errors_by_kind.count("cancelled"), 0u);
}

TEST(ReportTest, JsonHasVllmKeysAndPerRequestDetails) {
  const RunResult run = Synthetic();
  Metrics m = ComputeMetrics(run, {50, 90, 99}, {});
  RunInfo info;
  info.backend = "grpc";
  info.concurrency = 2;
  Json j = ResultJson(info, run, m, {50, 90, 99}, {}, false);
  for (const char* key : {"duration",
                          "completed",
                          "total_input_tokens",
                          "total_output_tokens",
                          "request_throughput",
                          "request_goodput",
                          "output_throughput",
                          "total_token_throughput",
                          "mean_ttft_ms",
                          "median_ttft_ms",
                          "std_ttft_ms",
                          "p99_ttft_ms",
                          "mean_tpot_ms",
                          "median_tpot_ms",
                          "p90_tpot_ms",
                          "mean_itl_ms",
                          "median_itl_ms",
                          "p99_itl_ms",
                          "p50_e2el_ms",
                          "max_e2el_ms",
                          "mean_queue_ms",
                          "input_lens",
                          "output_lens",
                          "ttfts",
                          "itls",
                          "errors",
                          "errors_by_code",
                          "max_concurrency",
                          "request_rate",
                          "burstiness"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_EQ(j["input_lens"].size(), 4u);
  EXPECT_EQ(j["itls"][0].size(), 10u);
  EXPECT_EQ(j["errors"][0], "");
  EXPECT_EQ(j["errors"][2], "HTTP 429: the queue is full");
  EXPECT_EQ(j["error_codes"][3], "cancelled");
  EXPECT_EQ(j["errors_by_code"]["http_429"], 1);
  EXPECT_FALSE(j.contains("generated_texts"));
  const std::string table = FormatSummary(info, m, {50, 90, 99}, {});
  EXPECT_NE(table.find("Successful requests:"), std::string::npos);
  EXPECT_NE(table.find("errors http_429:"), std::string::npos);
  EXPECT_NE(table.find("TPOT"), std::string::npos);
  EXPECT_NE(table.find("p99"), std::string::npos);
  const std::string sweep = FormatSweepTable("concurrency", {{"1", m}, {"2", m}}, {50, 99});
  EXPECT_NE(sweep.find("TTFT p99"), std::string::npos);
}

TEST(ReportTest, ParsesSlos) {
  auto slo = ParseSlo({"ttft:500", "tpot:50,e2el:2000"});
  ASSERT_TRUE(slo.ok());
  EXPECT_EQ(*slo->ttft_ms, 500);
  EXPECT_EQ(*slo->tpot_ms, 50);
  EXPECT_EQ(*slo->e2el_ms, 2000);
  EXPECT_FALSE(ParseSlo({"ttft"}).ok());
  EXPECT_FALSE(ParseSlo({"latency:5"}).ok());
  EXPECT_FALSE(ParseSlo({"ttft:-1"}).ok());
  EXPECT_FALSE(ParseSlo({}).value().any());
}

TEST(ChartTest, DrawsSvgAndPngWithGnuplot) {
  std::optional<std::string> gnuplot = FindGnuplot();
  if (!gnuplot) GTEST_SKIP() << "gnuplot is not installed (apt-get install gnuplot-nox)";
  Metrics a = ComputeMetrics(Synthetic(), {50, 99}, {});
  Metrics b = a;
  b.output_throughput *= 2;
  b.ttft_ms.median *= 3;
  const testing::TempDir temp;
  const std::string dir = temp.path().string();
  for (const char* name : {"/sweep.svg", "/sweep.png"}) {
    const std::string path = dir + name;
    absl::Status s = WriteSweepChart(*gnuplot, "concurrency", {{"1", a}, {"4", b}}, path);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(std::filesystem::exists(path));
    EXPECT_GT(std::filesystem::file_size(path), 1000u);
  }
  std::ifstream svg(dir + "/sweep.svg");
  std::string head(200, '\0');
  svg.read(head.data(), 200);
  EXPECT_NE(head.find("<svg"), std::string::npos);
}

}  // namespace
}  // namespace mamba::client::loadgen
