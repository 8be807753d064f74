// Runs a load against one target and records every request's timeline.
//
// Load shapes:
//   closed loop  `concurrency` workers, each sending its next request as soon as the previous
//                one finished (request_rate == 0).
//   open loop    requests (conversations) arrive at `request_rate` per second with gamma-
//                distributed gaps (shape `burstiness`, mean 1 / rate; burstiness 1 = Poisson);
//                at most `max_concurrency` are in flight when set (later arrivals wait, and
//                their latency is measured from when they are sent, as vLLM does), else up to
//                kMaxWorkers.
// A conversation's turns run one after another on one worker: each resends the whole history
// (every earlier prompt and answer) and its new input, or, with `sessions`, sends only its new
// input on the server session "<session_prefix><conversation index>" (GenerateSpec::session_id),
// which holds the rest. The session's token count that the server reports after each turn must
// be the turn's prompt tokens (the server counts what the model read: the session's tokens + the
// new ones) + its generated tokens; a missing or different count fails that request with error
// kind "session" (the conversation goes on). No request starts after `duration_s` or beyond
// `num_requests`; every request has `request_timeout_s`. A `cancel_fraction` of requests (chosen by
// seed) is cancelled by the client `cancel_after_ms` after it was sent.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/generators.h"
#include "client/loadgen/workload.h"

namespace mamba::client::loadgen {

inline constexpr int kMaxWorkers = 1024;

struct LoadOptions {
  int concurrency = 1;      // closed loop
  double request_rate = 0;  // > 0: open loop, conversations per second
  double burstiness = 1.0;
  int max_concurrency = 0;     // open-loop cap; 0 = none
  int64_t num_requests = 100;  // requests (turns) at most; rounded up to whole conversations
  double duration_s = 0;       // 0 = no time limit (num_requests must then be set)
  uint64_t seed = 0;
  double cancel_fraction = 0;
  double cancel_after_ms = 0;
  double request_timeout_s = 600;
  double think_time_ms = 0;    // between turns of a conversation
  bool progress = false;       // live line on stderr
  bool keep_texts = false;     // keep generated texts in the records
  bool sessions = false;       // --session
  std::string session_prefix;  // empty: "lg-<16 random hex digits>-"
  // LoRA adapters the conversations are spread over, round-robin by conversation index (so a
  // conversation, and its session, stays on one); "base" is the base model. Empty: base only.
  std::vector<std::string> adapters;
  const std::atomic<bool>* stop = nullptr;  // when it turns true: start nothing more, cancel all
};

// One request, times in seconds. Token events are the streamed messages that carried at least
// one generated token.
struct RequestRecord {
  int64_t index = 0;  // in order of sending
  int64_t conversation = 0;
  int turn = 0;
  double start_s = 0;         // sent, since the run started
  double ttft_s = 0;          // sent -> first token event (0 when none arrived)
  double e2e_s = 0;           // sent -> answer complete (or failed)
  std::vector<double> itls;   // gaps between consecutive token events
  int64_t input_tokens = 0;   // the server's count when it reported usage, else planned
  int64_t output_tokens = 0;  // the server's count when it reported usage, else streamed
  int64_t streamed_tokens = 0;
  bool server_usage = false;  // output_tokens is the server's count
  std::optional<double> queue_s;
  bool ok = false;
  bool cancelled = false;  // ended by the client's cancellation
  bool cancel_scheduled = false;
  std::string error_kind;  // errors.h kinds: http_429, grpc_resource_exhausted, ...
  std::string error;
  std::string adapter;                    // LoadOptions::adapters' pick ("" = the base model)
  std::string text;                       // with keep_texts
  std::optional<int64_t> session_tokens;  // what the server says the session holds after it
};

struct RunResult {
  std::vector<RequestRecord> requests;  // by conversation, then turn (workload order)
  double duration_s = 0;                // run start -> last request finished
  int max_in_flight = 0;
  int64_t abandoned_turns = 0;  // later turns of conversations whose turn failed
  bool interrupted = false;
  int turns = 1;                         // per conversation
  std::string session_prefix;            // sessions: the ids are this + conversation index
  std::vector<std::string> session_ids;  // sessions the run sent requests on
};

// The session check of one answered turn: `held` is what the session held before the turn
// (nullopt: unknown, after a turn without a count); afterwards it is the reported count. With the
// server's prompt count (held + new tokens) the count must be prompt + generated, and the prompt
// more than `held`; without one (TGI without input_length) at least held + generated. Returns
// what is wrong, or nullopt.
std::optional<std::string> CheckSessionGrowth(const GenerateResult& result,
                                              const std::string& session_id,
                                              std::optional<int64_t>* held);

// Makes the generator of one worker thread (GeneratorFactory::Make, or a fake in tests).
using GeneratorMaker = std::function<absl::StatusOr<std::unique_ptr<Generator>>(int worker)>;

// `base` gives the sampling options and model; each request gets its prompt (history + turn
// input), max_tokens and timeout from the workload and options.
absl::StatusOr<RunResult> RunLoad(const LoadOptions& options, const GenerateSpec& base,
                                  Workload* workload, const GeneratorMaker& make_generator);

}  // namespace mamba::client::loadgen
