#include "client/loadgen/runner.h"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "client/errors.h"

namespace mamba::client::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Fires CancelTokens at their times, on one thread.
class CancelTimer {
 public:
  CancelTimer() : thread_([this] { Loop(); }) {}
  ~CancelTimer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Schedule(Clock::time_point at, std::shared_ptr<CancelToken> token) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      due_.emplace(at, std::move(token));
    }
    cv_.notify_all();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!done_) {
      if (due_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = due_.begin();
      if (Clock::now() < first->first) {
        cv_.wait_until(lock, first->first);
        continue;
      }
      std::shared_ptr<CancelToken> token = std::move(first->second);
      due_.erase(first);
      lock.unlock();
      token->Cancel();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::multimap<Clock::time_point, std::shared_ptr<CancelToken>> due_;
  std::thread thread_;
};

class Runner {
 public:
  Runner(const LoadOptions& o, const GenerateSpec& base, Workload* w, const GeneratorMaker& make)
      : o_(o), base_(base), workload_(w), make_generator_(make) {}

  absl::StatusOr<RunResult> Run();

 private:
  struct Request {
    RequestRecord record;
    PromptInput answer;
    bool answered = false;  // the server answered (record.ok, or only the session check failed)
  };
  struct SessionTurn {
    std::string id;
    std::optional<int64_t> held;  // tokens the session holds (nullopt: unknown)
  };

  absl::Status Prefetch();
  bool ShouldStop(Clock::time_point now) const;
  std::optional<Conversation> Take(int64_t index, bool from_dispatcher);
  std::optional<Conversation> Next();
  void Dispatch();
  void SpawnWorkerLocked();
  void Worker(int id);
  void RunConversation(Generator& gen, const Conversation& c);
  Request RunRequest(Generator& gen, const Conversation& c, int turn, const PromptInput& prompt,
                     int64_t planned_input, SessionTurn* session);
  void Record(const absl::StatusOr<GenerateResult>& r, bool ids, const CancelToken& token,
              SessionTurn* session, Request* out);
  void Monitor();
  void PrintProgress(bool final);

  const LoadOptions& o_;
  const GenerateSpec& base_;
  Workload* workload_;
  const GeneratorMaker& make_generator_;

  int64_t max_conversations_ = 0;
  std::string session_prefix_;
  Clock::time_point start_;
  CancelTimer timer_;

  std::mutex mu_;  // everything below
  std::condition_variable cv_;
  std::vector<std::optional<Conversation>> prefetched_;
  int64_t next_conversation_ = 0;
  std::deque<Conversation> queue_;  // open loop: arrived, not yet taken
  bool dispatch_done_ = false;
  int idle_workers_ = 0;
  std::vector<std::thread> workers_;
  std::vector<RequestRecord> records_;
  std::set<std::shared_ptr<CancelToken>> in_flight_tokens_;
  std::optional<absl::Status> source_error_;
  std::vector<std::string> session_ids_;
  int64_t abandoned_ = 0;
  bool cancelled_all_ = false;

  std::atomic<int64_t> next_request_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int64_t> done_ok_{0}, failed_{0}, cancelled_{0}, output_tokens_{0};
  std::atomic<bool> finished_{false};
};

bool Runner::ShouldStop(Clock::time_point now) const {
  if (o_.stop != nullptr && o_.stop->load()) return true;
  return o_.duration_s > 0 && now - start_ >= FromSeconds(o_.duration_s);
}

absl::Status Runner::Prefetch() {
  // With a known count the prompts are made before the clock starts (detokenizing may call the
  // server); with only a duration they are made as needed.
  if (o_.duration_s > 0 || max_conversations_ > 200000) return absl::OkStatus();
  prefetched_.resize(static_cast<size_t>(max_conversations_));
  for (int64_t i = 0; i < max_conversations_; ++i) {
    absl::StatusOr<Conversation> c = workload_->Make(i);
    if (!c.ok()) return c.status();
    prefetched_[static_cast<size_t>(i)] = *std::move(c);
  }
  return absl::OkStatus();
}

// Under mu_.
std::optional<Conversation> Runner::Take(int64_t index, bool /*from_dispatcher*/) {
  if (index < static_cast<int64_t>(prefetched_.size())) {
    std::optional<Conversation> c = std::move(prefetched_[static_cast<size_t>(index)]);
    return c;
  }
  absl::StatusOr<Conversation> c = workload_->Make(index);
  if (!c.ok()) {
    if (!source_error_) source_error_ = c.status();
    return std::nullopt;
  }
  return *std::move(c);
}

std::optional<Conversation> Runner::Next() {
  std::unique_lock<std::mutex> lock(mu_);
  if (o_.request_rate <= 0) {  // closed loop
    if (ShouldStop(Clock::now()) || next_conversation_ >= max_conversations_ || source_error_)
      return std::nullopt;
    return Take(next_conversation_++, false);
  }
  ++idle_workers_;
  cv_.wait(lock, [&] { return !queue_.empty() || dispatch_done_; });
  --idle_workers_;
  if (queue_.empty()) return std::nullopt;
  Conversation c = std::move(queue_.front());
  queue_.pop_front();
  return c;
}

void Runner::SpawnWorkerLocked() {
  const int id = static_cast<int>(workers_.size());
  workers_.emplace_back([this, id] { Worker(id); });
}

void Runner::Dispatch() {
  std::mt19937_64 rng(Mix(o_.seed ^ 0xa221c0ffeeull));
  const double shape = o_.burstiness;
  std::gamma_distribution<double> gap(shape, 1.0 / (o_.request_rate * shape));
  double t = 0;
  for (int64_t i = 0; i < max_conversations_; ++i) {
    if (i > 0) t += gap(rng);
    const Clock::time_point at = start_ + FromSeconds(t);
    std::unique_lock<std::mutex> lock(mu_);
    // Wake up early when asked to stop.
    while (Clock::now() < at && !ShouldStop(Clock::now())) {
      cv_.wait_until(lock, std::min(at, Clock::now() + std::chrono::milliseconds(50)));
    }
    if (ShouldStop(Clock::now())) break;
    std::optional<Conversation> c = Take(i, true);
    if (!c) break;
    queue_.push_back(*std::move(c));
    if (o_.max_concurrency <= 0 && idle_workers_ < static_cast<int>(queue_.size()) &&
        static_cast<int>(workers_.size()) < kMaxWorkers) {
      SpawnWorkerLocked();
    }
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> lock(mu_);
  dispatch_done_ = true;
  cv_.notify_all();
}

void Runner::Worker(int id) {
  absl::StatusOr<std::unique_ptr<Generator>> gen = make_generator_(id);
  if (!gen.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!source_error_) source_error_ = gen.status();
    return;
  }
  while (std::optional<Conversation> c = Next()) RunConversation(**gen, *c);
}

void Runner::RunConversation(Generator& gen, const Conversation& c) {
  std::optional<SessionTurn> session;
  if (o_.sessions) {
    session = SessionTurn{absl::StrCat(session_prefix_, c.index), int64_t{0}};
    std::lock_guard<std::mutex> lock(mu_);
    session_ids_.push_back(session->id);
  }
  PromptInput history;
  int64_t history_tokens = 0;
  for (size_t k = 0; k < c.turns.size(); ++k) {
    const Turn& turn = c.turns[k];
    if (k > 0) {
      if (o_.think_time_ms > 0) {
        std::unique_lock<std::mutex> lock(mu_);
        const Clock::time_point until = Clock::now() + FromSeconds(o_.think_time_ms / 1000);
        while (Clock::now() < until && !ShouldStop(Clock::now())) {
          cv_.wait_until(lock, std::min(until, Clock::now() + std::chrono::milliseconds(50)));
        }
      }
      if (ShouldStop(Clock::now())) {
        std::lock_guard<std::mutex> lock(mu_);
        abandoned_ += static_cast<int64_t>(c.turns.size() - k);
        return;
      }
    }
    // With a session the server holds the history: the turn sends its new input only.
    PromptInput prompt = session ? PromptInput() : history;
    if (turn.input.use_ids) {
      prompt.use_ids = true;
      prompt.ids.insert(prompt.ids.end(), turn.input.ids.begin(), turn.input.ids.end());
    } else {
      prompt.text += turn.input.text;
    }
    const int64_t planned = (session ? 0 : history_tokens) + turn.planned_tokens;
    Request r =
        RunRequest(gen, c, static_cast<int>(k), prompt, planned, session ? &*session : nullptr);
    const bool answered = r.answered;
    history_tokens = r.record.input_tokens + r.record.output_tokens;
    {
      std::lock_guard<std::mutex> lock(mu_);
      records_.push_back(std::move(r.record));
      if (!answered) abandoned_ += static_cast<int64_t>(c.turns.size() - k - 1);
    }
    if (!answered) return;
    if (session) continue;
    history = std::move(prompt);
    if (history.use_ids) {
      history.ids.insert(history.ids.end(), r.answer.ids.begin(), r.answer.ids.end());
    } else {
      history.text += r.answer.text;
    }
  }
}

Runner::Request Runner::RunRequest(Generator& gen, const Conversation& c, int turn,
                                   const PromptInput& prompt, int64_t planned_input,
                                   SessionTurn* session) {
  Request out;
  RequestRecord& rec = out.record;
  rec.index = next_request_++;
  rec.conversation = c.index;
  rec.turn = turn;
  GenerateSpec spec = base_;
  spec.prompt = prompt;
  spec.sampling.max_tokens = c.turns[static_cast<size_t>(turn)].max_tokens;
  spec.timeout_s = o_.request_timeout_s;
  if (session != nullptr) spec.session_id = session->id;
  if (!o_.adapters.empty()) {
    const std::string& a = o_.adapters[static_cast<size_t>(c.index) % o_.adapters.size()];
    spec.adapter = a == "base" ? "" : a;
    rec.adapter = spec.adapter;
  }
  auto token = std::make_shared<CancelToken>();
  if (o_.cancel_fraction > 0) {
    std::mt19937_64 rng(Mix(o_.seed ^ 0xcafe0000ull ^ Mix(static_cast<uint64_t>(rec.index))));
    rec.cancel_scheduled = std::uniform_real_distribution<double>(0, 1)(rng) < o_.cancel_fraction;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_all_) token->Cancel();
    in_flight_tokens_.insert(token);
  }
  const int now_in_flight = ++in_flight_;
  int seen = max_in_flight_.load();
  while (now_in_flight > seen && !max_in_flight_.compare_exchange_weak(seen, now_in_flight)) {
  }
  const Clock::time_point t0 = Clock::now();
  rec.start_s = Seconds(t0 - start_);
  if (rec.cancel_scheduled) timer_.Schedule(t0 + FromSeconds(o_.cancel_after_ms / 1000), token);
  Clock::time_point last = t0;
  bool first = true;
  auto on_event = [&](const StreamEvent& e) {
    if (e.tokens <= 0) return;
    const Clock::time_point now = Clock::now();
    if (first) {
      rec.ttft_s = Seconds(now - t0);
      first = false;
    } else {
      rec.itls.push_back(Seconds(now - last));
    }
    last = now;
    rec.streamed_tokens += e.tokens;
  };
  absl::StatusOr<GenerateResult> r = gen.Stream(spec, on_event, token.get());
  rec.e2e_s = Seconds(Clock::now() - t0);
  --in_flight_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_tokens_.erase(token);
  }
  rec.input_tokens = planned_input;
  rec.output_tokens = rec.streamed_tokens;
  Record(r, prompt.use_ids, *token, session, &out);
  return out;
}

