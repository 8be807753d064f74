// mamba-loadgen: load-tests a server over our gRPC streaming API, the OpenAI completions
// endpoint (SSE) or TGI's generate_stream, and reports what vLLM's `bench serve`, genai-perf and
// llmperf report (TTFT, TPOT, ITL, E2EL, throughput, goodput, errors by code), plus workloads
// where a state-space model differs: long contexts (context sweep) and multi-turn
// conversations. Metric definitions: client/loadgen/report.h and client/README.md.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/errors.h"
#include "client/generators.h"
#include "client/http_api.h"
#include "client/loadgen/chart.h"
#include "client/loadgen/report.h"
#include "client/loadgen/runner.h"
#include "client/loadgen/server_state.h"
#include "client/loadgen/workload.h"
#include "engine/status_macros.h"

namespace mamba::client::loadgen {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnSignal(int) {
  g_stop = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}

struct Flags {
  std::string target = "grpc://127.0.0.1:50051";
  std::string api;  // empty: from the target
  std::string api_key, tls_ca, tls_server_name, model;
  int grpc_channels = 1;
  LoadOptions load;
  WorkloadOptions workload;
  int warmup = 0;
  bool respect_eos = false, ignore_eos = false;
  float temperature = 0;
  std::string percentiles = "50,90,99";
  std::vector<std::string> goodput;
  std::string json_path, chart_path, sweep;
  bool no_chart = false, no_progress = false, save_texts = false;
  int64_t vocab_size = 0;
  bool session = false, no_metrics = false;
  std::string metrics_url;
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "mamba-loadgen: error: %s\n", std::string(s.message()).c_str());
  return 1;
}

absl::StatusOr<std::vector<double>> ParseNumbers(const std::string& text, const char* what) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v))
      return absl::InvalidArgumentError(absl::StrCat("bad ", what, " '", part, "'"));
    out.push_back(v);
  }
  return out;
}

struct Sweep {
  std::string parameter;  // "", concurrency, request-rate, context
  std::vector<std::string> values;
};

absl::StatusOr<Sweep> ParseSweep(const std::string& text) {
  Sweep s;
  if (text.empty()) return s;
  const size_t eq = text.find('=');
  s.parameter = text.substr(0, eq);
  if (s.parameter != "concurrency" && s.parameter != "request-rate" && s.parameter != "context") {
    return absl::InvalidArgumentError(
        "--sweep is concurrency=..., request-rate=... or context=...");
  }
  std::string list = eq == std::string::npos ? "" : text.substr(eq + 1);
  if (list.empty()) {
    if (s.parameter != "context")
      return absl::InvalidArgumentError(absl::StrCat("--sweep ", s.parameter, "=V1,V2,..."));
    list = "128,256,512,1024,2048,4096,8192,16384";
  }
  for (absl::string_view v : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    double x = 0;
    if (!absl::SimpleAtod(v, &x) || x <= 0)
      return absl::InvalidArgumentError(absl::StrCat("bad sweep value '", v, "'"));
    s.values.emplace_back(v);
  }
  return s;
}

// What the server says about itself: model name, vocabulary, eos ids.
struct ServerFacts {
  std::string model;
  int64_t vocab = 0;
  std::vector<int32_t> eos;
  int64_t max_prompt_tokens = 0;
};

