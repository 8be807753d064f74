// Client faults against the real mamba-server binary: a client that stops reading its stream
// (cut off at the stream buffer limit, its slot freed, other clients served meanwhile), headers
// or a body that never finish (closed after the idle timeout), 10 000 idle connections opened
// and dropped (served meanwhile, every descriptor returned), oversized headers and bodies
// (431 / 413), and SIGTERM under heavy load (every accepted request finishes, later ones are
// refused explicitly, exit code 0). Corrupt and missing model directories are in
// server_binary_test.cc.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "client/endpoint.h"
#include "client/errors.h"
#include "client/openai_api.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/http_client.h"
#include "tests/support/server_process.h"
#include "tests/support/wait_for.h"

namespace mamba::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

const char* kReference =
    " unto him, Go, and let us go.\nAnd he said unto him, Go, and say, I will not be a man of the";

// True once the server has closed `fd` (EOF or reset), waiting at most `timeout`.
bool ClosedByServer(int fd, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  timeval tv{0, 200'000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
  }
  return false;
}

std::string CompletionRequest(const json& body) {
  const std::string b = body.dump();
  return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
         "application/json\r\nContent-Length: " +
         std::to_string(b.size()) + "\r\n\r\n" + b;
}

bool Healthy(int port) {
  auto health = HttpRequest(port, "GET", "/health", "", {}, 10s);
  return health && health->status == 200;
}

// The server's descriptor count once it has stopped changing (the same for half a second):
// a connection a test client just closed is released by the server only when it reads the EOF.
template <typename Server>
int SettledFds(Server& server) {
  int last = server.OpenFds();
  int same = 0;
  for (int i = 0; i < 100 && same < 5; ++i) {
    std::this_thread::sleep_for(100ms);
    const int now = server.OpenFds();
    same = now == last ? same + 1 : 0;
    last = now;
  }
  return last;
}

bool ServesReferenceText(int port) {
  auto r = HttpRequest(
      port, "POST", "/v1/completions",
      json{{"prompt", "And God said"}, {"max_tokens", 30}, {"temperature", 0}}.dump(), {}, 60s);
  return r && r->status == 200 && json::parse(r->body)["choices"][0]["text"] == kReference;
}

TEST(Faults, ClientThatStopsReadingIsCutOffWhileOthersAreServed) {
  // Bounded kernel buffers on both sides (the server's send buffer through
  // --stream-send-buffer-bytes): the kernel holds a few kilobytes of what the server sends, not
  // the megabytes an autotuned send buffer absorbs on a busy machine, so the server's own 64 KiB
  // limit is reached after ~100 events whatever the load.
  auto server = ServerProcess::Start({"--dtype", "float32", "--max-stream-buffer-bytes", "65536",
                                      "--stream-send-buffer-bytes", "8192"});
  ASSERT_TRUE(server);
  const int fd = Connect(server->http_port(), 4096);
  ASSERT_GE(fd, 0);
  // Long, with five alternatives per token (~600 bytes per event): megabytes, never read.
  ASSERT_TRUE(SendAll(fd, CompletionRequest({{"prompt", "And God said"},
                                             {"max_tokens", 16000},
                                             {"ignore_eos", true},
                                             {"stream", true},
                                             {"logprobs", 5}})));
  ASSERT_TRUE(
      WaitFor([&] { return Metric(server->http_port(), "mamba_running_requests") == 1; }, 10s));
  // Meanwhile another client gets its exact answer.
  EXPECT_TRUE(ServesReferenceText(server->http_port()));
  // The stalled stream is cut at the buffer limit: its request cancelled, its slot freed.
  EXPECT_TRUE(WaitFor(
      [&] {
        return Metric(server->http_port(), "mamba_running_requests") == 0 &&
               Metric(server->http_port(), "mamba_state_slots_used") == 0;
      },
      120s))
      << server->Log();
  EXPECT_NE(server->Log().find("bytes behind"), std::string::npos) << server->Log();
  // ~80 KB of buffers at ~600 bytes per event, plus the reference request's tokens and what
  // the engine made while the cut travelled back: far below the 16000 asked for.
  EXPECT_LT(Metric(server->http_port(), "mamba_generated_tokens_total"), 2000)
      << "the stream must be cut long before it ends";
  close(fd);
  EXPECT_EQ(server->Terminate(), 0);
}

