// Soak test: thousands of requests through both front ends of the real mamba-server binary,
// serving the bundled tiny model (4 layers x 192). Each round mixes unary and streaming calls
// over HTTP (OpenAI completions) and gRPC, greedy and sampled, with client cancellations and
// disconnects mid-stream, deadline expiries, invalid requests, and a burst beyond the queue
// limit. Checked:
//   - every valid request got its full answer or a clean error of an expected kind; greedy
//     answers equal offline generation (the engine in this process, same dtype) token for token;
//   - after each round every state slot is free and nothing is queued or running;
//   - resident memory after the last round is at its level after the warm-up round (no growth
//     across rounds) and no file descriptor leaked.
// The figures go to stdout and, when MAMBA_SOAK_REPORT names a file, to that file as JSON
// (docs/RELIABILITY.md quotes them). MAMBA_SOAK_REQUESTS sets the requests per round.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/endpoint.h"
#include "client/errors.h"
#include "client/grpc_api.h"
#include "client/openai_api.h"
#include "engine/checkpoint.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/generate.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"

namespace mamba::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kMaxTokens = 32;  // greedy references are this long; requests ask for a prefix
constexpr int kSlots = 8;
constexpr int kMaxQueue = 24;
constexpr int kMaxPromptTokens = 256;
constexpr int kWorkers = 12;

const std::vector<std::string> kPrompts = {
    "And God said",
    "In the beginning",
    "The LORD is my shepherd",
    "Blessed are the meek: for they",
    "And it came to pass",
    "Now the serpent was more subtil than any beast",
    "Thou shalt love thy neighbour",
    "And Moses went up",
    "Let there be light",
    "For God so loved the world",
    "Hear, O Israel",
    "And the king said unto",
};

fs::path SourceDir() {
  const char* s = std::getenv("MAMBA_SOURCE_DIR");
  return s ? fs::path(s) : fs::current_path();
}

// Greedy continuations (kMaxTokens, eos ignored) of every prompt, computed offline.
struct References {
  std::vector<std::vector<int32_t>> prompt_ids;
  std::vector<std::vector<int32_t>> ids;
  std::unique_ptr<engine::Tokenizer> tokenizer;

  std::string Text(size_t prompt, int tokens) const {
    const auto& r = ids[prompt];
    auto t = tokenizer->Decode(std::span<const int32_t>(r.data(), static_cast<size_t>(tokens)));
    return t.ok() ? *t : "<decode failed>";
  }
};

References Offline(const fs::path& model) {
  References refs;
  auto tok = engine::Tokenizer::FromFile(model / "tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  refs.tokenizer = std::move(*tok);
  auto ck = engine::Checkpoint::Open(model);
  EXPECT_TRUE(ck.ok()) << ck.status();
  engine::BackendOptions o;
  o.dtype = engine::ComputeDType::kFloat32;
  o.num_slots = static_cast<int>(kPrompts.size());
  auto backend = engine::cpu::CpuBackend::Create(*ck, o);
  EXPECT_TRUE(backend.ok()) << backend.status();
  std::vector<engine::GenerationRequest> reqs;
  for (const std::string& p : kPrompts) {
    auto ids = refs.tokenizer->Encode(p);
    EXPECT_TRUE(ids.ok());
    refs.prompt_ids.push_back(*ids);
    engine::GenerationRequest r;
    r.prompt = *ids;
    r.params.temperature = 0;
    r.params.max_new_tokens = kMaxTokens;
    r.params.ignore_eos = true;
    reqs.push_back(std::move(r));
  }
  auto out = engine::Generate(**backend, reqs);
  EXPECT_TRUE(out.ok()) << out.status();
  for (const auto& g : *out) {
    std::vector<int32_t> ids;
    for (const auto& t : g.tokens) ids.push_back(t.id);
    refs.ids.push_back(std::move(ids));
  }
  return refs;
}

// What happened to each request, by kind: "ok", or the error kind the client library gives
// ("http_429", "grpc_deadline_exceeded", "cancelled", ...). Anything unexpected is a failure
// recorded with its description.
class Tally {
 public:
  void Count(const std::string& kind, const std::string& outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[kind][outcome];
  }
  void Fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failures_.size() < 20) failures_.push_back(what);
    ++num_failures_;
  }
  int64_t failures() const {
    std::lock_guard<std::mutex> lock(mu_);
    return num_failures_;
  }
  std::vector<std::string> failure_list() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  json ToJson() const {
    std::lock_guard<std::mutex> lock(mu_);
    json j = json::object();
    for (const auto& [kind, outcomes] : counts_) {
      for (const auto& [outcome, n] : outcomes) j[kind][outcome] = n;
    }
    return j;
  }
  int64_t Total(const std::string& outcome_prefix) const {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = 0;
    for (const auto& [kind, outcomes] : counts_) {
      for (const auto& [outcome, c] : outcomes) {
        if (outcome.rfind(outcome_prefix, 0) == 0) n += c;
      }
    }
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, int64_t>> counts_;
  std::vector<std::string> failures_;
  int64_t num_failures_ = 0;
};