ServerFacts Probe(const Flags& f, GeneratorFactory& factory) {
  ServerFacts facts;
  if (factory.api() == Api::kGrpc) {
    absl::StatusOr<std::shared_ptr<::grpc::Channel>> channel = factory.Channel(0);
    if (channel.ok()) {
      GrpcClient client(*channel, f.api_key);
      absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo(10);
      if (info.ok()) {
        facts.model = info->model_name();
        facts.vocab = info->tokenizer_vocab_size() > 0
                          ? std::min(info->tokenizer_vocab_size(), info->config().vocab_size())
                          : info->config().vocab_size();
        for (int64_t id : info->config().eos_token_ids())
          facts.eos.push_back(static_cast<int32_t>(id));
        facts.max_prompt_tokens = info->max_prompt_tokens();
      } else {
        std::fprintf(stderr, "mamba-loadgen: note: GetModelInfo failed (%s)\n",
                     std::string(info.status().message()).c_str());
      }
    }
    return facts;
  }
  HttpApi api(factory.endpoint(), f.api_key, factory.options().http);
  absl::StatusOr<Json> models = api.JsonCall("GET", "/v1/models", nullptr, 10);
  if (!models.ok() &&
      HttpStatusOf(models.status()) == 0) {  // not reachable (a TGI server may answer 404)
    std::fprintf(stderr, "mamba-loadgen: note: GET /v1/models failed (%s)\n",
                 std::string(models.status().message()).c_str());
  }
  if (models.ok() && models->contains("data") && (*models)["data"].is_array() &&
      !(*models)["data"].empty()) {
    const Json& m = (*models)["data"][0];
    if (m.contains("id") && m["id"].is_string()) facts.model = m["id"].get<std::string>();
    for (const char* key : {"vocab_size", "tokenizer_vocab_size"}) {
      if (m.contains(key) && m[key].is_number_integer()) facts.vocab = m[key].get<int64_t>();
    }
  }
  return facts;
}

LoadOptions WarmupOptions(const Flags& f) {
  LoadOptions w = f.load;
  w.num_requests = f.warmup;
  w.duration_s = 0;
  w.request_rate = 0;
  const int c = f.load.request_rate > 0
                    ? (f.load.max_concurrency > 0 ? f.load.max_concurrency : f.warmup)
                    : f.load.concurrency;
  w.concurrency = std::max(1, std::min(c, f.warmup));
  w.cancel_fraction = 0;
  w.progress = false;
  w.keep_texts = false;
  w.sessions = false;  // single turns: nothing to keep
  return w;
}

