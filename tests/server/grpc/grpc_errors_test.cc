// The gRPC front end's error paths: every wire code it promises, cancellation and deadlines
// freeing the engine's slots, slow readers, API keys, TLS and shutdown.
#include <array>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/grpc/convert.h"
#include "tests/engine/test_support.h"
#include "tests/server/grpc/grpc_test_support.h"

namespace mamba::server::testing {
namespace {

using ::grpc::StatusCode;
using namespace std::chrono_literals;

// A generation that runs far longer than any test waits (16384 tokens).
v1::GenerateRequest Endless() { return GreedyRequest("Keep talking", 16384); }

::grpc::Status CallGenerate(v1::MambaService::Stub& stub, const v1::GenerateRequest& r,
                            std::chrono::milliseconds deadline = 60s) {
  v1::GenerateResponse response;
  return stub.Generate(Context(deadline).get(), r, &response);
}

::grpc::Status CallStream(v1::MambaService::Stub& stub, const v1::GenerateRequest& r) {
  return ReadStream(stub, r, Context().get()).status;
}

std::string Describe(const ::grpc::Status& s) {
  return std::to_string(s.error_code()) + ": " + s.error_message();
}

TEST(GrpcErrorsTest, InvalidArgumentsOnBothCalls) {
  ServerSetup setup;
  setup.engine.max_prompt_tokens = 64;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();

  std::vector<std::pair<std::string, v1::GenerateRequest>> cases;
  auto add = [&](const std::string& name, auto edit) {
    v1::GenerateRequest r = GreedyRequest("hello", 4);
    edit(r);
    cases.emplace_back(name, r);
  };
  add("no prompt", [](auto& r) { r.clear_prompt(); });
  add("empty text", [](auto& r) { r.set_text(""); });
  add("empty ids", [](auto& r) { r.mutable_token_ids(); });
  add("id too large", [](auto& r) { r.mutable_token_ids()->add_ids(50280); });
  add("negative id", [](auto& r) { r.mutable_token_ids()->add_ids(-1); });
  add("prompt too long", [](auto& r) {
    for (int i = 0; i < 65; ++i) r.mutable_token_ids()->add_ids(100 + i);
  });
  add("temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-1.0f); });
  add("top_p 0", [](auto& r) { r.mutable_sampling()->set_top_p(0.0f); });
  add("top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-2); });
  add("min_p", [](auto& r) { r.mutable_sampling()->set_min_p(1.5f); });
  add("repetition_penalty 0", [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0.0f); });
  add("presence_penalty", [](auto& r) { r.mutable_sampling()->set_presence_penalty(3.0f); });
  add("frequency_penalty", [](auto& r) { r.mutable_sampling()->set_frequency_penalty(-3.0f); });
  add("top_logprobs", [](auto& r) { r.set_top_logprobs(21); });
  add("max_new_tokens 0", [](auto& r) { r.mutable_stopping()->set_max_new_tokens(0); });
  add("max_new_tokens huge", [](auto& r) { r.mutable_stopping()->set_max_new_tokens(1 << 30); });
  add("min > max", [](auto& r) { r.mutable_stopping()->set_min_new_tokens(5); });
  add("stop id", [](auto& r) { r.mutable_stopping()->add_stop_token_ids(60000); });
  add("empty stop string", [](auto& r) { r.mutable_stopping()->add_stop(""); });
  add("n negative", [](auto& r) { r.set_n(-1); });
  add("n above slots", [](auto& r) { r.set_n(5); });

  for (const auto& [name, r] : cases) {
    SCOPED_TRACE(name);
    const ::grpc::Status unary = CallGenerate(*stub, r);
    EXPECT_EQ(unary.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(unary);
    EXPECT_FALSE(unary.error_message().empty());
    const ::grpc::Status stream = CallStream(*stub, r);
    EXPECT_EQ(stream.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(stream);
  }

  v1::DetokenizeRequest dr;
  dr.add_token_ids(50279);  // a padding row of the embedding: no token
  dr.add_token_ids(1 << 20);
  v1::DetokenizeResponse text;
  EXPECT_EQ(stub->Detokenize(Context().get(), dr, &text).error_code(),
            StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(server->WaitEngineIdle());
}

// Wire codes are the engine's codes by identity (gRPC's numbers are absl's), messages unchanged.
TEST(GrpcErrorsTest, CodesAreTheEnginesByIdentity) {
  for (int c = 1; c <= 16; ++c) {
    const ::grpc::Status g = ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(c), "why"));
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    EXPECT_EQ(g.error_message(), "why");
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

// Validation happens once, in the engine: a prompt over the limit (OUT_OF_RANGE in the engine
// and RESOURCE_EXHAUSTED over HTTP before issue 12) is INVALID_ARGUMENT with the engine's words,
// on both calls.
TEST(GrpcErrorsTest, ValidationIsTheEnginesOnBothCalls) {
  ServerSetup setup;
  setup.engine.max_prompt_tokens = 8;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  v1::GenerateRequest r = GreedyRequest("hello", 4);
  r.mutable_token_ids();
  for (int i = 0; i < 9; ++i) r.mutable_token_ids()->add_ids(100 + i);
  for (const ::grpc::Status& s : {CallGenerate(*stub, r), CallStream(*stub, r)}) {
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    EXPECT_EQ(s.error_message(), "the prompt has 9 tokens; the limit is 8");
  }
  v1::GenerateRequest big = GreedyRequest("hello", 1 << 30);
  const ::grpc::Status s = CallGenerate(*stub, big);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("max_new_tokens 1073741824 exceeds the limit"),
            std::string::npos)
      << Describe(s);
  EXPECT_TRUE(server->WaitEngineIdle());
}

// proto3 strings must be UTF-8; a C++ client can still send invalid bytes (protobuf only logs),
// and so can any hand-made message. The server parses those requests itself and answers
// INVALID_ARGUMENT; other conforming clients refuse to build such a message at all.
TEST(GrpcErrorsTest, InvalidUtf8AndMalformedRequestsAreInvalidArgument) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  const std::string bad = "bad \xC3\x28 text";
  const ::grpc::Status prompt = CallGenerate(*stub, GreedyRequest(bad, 4));
  EXPECT_EQ(prompt.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(prompt);
  EXPECT_NE(prompt.error_message().find("UTF-8"), std::string::npos) << Describe(prompt);
  EXPECT_EQ(CallStream(*stub, GreedyRequest(bad, 4)).error_code(), StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest stop = GreedyRequest("fine", 4);
  stop.mutable_stopping()->add_stop(bad);
  EXPECT_EQ(CallGenerate(*stub, stop).error_code(), StatusCode::INVALID_ARGUMENT);
  v1::TokenizeRequest tr;
  tr.set_text(bad);
  v1::TokenizeResponse tokens;
  EXPECT_EQ(stub->Tokenize(Context().get(), tr, &tokens).error_code(),
            StatusCode::INVALID_ARGUMENT);

  // Bytes that are no protobuf message at all.
  ::grpc::GenericStub generic(server->Channel());
  const std::string garbage = "\x0a\xff\xff\xff\xff\xff\xff";
  ::grpc::Slice slice(garbage);
  ::grpc::ByteBuffer request(&slice, 1), response;
  std::promise<::grpc::Status> done;
  auto context = Context();
  generic.UnaryCall(context.get(), "/mamba.v1.MambaService/Generate", ::grpc::StubOptions(),
                    &request, &response, [&](::grpc::Status s) { done.set_value(s); });
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
  const ::grpc::Status malformed = future.get();
  EXPECT_EQ(malformed.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(malformed);
  EXPECT_NE(malformed.error_message().find("malformed"), std::string::npos) << Describe(malformed);

  v1::ModelInfo info;
  EXPECT_TRUE(stub->GetModelInfo(Context().get(), {}, &info).ok());
}

TEST(GrpcErrorsTest, TextWithoutTokenizerIsFailedPrecondition) {
  ServerSetup setup;
  setup.with_tokenizer = false;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  EXPECT_EQ(CallGenerate(*stub, GreedyRequest("hi", 2)).error_code(),
            StatusCode::FAILED_PRECONDITION);
  v1::GenerateRequest ids = GreedyRequest("", 2);
  ids.mutable_token_ids()->add_ids(5);
  EXPECT_TRUE(CallGenerate(*stub, ids).ok());
  v1::TokenizeRequest tr;
  tr.set_text("hi");
  v1::TokenizeResponse tokens;
  EXPECT_EQ(stub->Tokenize(Context().get(), tr, &tokens).error_code(),
            StatusCode::FAILED_PRECONDITION);
}

TEST(GrpcErrorsTest, FullQueueIsResourceExhausted) {
  ServerSetup setup;
  setup.num_slots = 1;
  setup.engine.max_queue = 1;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();

  // A holds the only slot, B waits in the queue, C is refused.
  auto ctx_a = Context(), ctx_b = Context();
  auto a = stub->GenerateStream(ctx_a.get(), Endless());
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(a->Read(&m));
  auto b = stub->GenerateStream(ctx_b.get(), Endless());
  ASSERT_TRUE(WaitFor([&] { return server->engine().Stats().waiting == 1; }, 10s));
  const ::grpc::Status c = CallGenerate(*stub, GreedyRequest("C", 2));
  EXPECT_EQ(c.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(c);
  const ::grpc::Status c_stream = CallStream(*stub, GreedyRequest("C", 2));
  EXPECT_EQ(c_stream.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(c_stream);

  ctx_a->TryCancel();
  ctx_b->TryCancel();
  EXPECT_EQ(a->Finish().error_code(), StatusCode::CANCELLED);
  EXPECT_EQ(b->Finish().error_code(), StatusCode::CANCELLED);
  EXPECT_TRUE(server->WaitEngineIdle());
  EXPECT_TRUE(CallGenerate(*stub, GreedyRequest("C", 2)).ok());
}

TEST(GrpcErrorsTest, ClientCancelMidStreamFreesTheSlots) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  v1::GenerateRequest r = Endless();
  r.set_n(2);
  auto context = Context();
  auto reader = stub->GenerateStream(context.get(), r);
  v1::GenerateStreamResponse m;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(reader->Read(&m));
  EXPECT_EQ(server->engine().Stats().slots_used, 2);
  context->TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  EXPECT_TRUE(server->WaitEngineIdle(10s)) << "slots_used " << server->engine().Stats().slots_used;

  // Unary too: a cancelled Generate ends its engine request.
  ::grpc::ClientContext unary_context;
  v1::GenerateResponse response;
  std::thread canceller([&] {
    WaitFor([&] { return server->engine().Stats().slots_used > 0; }, 10s);
    unary_context.TryCancel();
  });
  const ::grpc::Status s = stub->Generate(&unary_context, Endless(), &response);
  canceller.join();
  EXPECT_EQ(s.error_code(), StatusCode::CANCELLED) << Describe(s);
  EXPECT_TRUE(server->WaitEngineIdle(10s));
}

TEST(GrpcErrorsTest, ClientDeadlineEndsTheRequest) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  const ::grpc::Status s = CallGenerate(*stub, Endless(), 300ms);
  EXPECT_EQ(s.error_code(), StatusCode::DEADLINE_EXCEEDED) << Describe(s);
  EXPECT_TRUE(server->WaitEngineIdle(10s));

  StreamResult stream = ReadStream(*stub, Endless(), Context(300ms).get());
  EXPECT_EQ(stream.status.error_code(), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(server->WaitEngineIdle(10s));
}

TEST(GrpcErrorsTest, ServerRequestTimeoutIsDeadlineExceeded) {
  ServerSetup setup;
  setup.front_end.request_timeout_ms = 300;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  // Calls without a deadline of their own get the server's; the engine ends them (kDeadline).
  // A watchdog still bounds the wait should that ever break.
  ::grpc::ClientContext unary_context, stream_context;
  std::atomic<bool> done{false};
  std::thread watchdog([&] {
    if (!WaitFor([&] { return done.load(); }, 60s)) {
      unary_context.TryCancel();
      stream_context.TryCancel();
    }
  });
  v1::GenerateResponse response;
  const ::grpc::Status s = stub->Generate(&unary_context, Endless(), &response);
  EXPECT_EQ(s.error_code(), StatusCode::DEADLINE_EXCEEDED) << Describe(s);

  const StreamResult stream = ReadStream(*stub, Endless(), &stream_context);
  done = true;
  watchdog.join();
  EXPECT_EQ(stream.status.error_code(), StatusCode::DEADLINE_EXCEEDED) << Describe(stream.status);
  ASSERT_FALSE(stream.messages.empty());
  ASSERT_TRUE(stream.messages.back().has_end());
  EXPECT_EQ(stream.messages.back().end().finish_reason(), v1::FINISH_REASON_DEADLINE);
  EXPECT_TRUE(server->WaitEngineIdle(10s));
  // A client's own deadline wins over the server's default; short requests are unaffected.
  EXPECT_TRUE(CallGenerate(*stub, GreedyRequest("short", 3)).ok());
  v1::GenerateRequest longer = GreedyRequest("longer", 16384);
  longer.mutable_stopping()->set_max_new_tokens(600);
  const auto t0 = std::chrono::steady_clock::now();
  const ::grpc::Status l = CallGenerate(*stub, longer, 60s);
  EXPECT_TRUE(l.ok()) << Describe(l);
  std::printf(
      "600 tokens took %.0f ms (server default deadline: 300 ms)\n",
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

TEST(GrpcErrorsTest, ResponseObserverSeesEveryServiceCall) {
  struct Seen {
    std::mutex mu;
    std::vector<std::pair<std::string, int>> calls;
  };
  auto seen = std::make_shared<Seen>();
  auto checkpoint_server = TestServer::Start();  // for its engine and state
  ASSERT_NE(checkpoint_server, nullptr);
  FrontEndOptions options;
  auto server = GrpcServer::Start(&checkpoint_server->state(), options,
                                  [seen](std::string_view method, int code) {
                                    std::lock_guard<std::mutex> lock(seen->mu);
                                    seen->calls.emplace_back(std::string(method), code);
                                  });
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::MambaService::NewStub(::grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), ::grpc::InsecureChannelCredentials()));
  EXPECT_TRUE(CallGenerate(*stub, GreedyRequest("hi", 2)).ok());
  v1::GenerateRequest bad = GreedyRequest("hi", 2);
  bad.mutable_sampling()->set_top_p(2.0f);
  EXPECT_FALSE(CallStream(*stub, bad).ok());
  v1::ModelInfo info;
  EXPECT_TRUE(stub->GetModelInfo(Context().get(), {}, &info).ok());
  auto health = ::grpc::health::v1::Health::NewStub(checkpoint_server->Channel());
  ::grpc::health::v1::HealthCheckResponse h;
  EXPECT_TRUE(health->Check(Context().get(), {}, &h).ok());
  (*server)->Shutdown(1s);
  std::lock_guard<std::mutex> lock(seen->mu);
  EXPECT_EQ(seen->calls, (std::vector<std::pair<std::string, int>>{
                             {"Generate", 0}, {"GenerateStream", 3}, {"GetModelInfo", 0}}));
}

// A client too far behind is cancelled. How far a client that stops reading lags before our own
// queue grows depends on how much gRPC's transport buffers for it (with BDP probing off we saw
// anywhere from a few KB to several MB), so the limit here is one byte: the first message that
// has to wait overflows it, deterministically.
TEST(GrpcErrorsTest, ClientTooFarBehindIsCancelled) {
  ServerSetup setup;
  setup.front_end.max_stream_buffer_bytes = 1;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  const StreamResult r = ReadStream(*stub, Endless(), Context().get());
  EXPECT_EQ(r.status.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(r.status);
  EXPECT_NE(r.status.error_message().find("too slowly"), std::string::npos);
  EXPECT_LT(r.messages.size(), 16384u);
  EXPECT_TRUE(server->WaitEngineIdle(10s)) << "slots_used " << server->engine().Stats().slots_used;
  // Unary calls have no stream buffer.
  EXPECT_TRUE(CallGenerate(*stub, GreedyRequest("fine", 3)).ok());
}

TEST(GrpcErrorsTest, ApiKeyGuardsTheServiceButNotHealth) {
  ServerSetup setup;
  setup.front_end.api_key = "sekret";
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  const v1::GenerateRequest r = GreedyRequest("hi", 2);

  EXPECT_EQ(CallGenerate(*stub, r).error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallStream(*stub, r).error_code(), StatusCode::UNAUTHENTICATED);
  v1::ModelInfo info;
  EXPECT_EQ(stub->GetModelInfo(Context().get(), {}, &info).error_code(),
            StatusCode::UNAUTHENTICATED);
  for (const char* wrong : {"sekret", "Bearer wrong", "Bearer sekret2", "bearer sekret"}) {
    auto c = Context();
    c->AddMetadata("authorization", wrong);
    v1::GenerateResponse resp;
    EXPECT_EQ(stub->Generate(c.get(), r, &resp).error_code(), StatusCode::UNAUTHENTICATED) << wrong;
  }
  auto good = Context();
  good->AddMetadata("authorization", "Bearer sekret");
  v1::GenerateResponse resp;
  EXPECT_TRUE(stub->Generate(good.get(), r, &resp).ok());
  auto good_stream = Context();
  good_stream->AddMetadata("authorization", "Bearer sekret");
  EXPECT_TRUE(ReadStream(*stub, r, good_stream.get()).status.ok());

  auto health = ::grpc::health::v1::Health::NewStub(server->Channel());
  ::grpc::health::v1::HealthCheckResponse h;
  EXPECT_TRUE(health->Check(Context().get(), {}, &h).ok());
  EXPECT_EQ(h.status(), ::grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(GrpcErrorsTest, DrainingIsUnavailable) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  // The engine refuses once draining, whatever the serving state says...
  server->engine().StartDrain();
  EXPECT_EQ(CallGenerate(*stub, GreedyRequest("hi", 2)).error_code(), StatusCode::UNAVAILABLE);
  // ...and the front end refuses as soon as the state says so.
  server->state().health = Health::kDraining;
  EXPECT_EQ(CallStream(*stub, GreedyRequest("hi", 2)).error_code(), StatusCode::UNAVAILABLE);
  // The small RPCs still answer.
  v1::ModelInfo info;
  EXPECT_TRUE(stub->GetModelInfo(Context().get(), {}, &info).ok());
  EXPECT_TRUE(info.draining());
}

TEST(GrpcErrorsTest, HealthStartsNotServingUntilSet) {
  ServerSetup setup;
  setup.serving = false;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto health = ::grpc::health::v1::Health::NewStub(server->Channel());
  ::grpc::health::v1::HealthCheckResponse h;
  ASSERT_TRUE(health->Check(Context().get(), {}, &h).ok());
  EXPECT_EQ(h.status(), ::grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  ::grpc::health::v1::HealthCheckRequest live;
  live.set_service("liveness");  // loading is alive too
  ASSERT_TRUE(health->Check(Context().get(), live, &h).ok());
  EXPECT_EQ(h.status(), ::grpc::health::v1::HealthCheckResponse::SERVING);
  server->server().SetServing(true);
  ASSERT_TRUE(health->Check(Context().get(), {}, &h).ok());
  EXPECT_EQ(h.status(), ::grpc::health::v1::HealthCheckResponse::SERVING);
}

// Lifetimes under churn: many concurrent unary and streamed calls, some cancelled at random
// moments, some timing out, with more requests than slots. Nothing may crash or leak a slot
// (run under ASan to check the reactors and sinks).
TEST(GrpcErrorsTest, ConcurrentCallsWithCancelsAndDeadlines) {
  ServerSetup setup;
  setup.num_slots = 3;
  setup.engine.max_queue = 8;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  auto channel = server->Channel();
  std::atomic<int> ok{0}, failed{0};
  std::array<std::atomic<int>, 17> codes{};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      auto stub = v1::MambaService::NewStub(channel);
      std::mt19937 rng(t);
      for (int i = 0; i < 6; ++i) {
        v1::GenerateRequest r = GreedyRequest("churn " + std::to_string(i), 4 + rng() % 30);
        r.set_n(1 + rng() % 2);
        r.set_top_logprobs(rng() % 3);
        auto context = Context(std::chrono::milliseconds(100 + rng() % 1500));
        const int cancel_after = static_cast<int>(rng() % 8);
        ::grpc::Status s;
        if (rng() % 2) {
          v1::GenerateResponse resp;
          s = stub->Generate(context.get(), r, &resp);
        } else {
          auto reader = stub->GenerateStream(context.get(), r);
          v1::GenerateStreamResponse m;
          for (int read = 0; reader->Read(&m); ++read) {
            if (read == cancel_after && rng() % 3 == 0) context->TryCancel();
          }
          s = reader->Finish();
        }
        (s.ok() ? ok : failed)++;
        codes[s.error_code()]++;
      }
    });
  }
  for (auto& c : clients) c.join();
  std::printf("churn: %d ok, %d failed; by code:", ok.load(), failed.load());
  for (size_t c = 0; c < codes.size(); ++c) {
    if (codes[c]) std::printf(" %zu:%d", c, codes[c].load());
  }
  std::printf("\n");
  EXPECT_EQ(ok + failed, 48);
  EXPECT_EQ(codes[0] + codes[StatusCode::CANCELLED] + codes[StatusCode::DEADLINE_EXCEEDED] +
                codes[StatusCode::RESOURCE_EXHAUSTED],
            48)
      << "only OK, CANCELLED, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED are expected";
  EXPECT_GT(ok.load(), 0);
  EXPECT_TRUE(server->WaitEngineIdle(20s)) << "slots_used " << server->engine().Stats().slots_used;
}

TEST(GrpcErrorsTest, PortInUseIsAnError) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  FrontEndOptions taken;
  taken.port = server->server().port();
  const auto second = GrpcServer::Start(&server->state(), taken);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST(GrpcErrorsTest, ShutdownCancelsRunningStreamsAndIsIdempotent) {
  auto server = TestServer::Start();
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  auto context = Context();
  auto reader = stub->GenerateStream(context.get(), Endless());
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  const auto t0 = std::chrono::steady_clock::now();
  server->server().Shutdown(200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  server->server().Shutdown(200ms);
  while (reader->Read(&m)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
  EXPECT_TRUE(server->WaitEngineIdle(10s));
}

TEST(GrpcErrorsTest, TlsServesOverSslAndRefusesHalfConfigs) {
  engine::testing::TempDir dir;
  const std::string cert = (dir.path() / "cert.pem").string();
  const std::string key = (dir.path() / "key.pem").string();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "no openssl to make a test certificate";

  auto checkpoint_server = TestServer::Start();  // any running engine will do
  ASSERT_NE(checkpoint_server, nullptr);
  FrontEndOptions only_cert;
  only_cert.tls_cert_file = cert;
  auto refused = GrpcServer::Start(&checkpoint_server->state(), only_cert);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  FrontEndOptions missing;
  missing.tls_cert_file = cert;
  missing.tls_key_file = (dir.path() / "nope.pem").string();
  EXPECT_EQ(GrpcServer::Start(&checkpoint_server->state(), missing).status().code(),
            absl::StatusCode::kInvalidArgument);

  ServerSetup setup;
  setup.front_end.tls_cert_file = cert;
  setup.front_end.tls_key_file = key;
  auto server = TestServer::Start(setup);
  ASSERT_NE(server, nullptr);
  std::ifstream in(cert);
  const std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ::grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = pem;
  auto stub = v1::MambaService::NewStub(
      ::grpc::CreateChannel(server->address(), ::grpc::SslCredentials(ssl)));
  v1::ModelInfo info;
  const ::grpc::Status s = stub->GetModelInfo(Context(10s).get(), {}, &info);
  EXPECT_TRUE(s.ok()) << Describe(s);
  // A plaintext client cannot talk to it.
  EXPECT_FALSE(server->Stub()->GetModelInfo(Context(2s).get(), {}, &info).ok());
}

}  // namespace
}  // namespace mamba::server::testing