// Fills the outcome of a finished call into `out`: counts, queue time, answer, or the error.
void Runner::Record(const absl::StatusOr<GenerateResult>& r, bool ids, const CancelToken& token,
                    SessionTurn* session, Request* out) {
  RequestRecord& rec = out->record;
  if (r.ok()) {
    rec.ok = true;
    out->answered = true;
    if (std::optional<int64_t> p = r->PromptTokens()) rec.input_tokens = *p;
    rec.output_tokens = r->OutputTokens();
    rec.server_usage = r->server_counted_output;
    if (!r->completions.empty()) {
      const CompletionResult& first_completion = r->completions[0];
      rec.queue_s = first_completion.queue_s;
      if (o_.keep_texts) rec.text = first_completion.text;
      out->answer.use_ids = ids;
      if (ids) {
        out->answer.ids = first_completion.token_ids;
      } else {
        out->answer.text = first_completion.text;
      }
    }
    if (r->session) rec.session_tokens = r->session->tokens;
    std::optional<std::string> session_error;
    if (session != nullptr) session_error = CheckSessionGrowth(*r, session->id, &session->held);
    if (session_error) {
      rec.ok = false;
      rec.error_kind = "session";
      rec.error = *std::move(session_error);
      ++failed_;
      return;
    }
    ++done_ok_;
    output_tokens_ += rec.output_tokens;
  } else {
    rec.error_kind = ErrorKind(r.status());
    rec.error = std::string(r.status().message());
    if (rec.error_kind == "cancelled" && token.cancelled()) {
      rec.cancelled = true;
      ++cancelled_;
    } else {
      ++failed_;
    }
  }
}