void AddFlags(CLI::App& app, Flags* f) {
  LoadOptions& L = f->load;
  WorkloadOptions& W = f->workload;
  app.add_option("--target,-t", f->target,
                 "grpc://HOST:PORT, grpcs://HOST:PORT, http://HOST:PORT or https://HOST:PORT")
      ->capture_default_str();
  app.add_option(
         "--api", f->api,
         "grpc, openai (/v1/completions) or tgi (/generate_stream); default from the target")
      ->check(CLI::IsMember({"grpc", "openai", "tgi"}));
  app.add_option("--api-key", f->api_key, "Bearer key")->envname("MAMBA_API_KEY");
  app.add_option("--tls-ca", f->tls_ca,
                 "PEM roots to verify a grpcs:// or https:// server with (default: the system's)");
  app.add_option("--tls-server-name", f->tls_server_name,
                 "Name checked against the server certificate (https://: also SNI)");
  app.add_option("--model", f->model, "OpenAI 'model' (default: the first of /v1/models)");
  app.add_option("--grpc-channels", f->grpc_channels, "gRPC connections to spread the load over")
      ->capture_default_str();

  app.add_option("--concurrency,-c", L.concurrency, "Closed loop: requests in flight")
      ->capture_default_str();
  app.add_option("--request-rate,-r", L.request_rate,
                 "Open loop: arrivals per second (0: closed loop)");
  app.add_option("--burstiness", L.burstiness, "Gamma shape of the arrival gaps (1 = Poisson)")
      ->capture_default_str();
  app.add_option("--max-concurrency", L.max_concurrency, "Open loop: cap on requests in flight");
  app.add_option("--num-requests,-n", L.num_requests,
                 "Requests to send (turns count; 0 with --duration = no count limit)")
      ->capture_default_str();
  app.add_option("--duration", L.duration_s, "Seconds after which no request starts");
  app.add_option("--warmup", f->warmup, "Requests sent (and not measured) before the run");
  app.add_option("--seed", L.seed, "Seed of prompts, arrivals and cancellations")
      ->capture_default_str();
  app.add_option("--cancel-fraction", L.cancel_fraction, "Fraction of requests the client cancels");
  app.add_option("--cancel-after-ms", L.cancel_after_ms, "... this long after sending them");
  app.add_option("--request-timeout", L.request_timeout_s, "Seconds before a request is abandoned")
      ->capture_default_str();

  app.add_option("--input-len", W.input_len, "Random prompt tokens (per turn)")
      ->capture_default_str();
  app.add_option("--output-len", W.output_len, "Tokens to generate per request")
      ->capture_default_str();
  app.add_option("--range-ratio", W.range_ratio, "Lengths uniform in [len*(1-r), len*(1+r)]")
      ->capture_default_str();
  app.add_option("--shared-prefix-len", W.shared_prefix_len,
                 "Tokens of a prefix shared by every prompt");
  app.add_option("--num-prefixes", W.num_prefixes, "Distinct shared prefixes")
      ->capture_default_str();
  app.add_option("--dataset", W.dataset,
                 "JSONL file: {\"prompt\": text or ids, \"max_tokens\": optional}");
  app.add_option("--turns", W.turns,
                 "Turns per conversation (each resends the history and the answer, or with "
                 "--session sends only its new input)")
      ->capture_default_str();
  app.add_option("--think-time-ms", L.think_time_ms, "Pause between the turns of a conversation");
  app.add_flag("--session", f->session,
               "Run each conversation on a server session: a turn sends only its new input; the "
               "sessions are deleted at the end");
  app.add_option("--adapters", L.adapters,
                 "Spread the conversations round-robin over these LoRA adapters loaded on the "
                 "server (\"base\" = the base model): a,b,c")
      ->delimiter(',');
  app.add_option("--vocab-size", f->vocab_size,
                 "Random token ids below this (default: from the server)");
  app.add_flag("--respect-eos", f->respect_eos,
               "Random prompts: stop at end-of-sequence (default: ignore it)");
  app.add_flag("--ignore-eos", f->ignore_eos, "Dataset prompts: ignore end-of-sequence");
  app.add_option("--temperature", f->temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str();

  app.add_option("--percentiles", f->percentiles, "Percentiles to report")->capture_default_str();
  app.add_option("--goodput", f->goodput, "SLOs in ms: ttft:MS tpot:MS e2el:MS")->expected(1, 3);
  app.add_option("--json", f->json_path,
                 "Write the results (vLLM-compatible keys, per-request details) here");
  app.add_flag("--save-texts", f->save_texts, "Include the generated texts in --json");
  app.add_option("--sweep", f->sweep,
                 "concurrency=1,2,4 | request-rate=1,2,4 | context[=128,...,16384]");
  app.add_option("--chart", f->chart_path,
                 "Sweep chart file (.svg or .png; default next to --json)");
  app.add_flag("--no-chart", f->no_chart, "Do not draw the sweep chart");
  app.add_flag("--no-progress", f->no_progress, "No live progress line");
  app.add_flag("--no-metrics", f->no_metrics,
               "Do not scrape the server's /metrics before and after a run");
  app.add_option("--metrics-url", f->metrics_url,
                 "Where the server's Prometheus /metrics is (default: the HTTP target; a gRPC "
                 "target is scraped only with this)");
}

// Everything a run needs besides its load and workload options.
struct Context {
  Endpoint endpoint;
  Api api = Api::kGrpc;
  ConnectOptions connect;
  std::optional<Endpoint> metrics;  // where /metrics is scraped; none: not scraped
  std::unique_ptr<GeneratorFactory> factory;
  GeneratorMaker make_generator;
  ServerFacts facts;
  std::unique_ptr<HttpApi> detok_api;
  std::unique_ptr<GrpcClient> detok_grpc;
  Detokenizer detokenize;
  GenerateSpec base;
  RunInfo info;
  std::vector<double> percentiles;
  Slo slo;
  Sweep sweep;
};

absl::Status Setup(Flags& f, bool num_requests_given, Context* ctx) {
  MAMBA_ASSIGN_OR_RETURN(ctx->endpoint, ParseEndpoint(f.target));
  ctx->api = DefaultApi(ctx->endpoint);
  if (!f.api.empty()) {
    MAMBA_ASSIGN_OR_RETURN(ctx->api, ParseApi(f.api));
  }
  MAMBA_RETURN_IF_ERROR(CheckApi(ctx->api, ctx->endpoint));
  // gRPC takes --tls-ca as a request for TLS; over HTTP the scheme says it.
  if (ctx->endpoint.protocol == Protocol::kHttp && !ctx->endpoint.tls && !f.tls_ca.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-ca needs a TLS target: use https://",
                                                   ctx->endpoint.Authority(),
                                                   ctx->endpoint.base_path));
  }
  MAMBA_ASSIGN_OR_RETURN(ctx->percentiles, ParseNumbers(f.percentiles, "percentile"));
  for (double p : ctx->percentiles) {
    if (p <= 0 || p > 100) return absl::InvalidArgumentError("percentiles are in (0, 100]");
  }
  MAMBA_ASSIGN_OR_RETURN(ctx->slo, ParseSlo(f.goodput));
  MAMBA_ASSIGN_OR_RETURN(ctx->sweep, ParseSweep(f.sweep));
  LoadOptions& L = f.load;
  if (L.duration_s > 0 && !num_requests_given) L.num_requests = 0;
  if (L.cancel_fraction > 0 && L.cancel_after_ms <= 0) {
    return absl::InvalidArgumentError("--cancel-fraction needs --cancel-after-ms");
  }
  L.sessions = f.session;
  if (!f.no_metrics && !f.metrics_url.empty()) {
    MAMBA_ASSIGN_OR_RETURN(ctx->metrics, ParseMetricsUrl(f.metrics_url));
  } else if (!f.no_metrics && ctx->endpoint.protocol == Protocol::kHttp) {
    ctx->metrics = ctx->endpoint;
  }
  L.progress = !f.no_progress && isatty(STDERR_FILENO);
  L.keep_texts = f.save_texts;
  L.stop = &g_stop;

  ConnectOptions connect;
  connect.api_key = f.api_key;
  connect.grpc.tls_ca_file = f.tls_ca;
  connect.grpc.tls_server_name = f.tls_server_name;
  connect.http.tls.ca_file = f.tls_ca;
  connect.http.tls.server_name = f.tls_server_name;
  connect.grpc_channels = f.grpc_channels;
  ctx->connect = connect;
  ctx->factory = std::make_unique<GeneratorFactory>(ctx->endpoint, ctx->api, connect);
  ctx->make_generator = [factory = ctx->factory.get()](int worker) {
    return factory->Make(worker);
  };
  ctx->facts = Probe(f, *ctx->factory);

  WorkloadOptions& W = f.workload;
  W.seed = L.seed;
  // Text where ids cannot go: TGI; conversations whose answers come back as text (OpenAI) or
  // whose dataset may mix text and ids.
  W.text_prompts =
      ctx->api == Api::kTgi || (W.turns > 1 && (ctx->api == Api::kOpenAi || !W.dataset.empty()));
  W.avoid_ids = ctx->facts.eos;
  W.vocab_size = f.vocab_size > 0 ? f.vocab_size : ctx->facts.vocab;
  if (W.vocab_size <= 0 && W.dataset.empty()) {
    W.vocab_size = 32000;
    std::fprintf(
        stderr,
        "mamba-loadgen: note: the server did not say its vocabulary size; drawing token ids "
        "below 32000 (set --vocab-size)\n");
  }
  if (W.text_prompts) {
    if (ctx->endpoint.protocol == Protocol::kHttp) {
      ctx->detok_api = std::make_unique<HttpApi>(ctx->endpoint, f.api_key, connect.http);
      ctx->detokenize = [api = ctx->detok_api.get()](const std::vector<int32_t>& ids) {
        return api->Detokenize(ids, 60);
      };
    } else {
      MAMBA_ASSIGN_OR_RETURN(std::shared_ptr<::grpc::Channel> channel, ctx->factory->Channel(0));
      ctx->detok_grpc = std::make_unique<GrpcClient>(channel, f.api_key);
      ctx->detokenize = [client = ctx->detok_grpc.get()](
                            const std::vector<int32_t>& ids) -> absl::StatusOr<std::string> {
        MAMBA_ASSIGN_OR_RETURN(v1::DetokenizeResponse r, client->Detokenize(ids, false, 60));
        return r.text();
      };
    }
    if (absl::StatusOr<std::string> probe = ctx->detokenize({1, 2, 3}); !probe.ok()) {
      std::fprintf(
          stderr,
          "mamba-loadgen: note: the server cannot detokenize (%s); text prompts are random words\n",
          std::string(probe.status().message()).c_str());
      ctx->detokenize = nullptr;
    }
  }

  ctx->base.model = !f.model.empty() ? f.model : (ctx->api == Api::kOpenAi ? ctx->facts.model : "");
  ctx->base.sampling.temperature = f.temperature;
  ctx->base.sampling.ignore_eos = W.dataset.empty() ? !f.respect_eos : f.ignore_eos;
  ctx->info.backend = ApiName(ctx->api);
  ctx->info.target = ctx->endpoint.ToString();
  ctx->info.model_id = ctx->facts.model.empty() ? ctx->base.model : ctx->facts.model;
  ctx->info.burstiness = L.burstiness;
  return absl::OkStatus();
}

