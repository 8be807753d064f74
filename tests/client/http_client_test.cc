// The HTTP/1.1 client, the SSE parser, target parsing and error helpers, against a scripted
// server on 127.0.0.1 (the TLS failures that need no TLS server: HTTPS end to end is in
// client_server_test).
#include "client/http_client.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "client/endpoint.h"
#include "client/errors.h"
#include "client/http_api.h"
#include "client/sse.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace mamba::client {
namespace {

using testing::Chunk;
using testing::FakeHttpServer;
using testing::FakeRequest;
using testing::Response;

HttpCall Get(const std::string& path) {
  HttpCall c;
  c.path = path;
  c.deadline = Clock::now() + std::chrono::seconds(10);
  return c;
}

TEST(EndpointTest, ParsesTargets) {
  auto g = ParseEndpoint("grpc://127.0.0.1:50051");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->protocol, Protocol::kGrpc);
  EXPECT_EQ(g->host, "127.0.0.1");
  EXPECT_EQ(g->port, 50051);
  EXPECT_FALSE(g->tls);
  auto h = ParseEndpoint("http://localhost:8000/prefix/");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->protocol, Protocol::kHttp);
  EXPECT_EQ(h->port, 8000);
  EXPECT_EQ(h->base_path, "/prefix");
  auto v6 = ParseEndpoint("http://[::1]:9");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->Authority(), "[::1]:9");
  auto bare = ParseEndpoint("10.0.0.1:7");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->protocol, Protocol::kGrpc);
  auto tls = ParseEndpoint("grpcs://example.org");
  ASSERT_TRUE(tls.ok());
  EXPECT_TRUE(tls->tls);
  EXPECT_EQ(tls->port, 443);
  EXPECT_EQ(ParseEndpoint("http://h").value().port, 80);
  auto https = ParseEndpoint("https://example.org/v1proxy");
  ASSERT_TRUE(https.ok());
  EXPECT_EQ(https->protocol, Protocol::kHttp);
  EXPECT_TRUE(https->tls);
  EXPECT_EQ(https->port, 443);
  EXPECT_EQ(https->base_path, "/v1proxy");
  EXPECT_EQ(https->ToString(), "https://example.org:443/v1proxy");
  EXPECT_EQ(ParseEndpoint("HTTPS://[::1]:8443").value().ToString(), "https://[::1]:8443");
  EXPECT_EQ(ParseEndpoint("http://h:1").value().ToString(), "http://h:1");
  for (const char* bad : {"https://:443", "https://h:0", "ftp://x", "http://:80", "http://h:0",
                          "http://h:99999", "grpc://h:1/path", "http://h:abc", "::1:80"}) {
    EXPECT_FALSE(ParseEndpoint(bad).ok()) << bad;
  }
}

TEST(ErrorsTest, KindsAndHttpStatuses) {
  absl::Status s = HttpError(429, "queue full");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrorKind(s), "http_429");
  EXPECT_EQ(HttpStatusOf(s), 429);
  EXPECT_EQ(s.message(), "HTTP 429: queue full");
  EXPECT_EQ(ErrorKind(absl::UnavailableError("x")), "grpc_unavailable");
  EXPECT_EQ(ErrorKind(WithKind(absl::UnavailableError("x"), "connect")), "connect");
  EXPECT_EQ(ErrorKind(absl::OkStatus()), "");
  EXPECT_EQ(
      ErrorMessageFromBody(R"({"error":{"message":"bad temperature","type":"x","code":422}})"),
      "bad temperature");
  EXPECT_EQ(ErrorMessageFromBody(R"({"error":"Input validation error","error_type":"validation"})"),
            "Input validation error");
  EXPECT_EQ(ErrorMessageFromBody("plain text"), "plain text");
}

TEST(PrometheusTest, FindsSamples) {
  const std::string text =
      "# HELP mamba_state_slots_used State slots in use\n"
      "# TYPE mamba_state_slots_used gauge\n"
      "mamba_state_slots_used 3\n"
      "mamba_state_slots_used_total 9\n"
      "mamba_request_completions_total{reason=\"cancelled\"} 2\n"
      "mamba_request_completions_total{reason=\"stop\"} 5 1700000000\n";
  EXPECT_EQ(PrometheusValue(text, "mamba_state_slots_used"), 3);
  EXPECT_EQ(PrometheusValue(text, "mamba_request_completions_total", "{reason=\"stop\"}"), 5);
  EXPECT_EQ(PrometheusValue(text, "mamba_request_completions_total", "{reason=\"cancelled\"}"), 2);
  EXPECT_FALSE(PrometheusValue(text, "mamba_request_completions_total").has_value());
  EXPECT_FALSE(PrometheusValue(text, "nope").has_value());
}