class Soak {
 public:
  Soak(ServerProcess* server, const References* refs, Tally* tally)
      : server_(server), refs_(refs), tally_(tally) {
    http_.protocol = client::Protocol::kHttp;
    http_.host = "127.0.0.1";
    http_.port = server->http_port();
    grpc_.protocol = client::Protocol::kGrpc;
    grpc_.host = "127.0.0.1";
    grpc_.port = server->grpc_port();
    channel_ = *client::MakeGrpcChannel(grpc_, {});
  }

  // One round: `n` requests from kWorkers threads, then a burst beyond the queue limit.
  void Round(int n, uint64_t seed) {
    std::atomic<int> next{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < kWorkers; ++w) {
      workers.emplace_back([&, w] {
        client::OpenAiGenerator openai(http_, "");
        client::GrpcGenerator grpc(channel_, "");
        client::GrpcClient grpc_client(channel_, "");
        std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(w));
        while (next.fetch_add(1) < n) One(rng, openai, grpc, grpc_client);
      });
    }
    for (auto& t : workers) t.join();
    Burst(seed);
  }

 private:
  client::GenerateSpec Greedy(size_t prompt, int tokens) const {
    client::GenerateSpec spec;
    spec.prompt = client::PromptInput::Text(kPrompts[prompt]);
    spec.sampling.max_tokens = tokens;
    spec.sampling.temperature = 0;
    spec.sampling.ignore_eos = true;
    spec.timeout_s = 120;
    return spec;
  }

  // A finished greedy answer must equal the offline reference.
  void CheckGreedy(const std::string& kind, size_t prompt, int tokens,
                   const absl::StatusOr<client::GenerateResult>& r, bool have_ids) {
    if (!r.ok()) {
      // Under load the only clean errors for a valid greedy request are overload answers.
      const std::string e = client::ErrorKind(r.status());
      if (e == "http_429" || e == "grpc_resource_exhausted") return tally_->Count(kind, e);
      tally_->Count(kind, "unexpected_error");
      return tally_->Fail(absl::StrCat(kind, ": ", r.status().ToString()));
    }
    const auto& c = r->completions.at(0);
    const std::string want = refs_->Text(prompt, tokens);
    bool same = c.text == want && c.finish_reason == "length";
    if (have_ids) {
      const auto& ref = refs_->ids[prompt];
      same = same && c.token_ids == std::vector<int32_t>(ref.begin(), ref.begin() + tokens);
    }
    if (!same) {
      tally_->Count(kind, "wrong_answer");
      return tally_->Fail(absl::StrCat(kind, ": prompt ", prompt, " tokens ", tokens, " gave '",
                                       c.text, "' (", c.finish_reason, "), want '", want, "'"));
    }
    tally_->Count(kind, "ok");
  }

  void One(std::mt19937_64& rng, client::OpenAiGenerator& openai, client::GrpcGenerator& grpc,
           client::GrpcClient& grpc_client) {
    const size_t prompt = rng() % kPrompts.size();
    const int tokens = 4 + static_cast<int>(rng() % (kMaxTokens - 3));
    const int pick = static_cast<int>(rng() % 100);
    auto ignore = [](const client::StreamEvent&) {};
    if (pick < 16) {  // OpenAI, not streamed
      auto j = openai.Complete(Greedy(prompt, tokens));
      absl::StatusOr<client::GenerateResult> r = absl::UnknownError("");
      if (!j.ok()) {
        r = j.status();
      } else {
        client::GenerateResult g;
        client::CompletionResult c;
        c.text = (*j)["choices"][0]["text"].get<std::string>();
        c.finish_reason = (*j)["choices"][0]["finish_reason"].get<std::string>();
        if ((*j)["usage"]["completion_tokens"] != tokens) c.finish_reason = "wrong usage";
        g.completions.push_back(c);
        r = g;
      }
      CheckGreedy("http_unary", prompt, tokens, r, false);
    } else if (pick < 32) {  // OpenAI SSE stream
      CheckGreedy("http_stream", prompt, tokens,
                  openai.Stream(Greedy(prompt, tokens), ignore, nullptr), false);
    } else if (pick < 48) {  // gRPC unary
      auto resp = grpc_client.Generate(client::ToGenerateRequest(Greedy(prompt, tokens)), 120);
      absl::StatusOr<client::GenerateResult> r = absl::UnknownError("");
      if (!resp.ok()) {
        r = resp.status();
      } else {
        client::GenerateResult g;
        client::CompletionResult c;
        const auto& comp = resp->completions(0);
        c.text = comp.text();
        c.token_ids.assign(comp.token_ids().begin(), comp.token_ids().end());
        c.finish_reason = client::FinishReasonName(comp.end().finish_reason());
        g.completions.push_back(c);
        r = g;
      }
      CheckGreedy("grpc_unary", prompt, tokens, r, true);
    } else if (pick < 64) {  // gRPC stream
      CheckGreedy("grpc_stream", prompt, tokens,
                  grpc.Stream(Greedy(prompt, tokens), ignore, nullptr), true);
    } else if (pick < 70) {  // sampled, seeded: any answer of the right length
      client::GenerateSpec spec = Greedy(prompt, tokens);
      spec.sampling.temperature = 0.9f;
      spec.sampling.top_p = 0.95f;
      spec.sampling.seed = rng();
      const bool use_grpc = rng() % 2;
      auto r = use_grpc ? grpc.Stream(spec, ignore, nullptr) : openai.Stream(spec, ignore, nullptr);
      const std::string kind = use_grpc ? "grpc_sampled" : "http_sampled";
      if (r.ok() && r->OutputTokens() == tokens && r->completions.at(0).finish_reason == "length") {
        tally_->Count(kind, "ok");
      } else if (!r.ok() && (client::ErrorKind(r.status()) == "http_429" ||
                             client::ErrorKind(r.status()) == "grpc_resource_exhausted")) {
        tally_->Count(kind, client::ErrorKind(r.status()));
      } else {
        tally_->Count(kind, "unexpected");
        tally_->Fail(absl::StrCat(kind, ": ", r.ok() ? "wrong length" : r.status().ToString()));
      }
    } else if (pick < 82) {  // the client goes away mid-stream (HTTP: socket closed; gRPC: cancel)
      client::GenerateSpec spec = Greedy(prompt, kMaxTokens);
      spec.sampling.max_tokens = 200 + static_cast<int>(rng() % 200);
      const bool use_grpc = rng() % 2;
      const int after = 1 + static_cast<int>(rng() % 6);
      client::CancelToken cancel;
      int events = 0;
      auto on_event = [&](const client::StreamEvent& e) {
        if (e.tokens > 0 && ++events == after) cancel.Cancel();
      };
      auto r =
          use_grpc ? grpc.Stream(spec, on_event, &cancel) : openai.Stream(spec, on_event, &cancel);
      const std::string kind = use_grpc ? "grpc_cancel" : "http_disconnect";
      const std::string e = r.ok() ? "finished" : client::ErrorKind(r.status());
      if (e == "cancelled" || e == "http_429" || e == "grpc_resource_exhausted") {
        tally_->Count(kind, e);
      } else {
        tally_->Count(kind, "unexpected");
        tally_->Fail(absl::StrCat(kind, ": ",
                                  r.ok() ? "finished although cancelled" : r.status().ToString()));
      }
    } else if (pick < 88) {  // deadline far shorter than the answer takes
      const bool use_grpc = rng() % 2;
      const std::string kind = use_grpc ? "grpc_deadline" : "http_deadline";
      std::string e;
      if (use_grpc) {
        client::GenerateSpec spec = Greedy(prompt, 1000);
        auto r = grpc_client.Generate(client::ToGenerateRequest(spec), 0.02);
        e = r.ok() ? "finished" : client::ErrorKind(r.status());
      } else {
        const json body = {{"prompt", kPrompts[prompt]},
                           {"max_tokens", 1000},
                           {"ignore_eos", true},
                           {"temperature", 0},
                           {"timeout", 0.02}};
        auto r = HttpRequest(server_->http_port(), "POST", "/v1/completions", body.dump(), {}, 60s);
        e = r ? absl::StrCat("http_", r->status) : "no answer";
      }
      if (e == "grpc_deadline_exceeded" || e == "http_504" || e == "http_429" ||
          e == "grpc_resource_exhausted") {
        tally_->Count(kind, e);
      } else {
        tally_->Count(kind, "unexpected");
        tally_->Fail(absl::StrCat(kind, ": ", e));
      }
    } else {  // invalid requests: each has one right answer
      Invalid(rng, grpc_client);
    }
  }

  void Invalid(std::mt19937_64& rng, client::GrpcClient& grpc_client) {
    const int which = static_cast<int>(rng() % 8);
    const std::string too_long = [] {
      std::string s;
      for (int i = 0; i < kMaxPromptTokens + 10; ++i) s += " And";
      return s;
    }();
    struct Case {
      const char* name;
      std::string body;
      int want;
    };
    if (which < 6) {
      const Case cases[] = {
          {"malformed_json", "{\"prompt\": \"And\", \"max_tokens\": ", 400},
          {"invalid_utf8", "{\"prompt\": \"\xff\xfe bad\", \"max_tokens\": 4}", 400},
          // OpenAI's route answers every invalid request 400 (issue 12).
          {"bad_temperature", json{{"prompt", "And"}, {"temperature", -1}}.dump(), 400},
          {"bad_max_tokens", json{{"prompt", "And"}, {"max_tokens", 0}}.dump(), 400},
          {"prompt_too_long", json{{"prompt", too_long}, {"max_tokens", 4}}.dump(), 400},
          {"wrong_type", json{{"prompt", 42}}.dump(), 400},
      };
      const Case& c = cases[which];
      auto r = HttpRequest(server_->http_port(), "POST", "/v1/completions", c.body, {}, 60s);
      const int got = r ? r->status : 0;
      const bool error_body = r && json::parse(r->body, nullptr, false).contains("error");
      if (got == c.want && error_body) {
        tally_->Count(std::string("http_invalid_") + c.name, absl::StrCat("http_", got));
      } else {
        tally_->Count(std::string("http_invalid_") + c.name, "unexpected");
        tally_->Fail(
            absl::StrCat("invalid HTTP request ", c.name, " answered ", got, r ? r->body : ""));
      }
      return;
    }
    v1::GenerateRequest req;
    std::string name;
    if (which == 6) {
      name = "grpc_invalid_empty_prompt";
    } else {
      name = "grpc_invalid_prompt_too_long";
      req.set_text(too_long);
    }
    auto r = grpc_client.Generate(req, 30);
    const std::string e = r.ok() ? "ok" : client::ErrorKind(r.status());
    if (e == "grpc_invalid_argument") {
      tally_->Count(name, e);
    } else {
      tally_->Count(name, "unexpected");
      tally_->Fail(absl::StrCat(name, " answered ", e));
    }
  }

  // Twice the server's capacity (slots + queue) at once: some are refused with 429 /
  // RESOURCE_EXHAUSTED, the others get their exact answers.
  void Burst(uint64_t seed) {
    const int n = 2 * (kSlots + kMaxQueue);
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] {
        const size_t prompt = (seed + static_cast<uint64_t>(i)) % kPrompts.size();
        client::GenerateSpec spec = Greedy(prompt, kMaxTokens);
        ++ready;
        while (ready.load() < n) std::this_thread::yield();
        if (i % 2) {
          client::GrpcGenerator grpc(channel_, "");
          CheckGreedy("burst_grpc", prompt, kMaxTokens,
                      grpc.Stream(
                          spec, [](const auto&) {}, nullptr),
                      true);
        } else {
          client::OpenAiGenerator openai(http_, "");
          CheckGreedy("burst_http", prompt, kMaxTokens,
                      openai.Stream(
                          spec, [](const auto&) {}, nullptr),
                      false);
        }
      });
    }
    for (auto& t : threads) t.join();
  }

  ServerProcess* server_;
  const References* refs_;
  Tally* tally_;
  client::Endpoint http_, grpc_;
  std::shared_ptr<::grpc::Channel> channel_;
};