Json DescribeWorkload(const WorkloadOptions& w, const Context& ctx, float temperature,
                      bool sessions) {
  Json j;
  if (!w.dataset.empty()) {
    j["dataset"] = w.dataset;
  } else {
    j["input_len"] = w.input_len;
    j["range_ratio"] = w.range_ratio;
    j["shared_prefix_len"] = w.shared_prefix_len;
    j["num_prefixes"] = w.num_prefixes;
    j["vocab_size"] = w.vocab_size;
  }
  j["output_len"] = w.output_len;
  j["turns"] = w.turns;
  j["sessions"] = sessions;
  j["seed"] = w.seed;
  j["text_prompts"] = w.text_prompts;
  j["ignore_eos"] = ctx.base.sampling.ignore_eos;
  j["temperature"] = temperature;
  return j;
}

absl::Status Warmup(const Flags& f, const Context& ctx) {
  WorkloadOptions ww = f.workload;
  ww.seed = Mix(f.workload.seed ^ 0x7a3b);
  ww.turns = 1;
  MAMBA_ASSIGN_OR_RETURN(std::unique_ptr<Workload> wl, Workload::Create(ww, ctx.detokenize));
  MAMBA_ASSIGN_OR_RETURN(RunResult r,
                         RunLoad(WarmupOptions(f), ctx.base, wl.get(), ctx.make_generator));
  int64_t errors = 0;
  std::string first_error;
  for (const RequestRecord& rec : r.requests) {
    if (rec.ok) continue;
    ++errors;
    if (first_error.empty()) first_error = rec.error;
  }
  std::fprintf(stderr, "mamba-loadgen: warm-up: %zu requests, %lld failed%s%s\n", r.requests.size(),
               static_cast<long long>(errors), errors ? ", e.g. " : "", first_error.c_str());
  return absl::OkStatus();
}

