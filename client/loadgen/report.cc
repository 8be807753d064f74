#include "client/loadgen/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mamba::client::loadgen {
namespace {

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string Row(const std::string& label, const std::string& value) {
  std::string line = label;
  if (line.size() < 42) line.append(42 - line.size(), ' ');
  return absl::StrCat(line, value, "\n");
}

void AddDistribution(Json& j, const char* name, const Distribution& d) {
  j[absl::StrCat("mean_", name, "_ms")] = d.mean;
  j[absl::StrCat("median_", name, "_ms")] = d.median;
  j[absl::StrCat("std_", name, "_ms")] = d.std;
  j[absl::StrCat("min_", name, "_ms")] = d.min;
  j[absl::StrCat("max_", name, "_ms")] = d.max;
  for (const auto& [p, v] : d.percentiles)
    j[absl::StrCat("p", PercentileKey(p), "_", name, "_ms")] = v;
}

std::string DistributionRow(const char* label, const Distribution& d) {
  std::string line = label;
  line.append(8 - std::min<size_t>(8, line.size()), ' ');
  for (double v : {d.mean, d.median, d.std, d.min, d.max}) line += Fmt("%10.2f", v);
  for (const auto& [p, v] : d.percentiles) line += Fmt("%10.2f", v);
  return line + "\n";
}

// Counters are whole numbers; print them as such.
bool Integral(double v) { return std::abs(v) < 9e15 && v == std::floor(v); }

std::string FigureText(const std::optional<double>& v) {
  if (!v) return "n/a";
  if (Integral(*v)) return absl::StrCat(static_cast<int64_t>(*v));
  return Fmt("%.2f", *v);
}

Json FigureJson(const std::optional<double>& v) {
  if (!v) return nullptr;
  if (Integral(*v)) return static_cast<int64_t>(*v);
  return *v;
}

std::string TurnTable(const std::vector<TurnLatency>& turns) {
  std::string s = "-------------- TTFT by turn (ms) -----------------\n";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%-6s%6s%10s%10s", "turn", "n", "mean", "median");
  std::string head = buf;
  if (!turns.empty()) {
    for (const auto& [p, v] : turns.front().ttft_ms.percentiles) {
      std::snprintf(buf, sizeof(buf), "%10s", absl::StrCat("p", PercentileKey(p)).c_str());
      head += buf;
    }
  }
  s += head + "   input tok\n";
  for (const TurnLatency& t : turns) {
    std::snprintf(buf, sizeof(buf), "%-6d%6zu%10.2f%10.2f", t.turn, t.ttft_ms.count, t.ttft_ms.mean,
                  t.ttft_ms.median);
    std::string line = buf;
    for (const auto& [p, v] : t.ttft_ms.percentiles) line += Fmt("%10.2f", v);
    line += Fmt("%12.1f", t.mean_input_tokens);
    s += line + "\n";
  }
  return s;
}

std::string ServerTable(const ServerReuse& server) {
  std::string s = "----- Server counters (deltas over the run) ------\n";
  s += Row("Scraped:", server.url);
  if (!server.error.empty()) s += Row("Scrape failed:", server.error);
  for (const ServerFigure& f : server.figures) s += Row(f.label + ":", FigureText(f.value));
  if (server.sessions_live_after_cleanup) {
    s += Row("Sessions live after deleting the run's:",
             FigureText(server.sessions_live_after_cleanup));
  }
  return s;
}

Json ServerJson(const ServerReuse& server) {
  Json j;
  j["url"] = server.url;
  j["error"] = server.error.empty() ? Json(nullptr) : Json(server.error);
  for (const ServerFigure& f : server.figures) j[f.key] = FigureJson(f.value);
  if (server.sessions_live_after_cleanup)
    j["sessions_live_after_cleanup"] = FigureJson(server.sessions_live_after_cleanup);
  return j;
}

std::string Timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", &tm);
  return buf;
}

}  // namespace

