#include "server/metrics.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "prometheus/text_serializer.h"

namespace mamba::server {
namespace {

using prometheus::Histogram;

// Bucket bounds in seconds: log-spaced, wide enough for a CPU engine and a GPU one.
Histogram::BucketBoundaries LatencyBuckets(double lo, double hi) {
  Histogram::BucketBoundaries b;
  for (double v = lo; v <= hi * 1.0001; v *= 2.5) b.push_back(v);
  return b;
}

Histogram::BucketBoundaries PowersOfTwo(double hi) {
  Histogram::BucketBoundaries b;
  for (double v = 1; v <= hi; v *= 2) b.push_back(v);
  return b;
}

prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& r, const char* name,
                                                       const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

prometheus::Counter& Counter(prometheus::Registry& r, const char* name, const char* help) {
  return CounterFamily(r, name, help).Add({});
}

prometheus::Gauge& Gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

Histogram& MakeHistogram(prometheus::Registry& r, const char* name, const char* help,
                         const Histogram::BucketBoundaries& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
}

// "RESOURCE_EXHAUSTED" -> "resource_exhausted".
std::string CodeLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      finished_(CounterFamily(*registry_, "mamba_request_completions_total",
                              "Finished completions by reason (stop, length, cancelled, deadline, "
                              "error); a request with n > 1 counts n times")),
      rejected_(CounterFamily(*registry_, "mamba_requests_rejected_total",
                              "Requests the engine refused at submit, by status code")),
      responses_(CounterFamily(*registry_, "mamba_frontend_responses_total",
                               "Front-end responses by protocol, endpoint and status code")),
      connections_(prometheus::BuildGauge()
                       .Name("mamba_frontend_open_connections")
                       .Help("Open client connections by protocol")
                       .Register(*registry_)),
      prompt_tokens_(Counter(*registry_, "mamba_prompt_tokens_total",
                             "Prompt tokens of finished requests (counted once per request)")),
      generated_tokens_(Counter(*registry_, "mamba_generated_tokens_total",
                                "Tokens generated, over all completions")),
      steps_(Counter(*registry_, "mamba_engine_steps_total", "Engine steps run")),
      step_prefill_tokens_(Counter(*registry_, "mamba_engine_prefill_tokens_total",
                                   "Prompt tokens processed by engine steps")),
      step_decode_tokens_(Counter(*registry_, "mamba_engine_decode_tokens_total",
                                  "Decode tokens processed by engine steps")),
      queue_length_(Gauge(*registry_, "mamba_queue_length", "Requests waiting for a state slot")),
      running_(Gauge(*registry_, "mamba_running_requests", "Requests holding state slots")),
      slots_used_(Gauge(*registry_, "mamba_state_slots_used", "State slots in use")),
      slots_total_(Gauge(*registry_, "mamba_state_slots_total", "State slots in the pool")),
      draining_(Gauge(*registry_, "mamba_draining", "1 while the engine refuses new requests")),
      cache_lookups_(CounterFamily(*registry_, "mamba_state_cache_lookups_total",
                                   "Admitted prompts looked up in the state cache, by result "
                                   "(hit: whole prompt, partial: a prefix, miss)")),
      cache_tokens_reused_(Counter(*registry_, "mamba_state_cache_tokens_reused_total",
                                   "Prompt tokens restored from the state cache, not computed")),
      cache_snapshots_(Counter(*registry_, "mamba_state_cache_snapshots_total",
                               "State snapshots taken and stored")),
      cache_evictions_(Counter(*registry_, "mamba_state_cache_evictions_total",
                               "Snapshots evicted under the byte budget")),
      cache_refused_(
          Counter(*registry_, "mamba_state_cache_refused_total",
                  "Snapshots not stored: worth less than the entries they would displace "
                  "(cost policy)")),
      cache_entries_(Gauge(*registry_, "mamba_state_cache_entries", "Snapshots held")),
      cache_bytes_(Gauge(*registry_, "mamba_state_cache_bytes", "Host memory held by snapshots")),
      cache_snapshot_bytes_(Counter(*registry_, "mamba_state_cache_snapshot_bytes_total",
                                    "Bytes of every state snapshot taken (state cache and "
                                    "sessions)")),
      sessions_live_(Gauge(*registry_, "mamba_sessions_live", "Sessions held")),
      session_bytes_(Gauge(*registry_, "mamba_session_bytes",
                           "Host memory held by sessions (states and tokens)")),
      sessions_created_(Counter(*registry_, "mamba_sessions_created_total",
                                "Sessions created (first turn, fork or import)")),
      sessions_expired_(Counter(*registry_, "mamba_sessions_expired_total",
                                "Sessions ended after --session-ttl unused")),
      sessions_deleted_(
          Counter(*registry_, "mamba_sessions_deleted_total", "Sessions deleted by a client")),
      session_conflicts_(Counter(*registry_, "mamba_session_conflicts_total",
                                 "Requests refused because their session was in use")),
      session_disk_bytes_(
          Gauge(*registry_, "mamba_session_disk_bytes", "Bytes of session files in --session-dir")),
      session_disk_writes_(Counter(*registry_, "mamba_session_disk_writes_total",
                                   "Session files written to --session-dir")),
      session_disk_write_failures_(Counter(*registry_, "mamba_session_disk_write_failures_total",
                                           "Session files that could not be written")),
      session_disk_evictions_(Counter(*registry_, "mamba_session_disk_evictions_total",
                                      "Session files removed to stay within "
                                      "--session-dir-bytes")),
      lora_requests_(CounterFamily(*registry_, "mamba_lora_requests_total",
                                   "Finished requests run under a LoRA adapter, by adapter")),
      lora_prompt_tokens_(CounterFamily(*registry_, "mamba_lora_prompt_tokens_total",
                                        "Prompt tokens of finished requests run under a LoRA "
                                        "adapter, by adapter")),
      lora_generation_tokens_(CounterFamily(*registry_, "mamba_lora_generation_tokens_total",
                                            "Tokens generated under a LoRA adapter, by adapter")),
      lora_loaded_(
          Gauge(*registry_, "mamba_lora_adapters_loaded", "LoRA adapters loaded (found by name)")),
      lora_resident_(Gauge(*registry_, "mamba_lora_adapters_resident",
                           "LoRA adapters held in memory: loaded, or unloaded but still used by a "
                           "request (bounded by --max-loras)")),
      ttft_(MakeHistogram(*registry_, "mamba_time_to_first_token_seconds",
                          "Submit to first generated token, per completion",
                          LatencyBuckets(0.001, 100))),
      inter_token_(MakeHistogram(*registry_, "mamba_inter_token_latency_seconds",
                                 "Time between two tokens of one completion",
                                 LatencyBuckets(0.0002, 10))),
      e2e_(MakeHistogram(*registry_, "mamba_e2e_request_latency_seconds",
                         "Submit to finish, per completion", LatencyBuckets(0.001, 1000))),
      queue_wait_(MakeHistogram(*registry_, "mamba_queue_wait_seconds",
                                "Submit to admission into a state slot",
                                LatencyBuckets(0.0002, 500))),
      step_seconds_(MakeHistogram(*registry_, "mamba_step_duration_seconds",
                                  "Backend time of one engine step", LatencyBuckets(0.0001, 30))),
      batch_size_(MakeHistogram(*registry_, "mamba_step_batch_size",
                                "Sequences (decode tokens and prompt chunks) in one step",
                                PowersOfTwo(1024))),
      generated_per_completion_(MakeHistogram(*registry_, "mamba_generated_tokens_per_completion",
                                              "Tokens generated by one completion",
                                              PowersOfTwo(65536))),
      state_restore_seconds_(MakeHistogram(*registry_, "mamba_state_restore_seconds",
                                           "Copying a stored state (state cache or session) into "
                                           "a slot",
                                           LatencyBuckets(0.00001, 1))),
      state_snapshot_seconds_(MakeHistogram(*registry_, "mamba_state_snapshot_seconds",
                                            "Copying a slot's state to host memory (state cache "
                                            "or session)",
                                            LatencyBuckets(0.00001, 1))) {
  for (engine::Finish f :
       {engine::Finish::kStop, engine::Finish::kLength, engine::Finish::kCancelled,
        engine::Finish::kDeadline, engine::Finish::kError}) {
    finished_by_reason_[static_cast<int>(f)] = &finished_.Add({{"reason", engine::Name(f)}});
  }
  // The refusals Submit can give, present from the start (at 0) so dashboards see them.
  for (absl::StatusCode c :
       {absl::StatusCode::kInvalidArgument, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kUnavailable, absl::StatusCode::kOutOfRange,
        absl::StatusCode::kAborted}) {  // Aborted: a session in use
    rejected_.Add({{"code", CodeLabel(c)}});
  }
}

Metrics::~Metrics() = default;

void Metrics::OnStep(const Step& step) {
  steps_.Increment();
  step_prefill_tokens_.Increment(static_cast<double>(step.prefill_tokens));
  step_decode_tokens_.Increment(static_cast<double>(step.decode_tokens));
  step_seconds_.Observe(step.seconds);
  batch_size_.Observe(step.batch_size);
}

void Metrics::OnTokenGap(double seconds) { inter_token_.Observe(seconds); }

void Metrics::OnFinish(const engine::FinishEvent& event) {
  const int r = static_cast<int>(event.reason);
  if (r >= 0 && r < 5) finished_by_reason_[r]->Increment();
  // Every request has a completion 0, so counting the prompt there counts it once.
  if (event.index == 0) prompt_tokens_.Increment(static_cast<double>(event.usage.prompt_tokens));
  generated_tokens_.Increment(static_cast<double>(event.usage.completion_tokens));
  generated_per_completion_.Observe(static_cast<double>(event.usage.completion_tokens));
  if (event.ttft_seconds > 0) ttft_.Observe(event.ttft_seconds);
  e2e_.Observe(event.e2e_seconds);
  // A completion cancelled while still queued never waited in a slot's sense; skip it.
  if (event.queue_seconds > 0 || event.usage.completion_tokens > 0) {
    queue_wait_.Observe(event.queue_seconds);
  }
  if (!event.adapter.empty()) {
    // prometheus-cpp escapes label values in the exposition text.
    const prometheus::Labels labels = {{"adapter", event.adapter}};
    if (event.index == 0) {
      lora_requests_.Add(labels).Increment();
      lora_prompt_tokens_.Add(labels).Increment(static_cast<double>(event.usage.prompt_tokens));
    }
    lora_generation_tokens_.Add(labels).Increment(
        static_cast<double>(event.usage.completion_tokens));
  }
}

void Metrics::OnRejected(absl::StatusCode code) {
  rejected_.Add({{"code", CodeLabel(code)}}).Increment();
}

void Metrics::OnStateCopy(StateCopy kind, double seconds) {
  (kind == StateCopy::kRestore ? state_restore_seconds_ : state_snapshot_seconds_).Observe(seconds);
}

void Metrics::OnResponse(std::string_view protocol, std::string_view endpoint, int code) {
  responses_
      .Add({{"protocol", std::string(protocol)},
            {"endpoint", std::string(endpoint)},
            {"code", std::to_string(code)}})
      .Increment();
}

void Metrics::OnConnectionOpened(std::string_view protocol) {
  connections_.Add({{"protocol", std::string(protocol)}}).Increment();
}

void Metrics::OnConnectionClosed(std::string_view protocol) {
  connections_.Add({{"protocol", std::string(protocol)}}).Decrement();
}

std::string Metrics::Render(const engine::EngineStats& stats) {
  queue_length_.Set(static_cast<double>(stats.waiting));
  running_.Set(static_cast<double>(stats.running));
  slots_used_.Set(static_cast<double>(stats.slots_used));
  slots_total_.Set(static_cast<double>(stats.slots_total));
  draining_.Set(stats.draining ? 1 : 0);
  lora_loaded_.Set(static_cast<double>(stats.lora_loaded));
  lora_resident_.Set(static_cast<double>(stats.lora_resident));
  std::lock_guard<std::mutex> lock(render_mu_);
  auto catch_up = [](prometheus::Counter& c, int64_t total) {
    const double delta = static_cast<double>(total) - c.Value();
    if (delta > 0) c.Increment(delta);
  };
  catch_up(cache_lookups_.Add({{"result", "hit"}}), stats.cache_hits);
  catch_up(cache_lookups_.Add({{"result", "partial"}}), stats.cache_partial_hits);
  catch_up(cache_lookups_.Add({{"result", "miss"}}), stats.cache_misses);
  catch_up(cache_tokens_reused_, stats.cache_tokens_reused);
  catch_up(cache_snapshots_, stats.cache_snapshots);
  catch_up(cache_evictions_, stats.cache_evictions);
  catch_up(cache_refused_, stats.cache_refused);
  cache_entries_.Set(static_cast<double>(stats.cache_entries));
  cache_bytes_.Set(static_cast<double>(stats.cache_bytes));
  catch_up(cache_snapshot_bytes_, stats.cache_snapshot_bytes);
  const engine::SessionStats& ss = stats.sessions;
  sessions_live_.Set(static_cast<double>(ss.live));
  session_bytes_.Set(static_cast<double>(ss.bytes));
  catch_up(sessions_created_, ss.created);
  catch_up(sessions_expired_, ss.expired);
  catch_up(sessions_deleted_, ss.deleted);
  catch_up(session_conflicts_, ss.conflicts);
  session_disk_bytes_.Set(static_cast<double>(ss.disk_bytes));
  catch_up(session_disk_writes_, ss.disk_writes);
  catch_up(session_disk_write_failures_, ss.disk_write_failures);
  catch_up(session_disk_evictions_, ss.disk_evictions);
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace mamba::server