TEST(SseParserTest, SplitsEventsAcrossFeeds) {
  SseParser p;
  std::vector<SseEvent> got;
  auto on = [&](const SseEvent& e) {
    got.push_back(e);
    return true;
  };
  const std::string stream =
      ": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:two\ndata: lines\n\ndata: "
      "[DONE]\r\rdata: tail";
  for (char c : stream) p.Feed(std::string_view(&c, 1), on);  // byte by byte
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].data, "{\"a\":1}");
  EXPECT_EQ(got[1].event, "x");
  EXPECT_EQ(got[1].data, "two\nlines");
  EXPECT_EQ(got[2].data, "[DONE]");
  p.Finish(on);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].data, "tail");
}

TEST(SseParserTest, StopsWhenTheCallbackSaysSo) {
  SseParser p;
  int n = 0;
  EXPECT_FALSE(p.Feed("data: 1\n\ndata: 2\n\n", [&](const SseEvent&) { return ++n < 1; }));
  EXPECT_EQ(n, 1);
}

TEST(HttpClientTest, ContentLengthAndKeepAlive) {
  FakeHttpServer server([](const FakeRequest& r, int fd) {
    const std::string body =
        r.method + " " + r.path + " " + r.body + " auth=" + r.Header("Authorization");
    testing::SendAll(fd, Response(200, body, "text/plain"));
    return true;
  });
  HttpClient client("127.0.0.1", server.port());
  HttpCall call = Get("/a");
  call.headers.push_back({"Authorization", "Bearer k"});
  auto r1 = client.Send(call);
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r1->body, "GET /a  auth=Bearer k");
  EXPECT_EQ(r1->Header("content-type"), "text/plain");
  HttpCall post = Get("/b");
  post.method = "POST";
  post.body = "xyz";
  auto r2 = client.Send(post);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->body, "POST /b xyz auth=");
  EXPECT_EQ(client.connections_opened(), 1);
  EXPECT_EQ(server.connections(), 1);
}

TEST(HttpClientTest, ChunkedBodyStreamsAsItArrives) {
  FakeHttpServer server([](const FakeRequest&, int fd) {
    testing::SendAll(
        fd,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n");
    testing::SendAll(fd, Chunk("data: one\n\n"));
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    testing::SendAll(fd, Chunk("data: t") + Chunk("wo\n\n") + "0;ext=1\r\nTrailer: x\r\n\r\n");
    return true;
  });
  HttpClient client("127.0.0.1", server.port());
  std::vector<std::pair<std::string, Clock::time_point>> parts;
  HttpCall call = Get("/s");
  call.on_body = [&](std::string_view d) {
    parts.emplace_back(std::string(d), Clock::now());
    return true;
  };
  const Clock::time_point start = Clock::now();
  auto r = client.Send(call);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->body.empty());
  std::string all;
  for (const auto& p : parts) all += p.first;
  EXPECT_EQ(all, "data: one\n\ndata: two\n\n");
  ASSERT_GE(parts.size(), 2u);
  EXPECT_LT(parts[0].second - start, std::chrono::milliseconds(120));  // not held until the end
  // The connection is still usable after the trailer.
  call.on_body = nullptr;
  auto again = client.Send(call);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->body, "data: one\n\ndata: two\n\n");
  EXPECT_EQ(client.connections_opened(), 1);
}

TEST(HttpClientTest, ErrorBodiesAreCollectedEvenWhenStreaming) {
  FakeHttpServer server([](const FakeRequest&, int fd) {
    testing::SendAll(fd, Response(429, R"({"error":{"message":"queue is full","code":429}})",
                                  "application/json", "Retry-After: 1\r\n"));
    return true;
  });
  HttpClient client("127.0.0.1", server.port());
  HttpCall call = Get("/x");
  bool streamed = false;
  call.on_body = [&](std::string_view) { return streamed = true; };
  auto r = client.Send(call);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 429);
  EXPECT_FALSE(streamed);
  EXPECT_EQ(ErrorMessageFromBody(r->body), "queue is full");
  EXPECT_EQ(r->Header("Retry-After"), "1");
}