std::vector<TurnLatency> TtftByTurn(const std::vector<RequestRecord>& requests, int turns,
                                    const std::vector<double>& percentiles) {
  std::vector<std::vector<double>> ttft(static_cast<size_t>(std::max(turns, 0)));
  std::vector<int64_t> inputs(ttft.size(), 0), completed(ttft.size(), 0);
  for (const RequestRecord& r : requests) {
    if (!r.ok || r.turn < 0 || r.turn >= turns) continue;
    const size_t k = static_cast<size_t>(r.turn);
    ++completed[k];
    inputs[k] += r.input_tokens;
    if (r.streamed_tokens > 0) ttft[k].push_back(r.ttft_s * 1e3);
  }
  std::vector<TurnLatency> out;
  for (size_t k = 0; k < ttft.size(); ++k) {
    TurnLatency t;
    t.turn = static_cast<int>(k) + 1;
    t.completed = completed[k];
    t.ttft_ms = Summarize(std::move(ttft[k]), percentiles);
    if (completed[k] > 0)
      t.mean_input_tokens = static_cast<double>(inputs[k]) / static_cast<double>(completed[k]);
    out.push_back(std::move(t));
  }
  return out;
}

Metrics ComputeMetrics(const RunResult& run, const std::vector<double>& percentiles,
                       const Slo& slo) {
  Metrics m;
  std::vector<double> ttft, tpot, itl, e2el, queue;
  for (const RequestRecord& r : run.requests) {
    ++m.sent;
    if (r.cancelled) {
      ++m.cancelled;
      continue;
    }
    if (!r.ok) {
      ++m.failed;
      ++m.errors_by_kind[r.error_kind];
      m.error_examples.emplace(r.error_kind, r.error);
      continue;
    }
    ++m.completed;
    m.total_input_tokens += r.input_tokens;
    m.total_output_tokens += r.output_tokens;
    if (!r.server_usage) m.all_usage_from_server = false;
    if (r.streamed_tokens > 0) ttft.push_back(r.ttft_s * 1e3);
    e2el.push_back(r.e2e_s * 1e3);
    double request_tpot = 0;
    if (r.output_tokens > 1) {
      request_tpot = (r.e2e_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1) * 1e3;
      tpot.push_back(request_tpot);
    }
    for (double gap : r.itls) itl.push_back(gap * 1e3);
    if (r.queue_s) queue.push_back(*r.queue_s * 1e3);
    const bool good = (!slo.ttft_ms || r.ttft_s * 1e3 <= *slo.ttft_ms) &&
                      (!slo.tpot_ms || request_tpot <= *slo.tpot_ms) &&
                      (!slo.e2el_ms || r.e2e_s * 1e3 <= *slo.e2el_ms);
    if (good) ++m.good_requests;
  }
  m.abandoned_turns = run.abandoned_turns;
  m.duration_s = run.duration_s;
  m.max_in_flight = run.max_in_flight;
  if (m.duration_s > 0) {
    m.request_throughput = static_cast<double>(m.completed) / m.duration_s;
    m.output_throughput = static_cast<double>(m.total_output_tokens) / m.duration_s;
    m.total_token_throughput =
        static_cast<double>(m.total_input_tokens + m.total_output_tokens) / m.duration_s;
    if (slo.any()) m.request_goodput = static_cast<double>(m.good_requests) / m.duration_s;
  }
  m.ttft_ms = Summarize(std::move(ttft), percentiles);
  m.tpot_ms = Summarize(std::move(tpot), percentiles);
  m.itl_ms = Summarize(std::move(itl), percentiles);
  m.e2el_ms = Summarize(std::move(e2el), percentiles);
  if (!queue.empty()) m.queue_ms = Summarize(std::move(queue), percentiles);
  if (run.turns > 1) m.ttft_by_turn = TtftByTurn(run.requests, run.turns, percentiles);
  return m;
}