void Runner::PrintProgress(bool final) {
  const double t = Seconds(Clock::now() - start_);
  const int64_t ok = done_ok_, failed = failed_, cancelled = cancelled_;
  const int64_t total = max_conversations_ * (workload_ ? workload_->options().turns : 1);
  std::string line =
      absl::StrCat("[", static_cast<int64_t>(t * 10) / 10.0, " s] ", ok + failed + cancelled);
  if (o_.duration_s <= 0) absl::StrAppend(&line, "/", total);
  absl::StrAppend(&line, " done (", failed, " failed, ", cancelled, " cancelled), ",
                  in_flight_.load(), " in flight, ",
                  t > 0 ? static_cast<int64_t>(output_tokens_.load() / t) : 0, " output tok/s");
  std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  std::fflush(stderr);
}

void Runner::Monitor() {
  Clock::time_point next_print = Clock::now();
  while (!finished_.load()) {
    if (o_.stop != nullptr && o_.stop->load()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!cancelled_all_) {
        cancelled_all_ = true;
        for (const auto& token : in_flight_tokens_) token->Cancel();
        cv_.notify_all();
      }
    }
    if (o_.progress && Clock::now() >= next_print) {
      PrintProgress(false);
      next_print += std::chrono::milliseconds(500);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (o_.progress) PrintProgress(true);
}

absl::StatusOr<RunResult> Runner::Run() {
  if (o_.num_requests <= 0 && o_.duration_s <= 0) {
    return absl::InvalidArgumentError("a run needs --num-requests or --duration");
  }
  if (o_.request_rate <= 0 && o_.concurrency < 1)
    return absl::InvalidArgumentError("--concurrency must be at least 1");
  if (o_.request_rate > 0 && o_.burstiness <= 0)
    return absl::InvalidArgumentError("--burstiness must be > 0");
  if (o_.cancel_fraction < 0 || o_.cancel_fraction > 1) {
    return absl::InvalidArgumentError("--cancel-fraction must be in [0, 1]");
  }
  const int turns = workload_->options().turns;
  // Bounded even with only a duration: at most a million requests.
  const int64_t requests = o_.num_requests > 0 ? o_.num_requests : 1000000;
  max_conversations_ = (requests + turns - 1) / turns;
  if (o_.sessions) {
    session_prefix_ = o_.session_prefix;
    if (session_prefix_.empty()) {
      std::random_device device;
      const uint64_t run = (static_cast<uint64_t>(device()) << 32) ^ device();
      session_prefix_ = absl::StrCat("lg-", absl::Hex(run, absl::kZeroPad16), "-");
    }
  }
  if (absl::Status s = Prefetch(); !s.ok()) return s;

  start_ = Clock::now();
  std::thread monitor([this] { Monitor(); });
  std::thread dispatcher;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (o_.request_rate <= 0) {
      for (int i = 0; i < std::min<int64_t>(o_.concurrency, max_conversations_); ++i)
        SpawnWorkerLocked();
    } else if (o_.max_concurrency > 0) {
      for (int i = 0; i < std::min<int64_t>(o_.max_concurrency, max_conversations_); ++i)
        SpawnWorkerLocked();
    }
  }
  if (o_.request_rate > 0) dispatcher = std::thread([this] { Dispatch(); });
  if (dispatcher.joinable()) dispatcher.join();
  // No worker is added once the dispatcher is done.
  for (std::thread& w : workers_) w.join();
  finished_ = true;
  monitor.join();

  if (source_error_ && records_.empty()) return *source_error_;
  RunResult result;
  result.requests = std::move(records_);
  // In workload order (conversation, then turn): the order in which workers happened to start
  // requests varies from run to run.
  std::sort(result.requests.begin(), result.requests.end(),
            [](const RequestRecord& a, const RequestRecord& b) {
              return std::tie(a.conversation, a.turn) < std::tie(b.conversation, b.turn);
            });
  for (const RequestRecord& r : result.requests)
    result.duration_s = std::max(result.duration_s, r.start_s + r.e2e_s);
  result.max_in_flight = max_in_flight_.load();
  result.abandoned_turns = abandoned_;
  result.interrupted = o_.stop != nullptr && o_.stop->load();
  result.turns = turns;
  result.session_prefix = session_prefix_;
  result.session_ids = std::move(session_ids_);
  return result;
}

}  // namespace