TEST(HttpClientTest, CloseDelimitedAndHttp10) {
  FakeHttpServer server([](const FakeRequest&, int fd) {
    testing::SendAll(fd, "HTTP/1.0 200 OK\r\n\r\nuntil the end");
    return false;
  });
  HttpClient client("127.0.0.1", server.port());
  auto r = client.Send(Get("/"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body, "until the end");
  auto r2 = client.Send(Get("/"));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(client.connections_opened(), 2);
}

TEST(HttpClientTest, SkipsInterimResponses) {
  FakeHttpServer server([](const FakeRequest&, int fd) {
    testing::SendAll(fd, "HTTP/1.1 100 Continue\r\n\r\n" + Response(200, "ok"));
    return true;
  });
  HttpClient client("127.0.0.1", server.port());
  auto r = client.Send(Get("/"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok");
}

TEST(HttpClientTest, RetriesOnceWhenAnIdleConnectionWasClosed) {
  std::atomic<int> n{0};
  FakeHttpServer server([&](const FakeRequest&, int fd) {
    testing::SendAll(fd, Response(200, std::to_string(++n)));
    return false;  // close after each answer, without saying so
  });
  HttpClient client("127.0.0.1", server.port());
  ASSERT_TRUE(client.Send(Get("/")).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto r = client.Send(Get("/"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body, "2");
  EXPECT_EQ(client.connections_opened(), 2);
}

TEST(HttpClientTest, ConnectionRefused) {
  HttpClient client("127.0.0.1", testing::UnusedPort());
  auto r = client.Send(Get("/"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "connect");
  EXPECT_NE(r.status().message().find("Connection refused"), absl::string_view::npos) << r.status();
}

TEST(HttpClientTest, DeadlineAndEarlyClose) {
  FakeHttpServer server([](const FakeRequest& r, int fd) {
    if (r.path == "/slow") {
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
      return false;
    }
    testing::SendAll(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    return false;
  });
  HttpClient client("127.0.0.1", server.port());
  HttpCall slow = Get("/slow");
  slow.deadline = Clock::now() + std::chrono::milliseconds(200);
  const Clock::time_point start = Clock::now();
  auto r = client.Send(slow);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "timeout");
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500));
  auto early = client.Send(Get("/short"));
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(ErrorKind(early.status()), "connection_closed");
}

TEST(HttpClientTest, CancelFromAnotherThread) {
  std::atomic<bool> client_gone{false};
  FakeHttpServer server([&](const FakeRequest&, int fd) {
    testing::SendAll(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 200; ++i) {
      if (!testing::SendAll(fd, Chunk("data: x\n\n"))) {
        client_gone = true;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  });
  HttpClient client("127.0.0.1", server.port());
  CancelToken token;
  HttpCall call = Get("/stream");
  call.cancel = &token;
  int parts = 0;
  call.on_body = [&](std::string_view) {
    ++parts;
    return true;
  };
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    token.Cancel();
  });
  const Clock::time_point start = Clock::now();
  auto r = client.Send(call);
  canceller.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "cancelled");
  EXPECT_GT(parts, 0);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1500));
  for (int i = 0; i < 200 && !client_gone; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(client_gone.load());
  // A token cancelled before the call: nothing is sent.
  const int before = server.requests();
  auto again = client.Send(call);
  EXPECT_EQ(ErrorKind(again.status()), "cancelled");
  EXPECT_EQ(server.requests(), before);
}

// ---- HTTPS failures ---------------------------------------------------------------------------

HttpClientOptions Https(std::string ca_file = "") {
  HttpClientOptions o;
  o.tls.enabled = true;
  o.tls.ca_file = std::move(ca_file);
  return o;
}

// Accepts one connection, waits (at most 5 s) for the client's first bytes, answers `reply` and
// closes: a plain HTTP server seen by a TLS client.
class OneReplyServer {
 public:
  explicit OneReplyServer(std::string reply) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 1) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, reply = std::move(reply)] {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 5000) != 1) return;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      pollfd q{c, POLLIN, 0};
      char buf[4096];
      if (::poll(&q, 1, 5000) == 1) (void)::recv(c, buf, sizeof(buf), 0);
      testing::SendAll(c, reply);
      ::close(c);
    });
  }
  ~OneReplyServer() {
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

TEST(HttpsClientTest, APlainHttpServerFailsTheHandshakeClearly) {
  OneReplyServer server(
      "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  HttpClient client("127.0.0.1", server.port(), Https());
  const Clock::time_point start = Clock::now();
  auto r = client.Send(Get("/health"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "tls") << r.status();
  EXPECT_NE(r.status().message().find("TLS handshake failed"), absl::string_view::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("does not speak TLS"), absl::string_view::npos) << r.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(HttpsClientTest, AServerThatClosesDuringTheHandshake) {
  OneReplyServer server("");
  HttpClient client("127.0.0.1", server.port(), Https());
  auto r = client.Send(Get("/health"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "tls") << r.status();
  EXPECT_NE(r.status().message().find("the server closed the connection"), absl::string_view::npos)
      << r.status();
}

TEST(HttpsClientTest, TheHandshakeIsBoundedAndCancellable) {
  // The scripted server waits for an HTTP head that a TLS client never sends.
  FakeHttpServer server([](const FakeRequest&, int) { return false; });
  HttpClientOptions options = Https();
  options.connect_timeout = std::chrono::milliseconds(300);
  HttpClient client("127.0.0.1", server.port(), options);
  Clock::time_point start = Clock::now();
  auto r = client.Send(Get("/"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "timeout") << r.status();
  EXPECT_NE(r.status().message().find("TLS handshake"), absl::string_view::npos) << r.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));

  HttpClient patient("127.0.0.1", server.port(), Https());
  CancelToken token;
  HttpCall call = Get("/");
  call.cancel = &token;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    token.Cancel();
  });
  start = Clock::now();
  r = patient.Send(call);
  canceller.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "cancelled") << r.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
}

TEST(HttpsClientTest, UnusableCaFiles) {
  FakeHttpServer server([](const FakeRequest&, int) { return false; });
  const testing::TempDir temp;
  const std::string dir = temp.path().string();
  const std::string missing = dir + "/missing.pem", junk = dir + "/junk.pem";
  { std::ofstream(junk) << "not a certificate\n"; }
  HttpClient a("127.0.0.1", server.port(), Https(missing));
  auto r = a.Send(Get("/"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "tls");
  EXPECT_NE(r.status().message().find("cannot read the TLS CA file " + missing),
            absl::string_view::npos)
      << r.status();
  HttpClient b("127.0.0.1", server.port(), Https(junk));
  r = b.Send(Get("/"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "tls");
  EXPECT_NE(r.status().message().find("holds no usable PEM certificate"), absl::string_view::npos)
      << r.status();
}

TEST(HttpApiTest, JsonCallsAndHelpers) {
  FakeHttpServer server([](const FakeRequest& r, int fd) {
    if (r.path == "/base/tokenize") {
      testing::SendAll(fd, Response(200, R"({"tokens":[5,6,7],"count":3})"));
    } else if (r.path == "/base/detokenize") {
      testing::SendAll(fd, Response(200, R"({"prompt":"hello"})"));
    } else if (r.path == "/base/v1/models") {
      testing::SendAll(
          fd, Response(200, R"({"object":"list","data":[{"id":"demo","object":"model"}]})"));
    } else if (r.path == "/base/health") {
      testing::SendAll(fd, Response(503, "draining", "text/plain"));
    } else {
      testing::SendAll(fd, Response(404, R"({"error":{"message":"no such path","code":404}})"));
    }
    return true;
  });
  Endpoint e = ParseEndpoint("http://127.0.0.1:" + std::to_string(server.port()) + "/base").value();
  HttpApi api(e, "key");
  EXPECT_EQ(api.Tokenize("x", 5).value(), (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(api.Detokenize({1}, 5).value(), "hello");
  EXPECT_EQ(api.FirstModelId(5).value(), "demo");
  EXPECT_EQ(api.Health(5)->status, 503);
  auto missing = api.Metrics(5);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(ErrorKind(missing.status()), "http_404");
  EXPECT_NE(missing.status().message().find("no such path"), absl::string_view::npos);
}

}  // namespace
}  // namespace mamba::client
