#include "client/loadgen/server_state.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/http_api.h"
#include "client/session_api.h"
#include "client/strings.h"

namespace mamba::client::loadgen {
namespace {

bool NameChar(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
         (!first && std::isdigit(static_cast<unsigned char>(c)));
}

// `label="value",...}` after the '{'; leaves `line` after the '}'. False when malformed.
bool ParseLabels(std::string_view* line, Labels* labels) {
  std::string_view& s = *line;
  while (true) {
    while (!s.empty() && (s.front() == ' ' || s.front() == ',')) s.remove_prefix(1);
    if (s.empty()) return false;
    if (s.front() == '}') {
      s.remove_prefix(1);
      return true;
    }
    size_t n = 0;
    while (n < s.size() && NameChar(s[n], n == 0)) ++n;
    if (n == 0) return false;
    std::string name(s.substr(0, n));
    s.remove_prefix(n);
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    if (s.size() < 2 || s[0] != '=' || s[1] != '"') return false;
    s.remove_prefix(2);
    std::string value;
    bool closed = false;
    while (!s.empty()) {
      const char c = s.front();
      s.remove_prefix(1);
      if (c == '"') {
        closed = true;
        break;
      }
      if (c == '\\' && !s.empty()) {
        const char e = s.front();
        s.remove_prefix(1);
        value += e == 'n' ? '\n' : e;
        continue;
      }
      value += c;
    }
    if (!closed) return false;
    (*labels)[std::move(name)] = std::move(value);
  }
}

std::optional<PrometheusText::Sample> ParseLine(std::string_view line) {
  PrometheusText::Sample sample;
  size_t n = 0;
  while (n < line.size() && NameChar(line[n], n == 0)) ++n;
  if (n == 0) return std::nullopt;
  sample.name = std::string(line.substr(0, n));
  line.remove_prefix(n);
  if (!line.empty() && line.front() == '{') {
    line.remove_prefix(1);
    if (!ParseLabels(&line, &sample.labels)) return std::nullopt;
  }
  if (line.empty() || (line.front() != ' ' && line.front() != '\t')) return std::nullopt;
  std::vector<absl::string_view> fields =
      absl::StrSplit(AV(line), absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (fields.empty() || fields.size() > 2) return std::nullopt;  // value [timestamp]
  if (!absl::SimpleAtod(fields[0], &sample.value)) return std::nullopt;
  return sample;
}

struct Source {
  const char* name;
  Labels labels;
};

struct FigureSpec {
  const char* key;
  const char* label;
  bool gauge;
  std::vector<Source> sources;  // the first one the server exports is used
};

const std::vector<FigureSpec>& Specs() {
  static const std::vector<FigureSpec> specs = {
      {"state_cache_hits",
       "State cache hits (whole prompt)",
       false,
       {{"mamba_state_cache_lookups_total", {{"result", "hit"}}},
        {"mamba_state_cache_hits_total", {}}}},
      {"state_cache_partial_hits",
       "State cache partial hits (prefix)",
       false,
       {{"mamba_state_cache_lookups_total", {{"result", "partial"}}},
        {"mamba_state_cache_partial_hits_total", {}}}},
      {"state_cache_misses",
       "State cache misses",
       false,
       {{"mamba_state_cache_lookups_total", {{"result", "miss"}}},
        {"mamba_state_cache_misses_total", {}}}},
      {"state_cache_tokens_reused",
       "Prompt tokens reused (not computed)",
       false,
       {{"mamba_state_cache_tokens_reused_total", {}}}},
      {"prompt_tokens", "Prompt tokens received", false, {{"mamba_prompt_tokens_total", {}}}},
      {"prompt_tokens_computed",
       "Prompt tokens computed (prefill)",
       false,
       {{"mamba_engine_prefill_tokens_total", {}}}},
      {"sessions_live", "Sessions live after the run", true, {{"mamba_sessions_live", {}}}},
  };
  return specs;
}

}  // namespace

PrometheusText PrometheusText::Parse(std::string_view text) {
  PrometheusText out;
  for (absl::string_view line : absl::StrSplit(AV(text), '\n')) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    if (std::optional<Sample> s = ParseLine(std::string_view(line.data(), line.size())))
      out.samples_.push_back(*std::move(s));
  }
  return out;
}

std::optional<double> PrometheusText::Value(std::string_view name, const Labels& labels) const {
  std::optional<double> sum;
  for (const Sample& s : samples_) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) {
        match = false;
        break;
      }
    }
    if (match) sum = sum.value_or(0) + s.value;
  }
  return sum;
}

ServerReuse ComputeReuse(const PrometheusText& before, const PrometheusText& after) {
  ServerReuse reuse;
  for (const FigureSpec& spec : Specs()) {
    ServerFigure f{spec.key, spec.label, spec.gauge, std::nullopt};
    for (const Source& src : spec.sources) {
      std::optional<double> a = after.Value(src.name, src.labels);
      if (!a) continue;
      f.value = spec.gauge ? *a : *a - before.Value(src.name, src.labels).value_or(0);
      break;
    }
    reuse.figures.push_back(std::move(f));
  }
  return reuse;
}

absl::StatusOr<PrometheusText> ScrapeMetrics(const Endpoint& endpoint, const std::string& api_key,
                                             const HttpClientOptions& options, double timeout_s) {
  HttpApi api(endpoint, api_key, options);
  absl::StatusOr<std::string> text = api.Metrics(timeout_s);
  if (!text.ok()) return text.status();
  return PrometheusText::Parse(*text);
}

SessionCleanup DeleteSessions(const Endpoint& endpoint, const std::string& api_key,
                              const HttpClientOptions& http, const GrpcOptions& grpc,
                              const std::vector<std::string>& ids, double budget_s) {
  SessionCleanup out;
  if (ids.empty()) return out;
  const Clock::time_point end = DeadlineAfter(budget_s);
  absl::StatusOr<std::unique_ptr<SessionApi>> api =
      MakeSessionApi(endpoint, api_key, http, grpc, std::min(budget_s, 10.0));
  if (!api.ok()) {
    out.failed = static_cast<int64_t>(ids.size());
    out.first_error = std::string(api.status().message());
    return out;
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    const double left = std::chrono::duration<double>(end - Clock::now()).count();
    if (left <= 0) {
      out.failed += static_cast<int64_t>(ids.size() - i);
      if (out.first_error.empty())
        out.first_error = absl::StrCat("no time left (", budget_s, " s) for the rest");
      break;
    }
    absl::Status s = (*api)->Delete(ids[i]);
    if (s.ok()) {
      ++out.deleted;
    } else if (s.code() == absl::StatusCode::kNotFound) {
      ++out.not_found;
    } else {
      ++out.failed;
      if (out.first_error.empty()) out.first_error = std::string(s.message());
    }
  }
  return out;
}

absl::StatusOr<Endpoint> ParseMetricsUrl(std::string_view url) {
  absl::StatusOr<Endpoint> e = ParseEndpoint(url);
  if (!e.ok()) return e.status();
  if (e->protocol != Protocol::kHttp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-url wants http://HOST:PORT or https://HOST:PORT, not '", AV(url), "'"));
  }
  if (absl::EndsWith(e->base_path, "/metrics"))
    e->base_path.resize(e->base_path.size() - std::string_view("/metrics").size());
  return e;
}

}  // namespace mamba::client::loadgen