// Below the buffer limit a write that makes no progress for the idle timeout closes the
// connection too.
TEST(Faults, ClientThatReadsNothingIsClosedAfterTheIdleTimeout) {
  // Without the demo model's min_p the tokens (and their 5 alternatives) are long byte soup;
  // with a small send buffer (as above) the socket is full after a few dozen events, even on a
  // loaded machine (the kernel's autotuned buffer of megabytes took minutes under ctest -j2).
  auto server = ServerProcess::Start(
      {"--dtype", "float32", "--http-idle-timeout", "1", "--max-stream-buffer-bytes", "1000000000",
       "--generation-config", "none", "--stream-send-buffer-bytes", "8192"});
  ASSERT_TRUE(server);
  const int fd = Connect(server->http_port(), 4096);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, CompletionRequest({{"prompt", "And God said"},
                                             {"max_tokens", 16000},
                                             {"ignore_eos", true},
                                             {"stream", true},
                                             {"logprobs", 5}})));
  EXPECT_TRUE(WaitFor(
      [&] {
        return server->Log().find("read nothing for") != std::string::npos &&
               Metric(server->http_port(), "mamba_running_requests") == 0;
      },
      120s))
      << server->Log();
  EXPECT_LT(Metric(server->http_port(), "mamba_generated_tokens_total"), 16000);
  close(fd);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(Faults, RequestsThatNeverFinishArriving) {
  auto server = ServerProcess::Start({"--http-idle-timeout", "1"});
  ASSERT_TRUE(server);
  const int port = server->http_port();
  // Slowloris: headers that never end.
  const int headers = Connect(port);
  ASSERT_GE(headers, 0);
  ASSERT_TRUE(SendAll(headers, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  // A body sent a byte at a time, far slower than the timeout allows for the whole request.
  const int body = Connect(port);
  ASSERT_GE(body, 0);
  ASSERT_TRUE(
      SendAll(body, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"));
  std::atomic<bool> body_closed{false};
  std::thread trickle([&] {
    for (int i = 0; i < 100 && !body_closed; ++i) {
      if (!SendAll(body, " ")) break;
      std::this_thread::sleep_for(100ms);
    }
  });
  // A connection that sends nothing at all.
  const int idle = Connect(port);
  ASSERT_GE(idle, 0);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(ClosedByServer(headers, 10s));
  EXPECT_TRUE(ClosedByServer(body, 10s));
  body_closed = true;
  EXPECT_TRUE(ClosedByServer(idle, 10s));
  trickle.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
  // A kept-alive connection that goes quiet after a request is closed too.
  const int keep = Connect(port);
  ASSERT_TRUE(SendAll(keep, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(ClosedByServer(keep, 10s));
  for (int fd : {headers, body, idle, keep}) close(fd);
  EXPECT_TRUE(Healthy(port));
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(Faults, TenThousandIdleConnectionsOpenedAndDropped) {
  constexpr int kConnections = 10000;
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < kConnections + 200) {
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << lim.rlim_max << " is below "
                 << kConnections + 200;
  }
  lim.rlim_cur = std::max<rlim_t>(lim.rlim_cur, kConnections + 200);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);  // the server inherits it
  auto server = ServerProcess::Start({"--dtype", "float32"});
  ASSERT_TRUE(server);
  const int port = server->http_port();
  ASSERT_TRUE(ServesReferenceText(port));
  const int fds_before = SettledFds(*server);
  const long rss_before = server->RssKb();
  std::vector<int> fds;
  fds.reserve(kConnections);
  // In batches that the accept queue holds (net.core.somaxconn may be 128): a connection the
  // full queue dropped looks open to the client, but the server learns of it only when the
  // handshake is retried, seconds later.
  constexpr int kBatch = 100;
  for (int i = 0; i < kConnections; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0) << "connection " << i << ": " << strerror(errno);
    fds.push_back(fd);
    if ((i + 1) % kBatch == 0) {
      ASSERT_TRUE(WaitFor([&] { return server->OpenFds() >= fds_before + i + 1; }, 30s))
          << "the server holds " << server->OpenFds() - fds_before << " of " << i + 1
          << " connections";
    }
  }
  // All held by the server, which still serves.
  EXPECT_TRUE(ServesReferenceText(port));
  const long rss_held = server->RssKb();
  for (int fd : fds) close(fd);
  EXPECT_TRUE(WaitFor([&] { return server->OpenFds() <= fds_before + 1; }, 30s))
      << "descriptors: " << fds_before << " before, " << server->OpenFds()
      << " after the connections closed";
  EXPECT_TRUE(ServesReferenceText(port));
  std::printf(
      "10k idle connections: %d fds before, RSS %ld kB before, %ld kB while held, %ld kB after\n",
      fds_before, rss_before, rss_held, server->RssKb());
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(Faults, OversizedHeadersAndBodies) {
  auto server = ServerProcess::Start({"--max-body-bytes", "65536"});
  ASSERT_TRUE(server);
  const int port = server->http_port();
  auto big_header =
      HttpRequest(port, "GET", "/health", "", {"X-Big: " + std::string(100'000, 'a')}, 10s);
  ASSERT_TRUE(big_header);
  EXPECT_EQ(big_header->status, 431);
  auto big_url = HttpRequest(port, "GET", "/health?" + std::string(100'000, 'a'), "", {}, 10s);
  ASSERT_TRUE(big_url);
  EXPECT_EQ(big_url->status, 431);
  auto big_body = HttpRequest(port, "POST", "/v1/completions",
                              json{{"prompt", std::string(100'000, 'a')}}.dump(), {}, 10s);
  ASSERT_TRUE(big_body);
  EXPECT_EQ(big_body->status, 413);
  // Declared far beyond the limit: refused from the headers, before any body arrives.
  const int fd = Connect(port);
  ASSERT_TRUE(SendAll(
      fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"));
  char buf[512];
  const ssize_t n = recv(fd, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 413", 0), 0u);
  close(fd);
  // A chunked body that grows past the limit.
  const int chunked = Connect(port);
  std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) req += "1000\r\n" + std::string(4096, 'a') + "\r\n";
  SendAll(chunked, req);  // the server may close before all is sent
  const ssize_t m = recv(chunked, buf, sizeof(buf), 0);
  ASSERT_GT(m, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(m)).rfind("HTTP/1.1 413", 0), 0u);
  close(chunked);
  EXPECT_TRUE(Healthy(port));
  EXPECT_EQ(server->Terminate(), 0);
}

TEST(Faults, SigtermUnderHeavyLoadDropsNothing) {
  constexpr int kClients = 40;
  constexpr int kTokens = 120;
  auto server = ServerProcess::Start(
      {"--dtype", "float32", "--slots", "8", "--max-queue", "64", "--drain-timeout", "120"});
  ASSERT_TRUE(server);
  client::Endpoint http;
  http.protocol = client::Protocol::kHttp;
  http.host = "127.0.0.1";
  http.port = server->http_port();
  client::GenerateSpec spec;
  spec.prompt = client::PromptInput::Text("And God said");
  spec.sampling.max_tokens = kTokens;
  spec.sampling.temperature = 0;
  spec.sampling.ignore_eos = true;
  spec.timeout_s = 300;
  std::string reference;
  {
    client::OpenAiGenerator g(http, "");
    auto r = g.Stream(
        spec, [](const auto&) {}, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    reference = r->completions.at(0).text;
  }
  std::atomic<int> started{0};
  std::vector<absl::StatusOr<client::GenerateResult>> results(kClients,
                                                              absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      client::OpenAiGenerator g(http, "");
      bool first = true;
      results[static_cast<size_t>(i)] = g.Stream(
          spec,
          [&](const client::StreamEvent&) {
            if (first) ++started, first = false;
          },
          nullptr);
    });
  }
  // Every request submitted: streaming already (8 slots) or waiting in the queue.
  ASSERT_TRUE(WaitFor(
      [&] {
        return started.load() >= 8 &&
               started.load() + Metric(server->http_port(), "mamba_queue_length") >= kClients;
      },
      60s));
  kill(server->pid(), SIGTERM);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto h = HttpRequest(server->http_port(), "GET", "/health", "", {}, 2s);
        return !h || h->status == 503;
      },
      10s));
  // From then on new requests are refused explicitly (503, or no connection once it is gone).
  int refused = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = HttpRequest(server->http_port(), "POST", "/v1/completions",
                         json{{"prompt", "x"}, {"max_tokens", 2}}.dump(), {}, 10s);
    if (!r || r->status == 503) ++refused;
  }
  EXPECT_EQ(refused, 5);
  for (auto& t : threads) t.join();
  int finished = 0;
  for (int i = 0; i < kClients; ++i) {
    const auto& r = results[static_cast<size_t>(i)];
    ASSERT_TRUE(r.ok()) << "request " << i << " was dropped: " << r.status() << "\n"
                        << server->Log();
    EXPECT_EQ(r->completions.at(0).text, reference) << "request " << i;
    EXPECT_EQ(r->completions.at(0).finish_reason, "length");
    ++finished;
  }
  EXPECT_EQ(finished, kClients);
  EXPECT_EQ(server->Terminate(), 0);
  EXPECT_NE(server->Log().find("drained"), std::string::npos);
}

}  // namespace
}  // namespace mamba::testing
