// What a run measured, as vLLM's benchmark_serving, genai-perf and llmperf report it.
//
// Definitions (per request, over successful requests unless said otherwise; "token event" =
// a streamed message carrying at least one generated token):
//   TTFT   time to first token: request sent -> first token event.
//   TPOT   time per output token: (E2EL - TTFT) / (output_tokens - 1), for requests with more
//          than one output token.
//   ITL    inter-token latency: every gap between consecutive token events, pooled over all
//          requests (a message carrying k tokens is one gap, as in vLLM).
//   E2EL   end-to-end latency: request sent -> answer complete.
//   Queue  the server's queue time (received -> first scheduled), when it reports it (gRPC
//          Timing.queue_seconds).
//   Each: mean, median, std (population), min, max and the chosen percentiles (linear
//   interpolation, as numpy), in milliseconds.
//   Duration: run start -> last request finished. Request throughput = successful requests /
//   duration; output throughput = their output tokens / duration; total token throughput =
//   (their input + output tokens) / duration.
//   Goodput: successful requests meeting every given SLO (TTFT, TPOT, E2EL <= limit) / duration.
//   Token counts: the server's usage numbers when it sends them (OpenAI include_usage, the gRPC
//   end message, TGI details), else the streamed count; input tokens without usage are the
//   planned prompt length.
//   Failed requests are counted by error kind (http_429, grpc_resource_exhausted, connect,
//   timeout, session, ...); requests the client cancelled on purpose are counted apart, in
//   neither.
//   TTFT by turn (multi-turn runs): the TTFT distribution of the successful requests of each
//   turn index 1..T, and their mean input tokens (the server's prompt count: the whole history
//   with or without sessions; else the planned length, new input only with sessions).
//   Server counters: deltas of the server's reuse counters over the run (server_state.h).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "client/loadgen/runner.h"
#include "client/loadgen/server_state.h"
#include "client/loadgen/stats.h"
#include "nlohmann/json.hpp"

namespace mamba::client::loadgen {

using Json = nlohmann::ordered_json;

struct Slo {
  std::optional<double> ttft_ms, tpot_ms, e2el_ms;
  bool any() const { return ttft_ms || tpot_ms || e2el_ms; }
};

// The requests of one turn index of multi-turn conversations.
struct TurnLatency {
  int turn = 0;           // 1-based
  int64_t completed = 0;  // successful requests (ttft_ms counts those with a token event)
  Distribution ttft_ms;
  double mean_input_tokens = 0;
};

// Turns 1..`turns`, over successful requests with a token event (as TTFT overall); a turn
// without any has an empty distribution (zeros).
std::vector<TurnLatency> TtftByTurn(const std::vector<RequestRecord>& requests, int turns,
                                    const std::vector<double>& percentiles);

struct Metrics {
  int64_t sent = 0, completed = 0, failed = 0, cancelled = 0, abandoned_turns = 0;
  double duration_s = 0;
  int64_t total_input_tokens = 0, total_output_tokens = 0;
  bool all_usage_from_server = true;
  double request_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  std::optional<double> request_goodput;
  int64_t good_requests = 0;
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
  std::optional<Distribution> queue_ms;
  std::map<std::string, int64_t> errors_by_kind;
  std::map<std::string, std::string> error_examples;  // one message per kind
  int max_in_flight = 0;
  std::vector<TurnLatency> ttft_by_turn;          // multi-turn runs only
  std::optional<ServerReuse> server;              // set by the caller when it scraped the server
  std::optional<SessionCleanup> session_cleanup;  // set by the caller when it deleted sessions
};

Metrics ComputeMetrics(const RunResult& run, const std::vector<double>& percentiles,
                       const Slo& slo);

// Describes the run in the JSON result (vLLM's names where they exist).
struct RunInfo {
  std::string backend;  // grpc / openai / tgi
  std::string target;
  std::string model_id;
  double request_rate = 0;  // 0 = closed loop ("inf" in the JSON)
  double burstiness = 1;
  int concurrency = 0;  // closed loop
  int max_concurrency = 0;
  int turns = 1;          // per conversation
  bool sessions = false;  // --session
  Json workload;          // the workload options
};

// The vLLM-compatible result: run description, aggregates, "{mean,median,std,min,max,pNN}_
// {ttft,tpot,itl,e2el}_ms", and per-request lists (input_lens, output_lens, ttfts, itls,
// e2els, start_times, errors, error_codes ...; latencies in seconds as vLLM); ours: ttft_by_turn
// (multi-turn), server_metrics (when scraped), session_prefix and session_tokens (sessions).
Json ResultJson(const RunInfo& info, const RunResult& run, const Metrics& m,
                const std::vector<double>& percentiles, const Slo& slo, bool with_texts);

// The human summary table.
std::string FormatSummary(const RunInfo& info, const Metrics& m,
                          const std::vector<double>& percentiles, const Slo& slo);

// One row per sweep point.
struct SweepPoint {
  std::string value;
  Metrics metrics;
};
std::string FormatSweepTable(const std::string& parameter, const std::vector<SweepPoint>& points,
                             const std::vector<double>& percentiles);

// "ttft:500 tpot:50 e2el:2000" (milliseconds).
absl::StatusOr<Slo> ParseSlo(const std::vector<std::string>& items);

}  // namespace mamba::client::loadgen