// Waits until nothing is queued or running and every slot is free.
bool SettlesIdle(int port) {
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < end) {
    if (Metric(port, "mamba_state_slots_used") == 0 &&
        Metric(port, "mamba_running_requests") == 0 && Metric(port, "mamba_queue_length") == 0) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

TEST(Soak, ThousandsOfRequestsLeaveNoTrace) {
  const fs::path model = SourceDir() / "models/kjv-mamba-4x192";
  const References refs = Offline(model);
  ASSERT_EQ(refs.ids.size(), kPrompts.size());
  for (const auto& r : refs.ids) ASSERT_EQ(r.size(), static_cast<size_t>(kMaxTokens));

  auto server = ServerProcess::Start(
      {"--model", model.string(), "--dtype", "float32", "--slots", std::to_string(kSlots),
       "--max-queue", std::to_string(kMaxQueue), "--max-step-tokens", "64", "--max-prompt-tokens",
       std::to_string(kMaxPromptTokens), "--max-new-tokens-limit", "1000", "--http-threads", "2",
       // The state cache is on (every result is still checked against the offline run) with a
       // budget the warm-up round fills, so that memory is steady from then on.
       "--state-cache-bytes", std::to_string(8 << 20)});
  ASSERT_TRUE(server);
  const char* env = std::getenv("MAMBA_SOAK_REQUESTS");
  const int per_round = env ? std::max(10, std::atoi(env)) : 1000;
  const int rounds = 4;  // round 0 warms up; memory is compared from its end to the last round's

  Tally tally;
  Soak soak(&*server, &refs, &tally);
  json rounds_json = json::array();
  long rss_warm = 0, rss_last = 0, rss_max = 0;
  int fds_warm = 0, fds_last = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int round = 0; round < rounds; ++round) {
    const auto r0 = std::chrono::steady_clock::now();
    soak.Round(per_round, static_cast<uint64_t>(round + 1));
    ASSERT_TRUE(SettlesIdle(server->http_port()))
        << "requests or slots still held after round " << round << ":\n"
        << server->Log();
    const long rss = server->RssKb();
    const int fds = server->OpenFds();
    if (round == 0) rss_warm = rss, fds_warm = fds;
    rss_last = rss, fds_last = fds;
    rss_max = std::max(rss_max, rss);
    rounds_json.push_back(
        {{"round", round},
         {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count()},
         {"rss_kb", rss},
         {"open_fds", fds}});
    std::printf("round %d: %.1f s, RSS %ld kB, %d fds\n", round,
                rounds_json.back()["seconds"].get<double>(), rss, fds);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const json report = {
      {"requests", tally.Total("")},
      {"seconds", seconds},
      {"outcomes", tally.ToJson()},
      {"failures", tally.failures()},
      {"rounds", rounds_json},
      {"rss_kb_after_warmup", rss_warm},
      {"rss_kb_after_last_round", rss_last},
      {"open_fds_after_warmup", fds_warm},
      {"open_fds_after_last_round", fds_last},
      {"slots_used_after", Metric(server->http_port(), "mamba_state_slots_used")},
  };
  std::printf("%s\n", report.dump(2).c_str());
  if (const char* path = std::getenv("MAMBA_SOAK_REPORT"))
    std::ofstream(path) << report.dump(2) << "\n";

  for (const std::string& f : tally.failure_list()) ADD_FAILURE() << f;
  EXPECT_EQ(tally.failures(), 0);
  EXPECT_GT(tally.Total("ok"), per_round * rounds / 2) << "most requests must be served";
  EXPECT_GT(tally.Total("http_429") + tally.Total("grpc_resource_exhausted"), 0)
      << "the bursts must go beyond the queue limit";
  EXPECT_GT(tally.Total("cancelled"), 0);
  EXPECT_GT(tally.Total("grpc_deadline_exceeded") + tally.Total("http_504"), 0);
  // Memory after the last round is back at its level after warm-up: a leak of even a few bytes
  // per request shows over thousands of requests; allocator noise stays within a few MB.
#ifndef MAMBA_SANITIZER_BUILD  // ASan's quarantine keeps freed memory on purpose; LSan checks leaks
                               // there
  EXPECT_LT(rss_last - rss_warm, 8 * 1024)
      << "RSS grew from " << rss_warm << " kB to " << rss_last << " kB";
#endif
  EXPECT_LE(fds_last, fds_warm + 2)
      << "file descriptors: " << fds_warm << " after warm-up, " << fds_last << " at the end";
  EXPECT_EQ(server->Terminate(), 0);
}

}  // namespace
}  // namespace mamba::testing