absl::StatusOr<PrometheusText> Scrape(const Context& ctx) {
  return ScrapeMetrics(*ctx.metrics, ctx.connect.api_key, ctx.connect.http, 10);
}

// The counters' deltas from `before` to now; every figure n/a with the error when a scrape failed.
ServerReuse ReuseSince(const Context& ctx, const absl::StatusOr<PrometheusText>& before) {
  absl::StatusOr<PrometheusText> after =
      before.ok() ? Scrape(ctx) : absl::StatusOr<PrometheusText>(before.status());
  ServerReuse reuse =
      after.ok() ? ComputeReuse(*before, *after) : ComputeReuse(PrometheusText(), PrometheusText());
  if (!after.ok()) reuse.error = std::string(after.status().message());
  reuse.url = absl::StrCat(ctx.metrics->ToString(), "/metrics");
  return reuse;
}

// Deletes the run's sessions (best-effort), then reads how many sessions the server still holds.
SessionCleanup Cleanup(const Context& ctx, const RunResult& run, Metrics* m) {
  SessionCleanup c = DeleteSessions(ctx.endpoint, ctx.connect.api_key, ctx.connect.http,
                                    ctx.connect.grpc, run.session_ids, 60);
  if (c.failed > 0) {
    std::fprintf(stderr, "mamba-loadgen: note: %lld of %zu sessions could not be deleted (%s)\n",
                 static_cast<long long>(c.failed), run.session_ids.size(), c.first_error.c_str());
  }
  if (m->server && m->server->error.empty()) {
    if (absl::StatusOr<PrometheusText> now = Scrape(ctx); now.ok())
      m->server->sessions_live_after_cleanup = now->Value("mamba_sessions_live");
  }
  return c;
}

