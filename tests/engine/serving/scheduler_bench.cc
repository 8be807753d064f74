// Scheduler cost per step with a trivial backend (no model math): how much the engine loop
// itself (planning, sampling a 16-token vocabulary, bookkeeping, sinks) costs per step at 1, 64
// and 1024 running requests.
// The backend is the tests' deterministic fake (tests/engine/fake_backend.h), 16 tokens.
//   ./build/bin/scheduler_bench
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "engine/engine.h"
#include "tests/engine/fake_backend.h"

namespace mamba::engine {
namespace {

class CountingSink : public RequestSink {
 public:
  void OnToken(const TokenEvent&) override { tokens.fetch_add(1, std::memory_order_relaxed); }
  void OnFinish(const FinishEvent&) override {}
  std::atomic<int64_t> tokens{0};
};

void Measure(int running) {
  EngineOptions eo;
  eo.max_step_tokens = running + 16;
  eo.max_queue = running;
  eo.max_new_tokens_limit = 1 << 30;
  testing::FakeBackendOptions fo;
  fo.vocab_size = 16;
  fo.num_slots = running;
  fo.record_calls = false;
  auto engine = Engine::Create(std::make_unique<testing::FakeBackend>(fo), nullptr, eo);
  if (!engine.ok()) return;
  auto sink = std::make_shared<CountingSink>();
  for (int i = 0; i < running; ++i) {
    Request r;
    r.prompt = {1, 2, 3};
    r.params.temperature = 0;
    r.params.max_new_tokens = 1 << 30;  // never finishes during the measurement
    r.params.ignore_eos = true;
    (void)(*engine)->Submit(r, sink);
  }
  while ((*engine)->Stats().running < running)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int64_t s0 = (*engine)->Stats().steps;
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const int64_t steps = (*engine)->Stats().steps - s0;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("running %5d: %8.1f us/step (%6lld steps, %9.0f tokens/s through the loop)\n",
              running, 1e6 * secs / static_cast<double>(steps), static_cast<long long>(steps),
              static_cast<double>(steps) * running / secs);
  (*engine)->StartDrain();
  (*engine)->WaitIdle(std::chrono::milliseconds(0));
}

}  // namespace
}  // namespace mamba::engine

int main() {
  for (int n : {1, 64, 1024}) mamba::engine::Measure(n);
  return 0;
}