Json ResultJson(const RunInfo& info, const RunResult& run, const Metrics& m,
                const std::vector<double>& percentiles, const Slo& slo, bool with_texts) {
  Json j;
  j["date"] = Timestamp();
  j["backend"] = info.backend;
  j["target"] = info.target;
  j["model_id"] = info.model_id;
  j["num_prompts"] = m.sent;
  if (info.request_rate > 0) {
    j["request_rate"] = info.request_rate;
  } else {
    j["request_rate"] = "inf";
  }
  j["burstiness"] = info.burstiness;
  if (info.request_rate > 0) {
    j["max_concurrency"] = info.max_concurrency > 0 ? Json(info.max_concurrency) : Json(nullptr);
  } else {
    j["max_concurrency"] = info.concurrency;
  }
  j["workload"] = info.workload;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["cancelled"] = m.cancelled;
  j["abandoned_turns"] = m.abandoned_turns;
  j["total_input_tokens"] = m.total_input_tokens;
  j["total_output_tokens"] = m.total_output_tokens;
  j["token_counts_from_server"] = m.all_usage_from_server;
  j["request_throughput"] = m.request_throughput;
  j["request_goodput"] = m.request_goodput ? Json(*m.request_goodput) : Json(nullptr);
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_concurrent_requests"] = m.max_in_flight;
  Json slo_json = Json::object();
  if (slo.ttft_ms) slo_json["ttft"] = *slo.ttft_ms;
  if (slo.tpot_ms) slo_json["tpot"] = *slo.tpot_ms;
  if (slo.e2el_ms) slo_json["e2el"] = *slo.e2el_ms;
  j["goodput_slos_ms"] = slo_json;
  j["percentiles"] = percentiles;
  AddDistribution(j, "ttft", m.ttft_ms);
  AddDistribution(j, "tpot", m.tpot_ms);
  AddDistribution(j, "itl", m.itl_ms);
  AddDistribution(j, "e2el", m.e2el_ms);
  if (m.queue_ms) AddDistribution(j, "queue", *m.queue_ms);
  j["errors_by_code"] = m.errors_by_kind;
  if (!m.ttft_by_turn.empty()) {
    Json turns = Json::array();
    for (const TurnLatency& t : m.ttft_by_turn) {
      Json tj;
      tj["turn"] = t.turn;
      tj["completed"] = t.completed;
      AddDistribution(tj, "ttft", t.ttft_ms);
      tj["mean_input_tokens"] = t.mean_input_tokens;
      turns.push_back(std::move(tj));
    }
    j["ttft_by_turn"] = std::move(turns);
  }
  if (m.server) j["server_metrics"] = ServerJson(*m.server);
  if (const std::optional<SessionCleanup>& c = m.session_cleanup) {
    j["session_cleanup"] = {{"deleted", c->deleted},
                            {"not_found", c->not_found},
                            {"failed", c->failed},
                            {"first_error", c->first_error}};
  }
  const bool sessions = !run.session_prefix.empty();
  if (sessions) j["session_prefix"] = run.session_prefix;

  Json input_lens = Json::array(), output_lens = Json::array(), ttfts = Json::array(),
       itls = Json::array(), e2els = Json::array(), starts = Json::array(), errors = Json::array(),
       codes = Json::array(), queue = Json::array(), cancelled = Json::array(),
       conversations = Json::array(), turns = Json::array(), texts = Json::array(),
       session_tokens = Json::array(), adapters = Json::array();
  bool any_adapter = false;
  for (const RequestRecord& r : run.requests) {
    input_lens.push_back(r.input_tokens);
    output_lens.push_back(r.output_tokens);
    ttfts.push_back(r.ttft_s);
    itls.push_back(r.itls);
    e2els.push_back(r.e2e_s);
    starts.push_back(r.start_s);
    errors.push_back(r.ok ? "" : r.error);
    codes.push_back(r.ok ? "" : (r.cancelled ? "cancelled" : r.error_kind));
    queue.push_back(r.queue_s ? Json(*r.queue_s) : Json(nullptr));
    cancelled.push_back(r.cancelled);
    conversations.push_back(r.conversation);
    turns.push_back(r.turn);
    if (with_texts) texts.push_back(r.text);
    session_tokens.push_back(r.session_tokens ? Json(*r.session_tokens) : Json(nullptr));
    adapters.push_back(r.adapter);
    any_adapter = any_adapter || !r.adapter.empty();
  }
  j["input_lens"] = std::move(input_lens);
  j["output_lens"] = std::move(output_lens);
  j["ttfts"] = std::move(ttfts);
  j["itls"] = std::move(itls);
  j["e2els"] = std::move(e2els);
  j["start_times"] = std::move(starts);
  j["queue_times"] = std::move(queue);
  j["conversation_ids"] = std::move(conversations);
  j["turns"] = std::move(turns);
  j["cancelled_requests"] = std::move(cancelled);
  if (sessions) j["session_tokens"] = std::move(session_tokens);
  if (any_adapter) j["adapters"] = std::move(adapters);  // per request; "" = the base model
  j["error_codes"] = std::move(codes);
  j["errors"] = std::move(errors);
  if (with_texts) j["generated_texts"] = std::move(texts);
  return j;
}