struct PointResult {
  Metrics metrics;
  Json json;
  bool interrupted = false;
};

// One run: the flags' load and workload with the sweep parameter (if any) set to `value`.
absl::StatusOr<PointResult> RunPoint(const Flags& f, const Context& ctx, const std::string& value) {
  LoadOptions lo = f.load;
  WorkloadOptions wo = f.workload;
  const std::string& parameter = ctx.sweep.parameter;
  if (parameter == "concurrency") {
    (lo.request_rate > 0 ? lo.max_concurrency : lo.concurrency) = std::stoi(value);
  } else if (parameter == "request-rate") {
    lo.request_rate = std::stod(value);
  } else if (parameter == "context") {
    wo.input_len = std::stoi(value);
    if (ctx.facts.max_prompt_tokens > 0 && wo.input_len * wo.turns > ctx.facts.max_prompt_tokens) {
      std::fprintf(stderr,
                   "mamba-loadgen: note: context %s is over the server's max_prompt_tokens %lld\n",
                   value.c_str(), static_cast<long long>(ctx.facts.max_prompt_tokens));
    }
  }
  if (!value.empty())
    std::fprintf(stderr, "mamba-loadgen: %s = %s\n", parameter.c_str(), value.c_str());
  MAMBA_ASSIGN_OR_RETURN(std::unique_ptr<Workload> wl, Workload::Create(wo, ctx.detokenize));
  std::optional<absl::StatusOr<PrometheusText>> before;
  if (ctx.metrics) {
    before = Scrape(ctx);
    if (!before->ok()) {
      std::fprintf(stderr, "mamba-loadgen: note: cannot read %s/metrics (%s)\n",
                   ctx.metrics->ToString().c_str(),
                   std::string(before->status().message()).c_str());
    }
  }
  MAMBA_ASSIGN_OR_RETURN(RunResult run, RunLoad(lo, ctx.base, wl.get(), ctx.make_generator));
  PointResult out;
  out.metrics = ComputeMetrics(run, ctx.percentiles, ctx.slo);
  if (before) out.metrics.server = ReuseSince(ctx, *before);
  if (lo.sessions) out.metrics.session_cleanup = Cleanup(ctx, run, &out.metrics);
  RunInfo info = ctx.info;
  info.request_rate = lo.request_rate;
  info.concurrency = lo.concurrency;
  info.max_concurrency = lo.max_concurrency;
  info.turns = wo.turns;
  info.sessions = lo.sessions;
  info.workload = DescribeWorkload(wo, ctx, f.temperature, lo.sessions);
  std::cout << FormatSummary(info, out.metrics, ctx.percentiles, ctx.slo);
  std::cout.flush();
  out.json = ResultJson(info, run, out.metrics, ctx.percentiles, ctx.slo, f.save_texts);
  if (!value.empty()) out.json["sweep_value"] = value;
  out.interrupted = run.interrupted;
  return out;
}

