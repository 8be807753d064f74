// Prometheus metrics of the serving process: what the engine observes (as its EngineObserver),
// engine state sampled at scrape time, and the front ends' responses. Every name starts with
// `mamba_`; rendered in the text exposition format by prometheus-cpp's TextSerializer.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace mamba::server {

// Thread-safe. The observer methods run on the engine's scheduler thread and only touch
// atomics or short locks (a histogram's, a labelled family's).
class Metrics : public engine::EngineObserver {
 public:
  Metrics();
  ~Metrics() override;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // engine::EngineObserver.
  void OnStep(const Step& step) override;
  void OnTokenGap(double seconds) override;
  void OnFinish(const engine::FinishEvent& event) override;  // one per completion
  void OnRejected(absl::StatusCode code) override;
  void OnStateCopy(StateCopy kind, double seconds) override;

  // A front end answered a call: protocol "http" or "grpc", endpoint a fixed route name (never
  // a raw client path, to bound the label set), code the HTTP status or gRPC code number.
  void OnResponse(std::string_view protocol, std::string_view endpoint, int code);
  // Open client connections of a front end.
  void OnConnectionOpened(std::string_view protocol);
  void OnConnectionClosed(std::string_view protocol);

  // The exposition text (format 0.0.4), with the engine gauges set from `stats` first.
  std::string Render(const engine::EngineStats& stats);

  // For front ends that want to add their own families.
  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Counter* finished_by_reason_[5];  // indexed by engine::Finish
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Counter>& responses_;
  prometheus::Family<prometheus::Gauge>& connections_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generated_tokens_;
  prometheus::Counter& steps_;
  prometheus::Counter& step_prefill_tokens_;
  prometheus::Counter& step_decode_tokens_;

  prometheus::Gauge& queue_length_;
  prometheus::Gauge& running_;
  prometheus::Gauge& slots_used_;
  prometheus::Gauge& slots_total_;
  prometheus::Gauge& draining_;
  // State cache: totals kept by the engine, brought up to date at each Render.
  std::mutex render_mu_;
  prometheus::Family<prometheus::Counter>& cache_lookups_;
  prometheus::Counter& cache_tokens_reused_;
  prometheus::Counter& cache_snapshots_;
  prometheus::Counter& cache_evictions_;
  prometheus::Counter& cache_refused_;
  prometheus::Gauge& cache_entries_;
  prometheus::Gauge& cache_bytes_;
  prometheus::Counter& cache_snapshot_bytes_;
  // Sessions (engine/serving/session_store.h), also brought up to date at each Render.
  prometheus::Gauge& sessions_live_;
  prometheus::Gauge& session_bytes_;
  prometheus::Counter& sessions_created_;
  prometheus::Counter& sessions_expired_;
  prometheus::Counter& sessions_deleted_;
  prometheus::Counter& session_conflicts_;
  prometheus::Gauge& session_disk_bytes_;
  prometheus::Counter& session_disk_writes_;
  prometheus::Counter& session_disk_write_failures_;
  prometheus::Counter& session_disk_evictions_;
  // LoRA adapters (issue 15): requests and tokens by adapter name (base requests not counted
  // here), adapters loaded and resident (sampled at Render).
  prometheus::Family<prometheus::Counter>& lora_requests_;
  prometheus::Family<prometheus::Counter>& lora_prompt_tokens_;
  prometheus::Family<prometheus::Counter>& lora_generation_tokens_;
  prometheus::Gauge& lora_loaded_;
  prometheus::Gauge& lora_resident_;

  prometheus::Histogram& ttft_;
  prometheus::Histogram& inter_token_;
  prometheus::Histogram& e2e_;
  prometheus::Histogram& queue_wait_;
  prometheus::Histogram& step_seconds_;
  prometheus::Histogram& batch_size_;
  prometheus::Histogram& generated_per_completion_;
  prometheus::Histogram& state_restore_seconds_;
  prometheus::Histogram& state_snapshot_seconds_;
};

}  // namespace mamba::server