std::string FormatSummary(const RunInfo& info, const Metrics& m,
                          const std::vector<double>& percentiles, const Slo& slo) {
  std::string s = "============ Serving Benchmark Result ============\n";
  s += Row("Backend:", absl::StrCat(info.backend, " @ ", info.target));
  if (info.request_rate > 0) {
    s += Row("Load:",
             absl::StrCat("open loop, ", info.request_rate, " req/s, burstiness ", info.burstiness,
                          info.max_concurrency > 0
                              ? absl::StrCat(", max concurrency ", info.max_concurrency)
                              : ""));
  } else {
    s += Row("Load:", absl::StrCat("closed loop, concurrency ", info.concurrency));
  }
  if (info.turns > 1 || info.sessions) {
    s += Row("Conversations:",
             absl::StrCat(info.turns, info.turns == 1 ? " turn" : " turns",
                          info.sessions ? ", server sessions (each turn sends its new input)"
                                        : ", each turn resends the history"));
  }
  s += Row("Successful requests:", absl::StrCat(m.completed));
  s += Row("Failed requests:", absl::StrCat(m.failed));
  if (m.cancelled > 0) s += Row("Cancelled by the client:", absl::StrCat(m.cancelled));
  if (m.abandoned_turns > 0) s += Row("Abandoned turns:", absl::StrCat(m.abandoned_turns));
  s += Row("Benchmark duration (s):", Fmt("%.2f", m.duration_s));
  s += Row("Total input tokens:", absl::StrCat(m.total_input_tokens));
  s += Row("Total generated tokens:",
           absl::StrCat(m.total_output_tokens,
                        m.all_usage_from_server ? "" : " (partly counted by the client)"));
  s += Row("Request throughput (req/s):", Fmt("%.2f", m.request_throughput));
  if (m.request_goodput) {
    std::string slos;
    if (slo.ttft_ms) absl::StrAppend(&slos, " ttft<=", *slo.ttft_ms);
    if (slo.tpot_ms) absl::StrAppend(&slos, " tpot<=", *slo.tpot_ms);
    if (slo.e2el_ms) absl::StrAppend(&slos, " e2el<=", *slo.e2el_ms);
    s += Row("Request goodput (req/s):", absl::StrCat(Fmt("%.2f", *m.request_goodput), "  (",
                                                      m.good_requests, " met", slos, " ms)"));
  }
  s += Row("Output token throughput (tok/s):", Fmt("%.2f", m.output_throughput));
  s += Row("Total token throughput (tok/s):", Fmt("%.2f", m.total_token_throughput));
  s += Row("Max requests in flight:", absl::StrCat(m.max_in_flight));
  for (const auto& [kind, count] : m.errors_by_kind) {
    auto example = m.error_examples.find(kind);
    std::string msg = example == m.error_examples.end() ? "" : example->second;
    if (msg.size() > 80) msg = msg.substr(0, 77) + "...";
    s += Row(absl::StrCat("  errors ", kind, ":"),
             absl::StrCat(count, msg.empty() ? "" : "  e.g. ", msg));
  }
  std::string head = "(ms)    ";
  for (const char* c : {"mean", "median", "std", "min", "max"}) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%10s", c);
    head += buf;
  }
  for (double p : percentiles) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%10s", absl::StrCat("p", PercentileKey(p)).c_str());
    head += buf;
  }
  s += "--------------------------------------------------\n" + head + "\n";
  s += DistributionRow("TTFT", m.ttft_ms);
  s += DistributionRow("TPOT", m.tpot_ms);
  s += DistributionRow("ITL", m.itl_ms);
  s += DistributionRow("E2EL", m.e2el_ms);
  if (m.queue_ms) s += DistributionRow("Queue", *m.queue_ms);
  if (!m.ttft_by_turn.empty()) s += TurnTable(m.ttft_by_turn);
  if (m.server) s += ServerTable(*m.server);
  if (const std::optional<SessionCleanup>& c = m.session_cleanup) {
    s += Row("Sessions deleted after the run:",
             absl::StrCat(c->deleted, " (", c->not_found, " not found, ", c->failed, " failed",
                          c->first_error.empty() ? "" : ", e.g. ", c->first_error, ")"));
  }
  s += "==================================================\n";
  return s;
}