void DrawChart(const Flags& f, const Context& ctx, const std::vector<SweepPoint>& points) {
  std::string chart = f.chart_path;
  if (chart.empty()) {
    chart = f.json_path.empty() ? "mamba-loadgen-sweep.svg"
                                : f.json_path.substr(0, f.json_path.rfind('.')) + ".svg";
  }
  std::optional<std::string> gnuplot = FindGnuplot();
  if (!gnuplot) {
    std::fprintf(
        stderr,
        "mamba-loadgen: no chart: gnuplot is not installed (apt-get install gnuplot-nox)\n");
    return;
  }
  absl::Status s = WriteSweepChart(*gnuplot, ctx.sweep.parameter, points, chart);
  if (s.ok()) {
    std::fprintf(stderr, "mamba-loadgen: chart written to %s\n", chart.c_str());
  } else {
    std::fprintf(stderr, "mamba-loadgen: no chart: %s\n", std::string(s.message()).c_str());
  }
}

int Main(int argc, char** argv) {
  CLI::App app{
      "mamba-loadgen: load-test an inference server (gRPC mamba.v1, OpenAI completions, TGI)"};
  Flags f;
  if (const char* t = std::getenv("MAMBA_TARGET")) f.target = t;
  f.workload.input_len = 256;
  f.workload.output_len = 128;
  AddFlags(app, &f);
  CLI11_PARSE(app, argc, argv);

  Context ctx;
  if (absl::Status s = Setup(f, app.get_option("--num-requests")->count() > 0, &ctx); !s.ok())
    return Fail(s);
  if (f.warmup > 0) {
    if (absl::Status s = Warmup(f, ctx); !s.ok()) return Fail(s);
  }
  const bool sweeping = !ctx.sweep.values.empty();
  const std::vector<std::string> values =
      sweeping ? ctx.sweep.values : std::vector<std::string>{""};
  std::vector<SweepPoint> points;
  Json results = Json::array();
  int64_t total_ok = 0, total_failed = 0;
  for (const std::string& value : values) {
    if (g_stop) break;
    absl::StatusOr<PointResult> point = RunPoint(f, ctx, value);
    if (!point.ok()) return Fail(point.status());
    total_ok += point->metrics.completed;
    total_failed += point->metrics.failed;
    points.push_back({value, point->metrics});
    results.push_back(std::move(point->json));
    if (point->interrupted) std::fprintf(stderr, "mamba-loadgen: interrupted\n");
  }
  if (sweeping) std::cout << "\n" << FormatSweepTable(ctx.sweep.parameter, points, ctx.percentiles);

  if (!f.json_path.empty() && !results.empty()) {
    Json out =
        sweeping
            ? Json{{"sweep", {{"parameter", ctx.sweep.parameter}, {"values", ctx.sweep.values}}},
                   {"results", results}}
            : results[0];
    std::ofstream file(f.json_path);
    file << out.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    if (!file) return Fail(absl::InternalError(absl::StrCat("cannot write ", f.json_path)));
    std::fprintf(stderr, "mamba-loadgen: results written to %s\n", f.json_path.c_str());
  }
  if (sweeping && !f.no_chart && points.size() == values.size()) DrawChart(f, ctx, points);
  if (g_stop) return 130;
  if (total_failed > 0 && total_ok == 0) {
    std::fprintf(stderr, "mamba-loadgen: every request failed\n");
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace mamba::client::loadgen

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, mamba::client::loadgen::OnSignal);
  return mamba::client::loadgen::Main(argc, argv);
}