std::optional<std::string> CheckSessionGrowth(const GenerateResult& result,
                                              const std::string& session_id,
                                              std::optional<int64_t>* held) {
  const std::optional<int64_t> before = *held;
  *held = std::nullopt;
  if (!result.session) return "the answer carries no \"session\"";
  const SessionReport& s = *result.session;
  if (!s.id.empty() && s.id != session_id)
    return absl::StrCat("the answer names session '", s.id, "', not '", session_id, "'");
  *held = s.tokens;
  if (!before) return std::nullopt;
  const int64_t generated = result.OutputTokens();
  // A session turn's usage counts the whole prompt the model read: what the session held
  // before plus the turn's new tokens.
  if (std::optional<int64_t> prompt = result.PromptTokens()) {
    const int64_t want = *prompt + generated;
    if (s.tokens == want && *prompt > *before) return std::nullopt;
    return absl::StrCat("session '", session_id, "' holds ", s.tokens, " tokens, expected ", want,
                        " (", *prompt, " prompt, of which ", *before, " held before, + ", generated,
                        " generated)");
  }
  if (s.tokens >= *before + generated) return std::nullopt;
  return absl::StrCat("session '", session_id, "' holds ", s.tokens, " tokens, fewer than ",
                      *before, " + ", generated, " generated");
}

absl::StatusOr<RunResult> RunLoad(const LoadOptions& options, const GenerateSpec& base,
                                  Workload* workload, const GeneratorMaker& make_generator) {
  Runner runner(options, base, workload, make_generator);
  return runner.Run();
}

}  // namespace mamba::client::loadgen
