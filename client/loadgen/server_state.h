// The server's side of a run: what it says it reused (its Prometheus /metrics scraped before and
// after; the deltas of the state-cache and prompt-token counters, live sessions after), and
// deleting the run's sessions at its end.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "client/endpoint.h"
#include "client/grpc_api.h"
#include "client/http_client.h"

namespace mamba::client::loadgen {

using Labels = std::map<std::string, std::string>;

// Prometheus text exposition format (version 0.0.4): `name{label="value",...} value [timestamp]`
// lines; comments, blank and malformed lines are skipped.
class PrometheusText {
 public:
  struct Sample {
    std::string name;
    Labels labels;
    double value = 0;
  };

  static PrometheusText Parse(std::string_view text);

  // The sum of the samples named `name` whose labels include every one of `labels`; nullopt when
  // there is none.
  std::optional<double> Value(std::string_view name, const Labels& labels = {}) const;
  const std::vector<Sample>& samples() const { return samples_; }

 private:
  std::vector<Sample> samples_;
};

// One reported figure: a counter's increase over the run, or a gauge's value after it.
struct ServerFigure {
  std::string key;    // JSON key, e.g. "state_cache_hits"
  std::string label;  // for the text report
  bool gauge = false;
  std::optional<double> value;  // nullopt: the server does not export it ("n/a")
};

struct ServerReuse {
  std::string url;    // what was scraped
  std::string error;  // why a scrape failed (then every value is n/a)
  std::vector<ServerFigure> figures;
  std::optional<double> sessions_live_after_cleanup;  // after the run's sessions were deleted
};

// The figures from the two scrapes. Counters (first metric found of each figure's candidates):
//   state_cache_hits / _partial_hits / _misses  mamba_state_cache_lookups_total{result=hit|
//                                                partial|miss} (or mamba_state_cache_hits_total,
//                                                ..._partial_hits_total, ..._misses_total)
//   state_cache_tokens_reused                    mamba_state_cache_tokens_reused_total
//   prompt_tokens                                mamba_prompt_tokens_total (prompt tokens of
//                                                finished requests, as sent)
//   prompt_tokens_computed                       mamba_engine_prefill_tokens_total (prompt tokens
//                                                the engine ran)
// Gauge: sessions_live (mamba_sessions_live) after. A counter that is absent before but present
// after counts from 0 (a labelled child appears at its first increment).
ServerReuse ComputeReuse(const PrometheusText& before, const PrometheusText& after);

// GET {endpoint base}/metrics with a deadline.
absl::StatusOr<PrometheusText> ScrapeMetrics(const Endpoint& endpoint, const std::string& api_key,
                                             const HttpClientOptions& options, double timeout_s);

// --metrics-url: an http(s)://HOST:PORT[/BASE] URL, a trailing "/metrics" allowed.
absl::StatusOr<Endpoint> ParseMetricsUrl(std::string_view url);

struct SessionCleanup {
  int64_t deleted = 0, not_found = 0, failed = 0;
  std::string first_error;
};

// Deletes each session (client/session_api.h: DELETE /v1/sessions/{id}, or MambaService's
// DeleteSession), one connection, best-effort: NOT_FOUND (HTTP 404) counts as not found, other
// errors as failed; stops (counting the rest as failed) once `budget_s` has passed.
SessionCleanup DeleteSessions(const Endpoint& endpoint, const std::string& api_key,
                              const HttpClientOptions& http, const GrpcOptions& grpc,
                              const std::vector<std::string>& ids, double budget_s);

}  // namespace mamba::client::loadgen