std::string FormatSweepTable(const std::string& parameter, const std::vector<SweepPoint>& points,
                             const std::vector<double>& percentiles) {
  const std::string top = percentiles.empty() ? "99" : PercentileKey(percentiles.back());
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-14s %6s %6s %6s %9s %10s %10s %10s %10s %10s %10s %10s\n",
                parameter.c_str(), "ok", "fail", "canc", "req/s", "out tok/s", "TTFT p50",
                ("TTFT p" + top).c_str(), "TPOT p50", ("TPOT p" + top).c_str(), "ITL p50",
                ("E2EL p" + top).c_str());
  s += buf;
  auto pick = [](const Distribution& d) {
    return d.percentiles.empty() ? d.max : d.percentiles.back().second;
  };
  for (const SweepPoint& p : points) {
    const Metrics& m = p.metrics;
    std::snprintf(
        buf, sizeof(buf),
        "%-14s %6lld %6lld %6lld %9.2f %10.1f %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n",
        p.value.c_str(), static_cast<long long>(m.completed), static_cast<long long>(m.failed),
        static_cast<long long>(m.cancelled), m.request_throughput, m.output_throughput,
        m.ttft_ms.median, pick(m.ttft_ms), m.tpot_ms.median, pick(m.tpot_ms), m.itl_ms.median,
        pick(m.e2el_ms));
    s += buf;
  }
  s += "(latencies in ms)\n";
  return s;
}

absl::StatusOr<Slo> ParseSlo(const std::vector<std::string>& items) {
  Slo slo;
  for (const std::string& item : items) {
    for (absl::string_view part : absl::StrSplit(item, absl::ByAnyChar(", "), absl::SkipEmpty())) {
      std::vector<std::string> kv = absl::StrSplit(part, ':');
      double v = 0;
      if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &v) || v <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad goodput SLO '", part, "' (e.g. ttft:500 tpot:50 e2el:2000, in ms)"));
      }
      if (kv[0] == "ttft") {
        slo.ttft_ms = v;
      } else if (kv[0] == "tpot") {
        slo.tpot_ms = v;
      } else if (kv[0] == "e2el") {
        slo.e2el_ms = v;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown SLO metric '", kv[0], "' (ttft, tpot, e2el)"));
      }
    }
  }
  return slo;
}

}  // namespace mamba::client::loadgen
