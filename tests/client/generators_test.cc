// The three generation clients against scripted servers: OpenAI completions and TGI over a fake
// HTTP server, mamba.v1 over an in-process gRPC service.
#include "client/generators.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "client/errors.h"
#include "client/grpc_api.h"
#include "client/openai_api.h"
#include "client/tgi_api.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_util.h"

namespace mamba::client {
namespace {

using testing::Chunk;
using testing::FakeHttpServer;
using testing::FakeRequest;

std::string Sse(const std::string& data) { return Chunk("data: " + data + "\n\n"); }

// Streams the given SSE events (chunked) after a 200 head; records the last request.
struct ScriptedSse {
  std::vector<std::string> events;
  std::mutex mu;
  FakeRequest last;
  FakeHttpServer server{[this](const FakeRequest& r, int fd) {
    {
      std::lock_guard<std::mutex> lock(mu);
      last = r;
    }
    testing::SendAll(
        fd,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (const std::string& e : events) testing::SendAll(fd, Sse(e));
    testing::SendAll(fd, "0\r\n\r\n");
    return true;
  }};
  Endpoint endpoint() {
    return ParseEndpoint("http://127.0.0.1:" + std::to_string(server.port())).value();
  }
  nlohmann::json body() {
    std::lock_guard<std::mutex> lock(mu);
    return nlohmann::json::parse(last.body);
  }
};

GenerateSpec IdsSpec() {
  GenerateSpec spec;
  spec.prompt = PromptInput::Ids({11, 12, 13});
  spec.sampling.max_tokens = 3;
  spec.sampling.ignore_eos = true;
  spec.sampling.temperature = 0;
  spec.timeout_s = 10;
  return spec;
}

TEST(OpenAiGeneratorTest, StreamsTokensAndReadsUsage) {
  ScriptedSse s;
  s.events = {
      R"({"id":"c","object":"text_completion","choices":[{"index":0,"text":"Hel","logprobs":null,"finish_reason":null}],"usage":null})",
      R"({"choices":[{"index":0,"text":"","finish_reason":null}]})",
      R"({"choices":[{"index":0,"text":"lo","finish_reason":"length"}]})",
      R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}})",
      "[DONE]"};
  OpenAiGenerator gen(s.endpoint(), "sekret");
  GenerateSpec spec = IdsSpec();
  spec.model = "demo";
  std::vector<StreamEvent> events;
  auto r = gen.Stream(
      spec, [&](const StreamEvent& e) { events.push_back(e); }, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].tokens, 1);  // a token that completes no character still counts
  ASSERT_EQ(r->completions.size(), 1u);
  EXPECT_EQ(r->completions[0].text, "Hello");
  EXPECT_EQ(r->completions[0].finish_reason, "length");
  EXPECT_EQ(r->completions[0].streamed_tokens, 3);
  ASSERT_TRUE(r->usage.has_value());
  EXPECT_EQ(r->OutputTokens(), 3);
  EXPECT_EQ(r->PromptTokens(), 3);
  const nlohmann::json body = s.body();
  EXPECT_EQ(body["prompt"], nlohmann::json::array({11, 12, 13}));
  EXPECT_EQ(body["model"], "demo");
  EXPECT_EQ(body["max_tokens"], 3);
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["ignore_eos"], true);
  EXPECT_EQ(body["temperature"], 0.0);
  std::lock_guard<std::mutex> lock(s.mu);
  EXPECT_EQ(s.last.path, "/v1/completions");
  EXPECT_EQ(s.last.Header("Authorization"), "Bearer sekret");
}

TEST(OpenAiGeneratorTest, CountsStreamedTokensWithoutUsageAndHandlesN) {
  ScriptedSse s;
  s.events = {
      R"({"choices":[{"index":0,"text":"a","finish_reason":null},{"index":1,"text":"b","finish_reason":null}]})",
      R"({"choices":[{"index":1,"text":"c","finish_reason":"stop"}]})",
      R"({"choices":[{"index":0,"text":"","finish_reason":"length"}]})", "[DONE]"};
  OpenAiGenerator gen(s.endpoint(), "");
  GenerateSpec spec = IdsSpec();
  spec.prompt = PromptInput::Text("hi");
  spec.sampling.n = 2;
  spec.include_usage = false;
  auto r = gen.Stream(spec, nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->usage.has_value());
  EXPECT_EQ(r->completions[0].streamed_tokens, 1);  // the closing empty chunk carries no token
  EXPECT_EQ(r->completions[1].streamed_tokens, 2);
  EXPECT_EQ(r->completions[1].text, "bc");
  EXPECT_EQ(r->OutputTokens(), 3);
  EXPECT_FALSE(r->PromptTokens().has_value());
  const nlohmann::json body = s.body();
  EXPECT_EQ(body["prompt"], "hi");
  EXPECT_EQ(body["n"], 2);
  EXPECT_FALSE(body.contains("stream_options"));
}

TEST(OpenAiGeneratorTest, LogprobsGiveTokenCounts) {
  ScriptedSse s;
  s.events = {
      R"({"choices":[{"index":0,"text":"ab","finish_reason":"length","logprobs":{"tokens":["a","b"],"token_logprobs":[-0.5,-1.5],"top_logprobs":[{"a":-0.5,"x":-2},{"b":-1.5}]}}]})",
      "[DONE]"};
  OpenAiGenerator gen(s.endpoint(), "");
  GenerateSpec spec = IdsSpec();
  spec.sampling.top_logprobs = 2;
  std::vector<StreamEvent> events;
  auto r = gen.Stream(
      spec, [&](const StreamEvent& e) { events.push_back(e); }, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].tokens, 2);
  EXPECT_EQ(events[0].token_texts, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(events[0].logprobs, (std::vector<float>{-0.5f, -1.5f}));
  ASSERT_EQ(events[0].top_logprobs.size(), 2u);
  EXPECT_EQ(events[0].top_logprobs[0].size(), 2u);
  EXPECT_EQ(s.body()["logprobs"], 2);
}

TEST(OpenAiGeneratorTest, Errors) {
  FakeHttpServer server([](const FakeRequest& r, int fd) {
    if (r.body.find("\"max_tokens\":429") != std::string::npos) {
      testing::SendAll(
          fd,
          testing::Response(
              429,
              R"({"error":{"message":"the queue is full","type":"rate_limit_error","code":429}})",
              "application/json", "Retry-After: 1\r\n"));
      return true;
    }
    testing::SendAll(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    if (r.body.find("\"max_tokens\":500") != std::string::npos) {
      testing::SendAll(fd, Sse(R"({"error":{"message":"engine failure","code":500}})"));
    } else {
      testing::SendAll(fd, Sse(R"({"choices":[{"index":0,"text":"a","finish_reason":null}]})"));
    }
    testing::SendAll(fd, "0\r\n\r\n");
    return true;
  });
  OpenAiGenerator gen(ParseEndpoint("http://127.0.0.1:" + std::to_string(server.port())).value(),
                      "");
  GenerateSpec spec = IdsSpec();
  spec.sampling.max_tokens = 429;
  auto r = gen.Stream(spec, nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "http_429");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("the queue is full"), absl::string_view::npos);
  spec.sampling.max_tokens = 500;
  r = gen.Stream(spec, nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "stream_error");
  EXPECT_NE(r.status().message().find("engine failure"), absl::string_view::npos);
  spec.sampling.max_tokens = 7;
  r = gen.Stream(spec, nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "incomplete");
}

TEST(TgiGeneratorTest, StreamsTokensAndReadsDetails) {
  ScriptedSse s;
  s.events = {
      R"({"index":1,"token":{"id":5,"text":"He","logprob":-0.1,"special":false},"generated_text":null,"details":null})",
      R"({"index":2,"token":{"id":6,"text":"llo","logprob":-0.2,"special":false},"generated_text":null,"details":null})",
      R"({"index":3,"token":{"id":0,"text":"<|endoftext|>","logprob":-0.3,"special":true},"generated_text":"Hello","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null,"input_length":4}})"};
  TgiGenerator gen(s.endpoint(), "");
  GenerateSpec spec = IdsSpec();
  spec.prompt = PromptInput::Text("Say hello");
  spec.sampling.stop = {"\n"};
  std::vector<StreamEvent> events;
  auto r = gen.Stream(
      spec, [&](const StreamEvent& e) { events.push_back(e); }, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(events.size(), 3u);
  EXPECT_EQ(r->completions[0].text, "Hello");  // the special token adds no text
  EXPECT_EQ(r->completions[0].token_ids, (std::vector<int32_t>{5, 6, 0}));
  EXPECT_EQ(r->completions[0].finish_reason, "eos_token");
  EXPECT_EQ(r->OutputTokens(), 3);
  EXPECT_EQ(r->PromptTokens(), 4);
  EXPECT_TRUE(r->server_counted_output);
  const nlohmann::json body = s.body();
  EXPECT_EQ(body["inputs"], "Say hello");
  EXPECT_EQ(body["parameters"]["max_new_tokens"], 3);
  EXPECT_EQ(body["parameters"]["do_sample"], false);
  EXPECT_FALSE(body["parameters"].contains("temperature"));
  EXPECT_EQ(body["parameters"]["stop"], nlohmann::json::array({"\n"}));
  EXPECT_EQ(body["parameters"]["details"], true);
  std::lock_guard<std::mutex> lock(s.mu);
  EXPECT_EQ(s.last.path, "/generate_stream");
}

TEST(TgiGeneratorTest, RefusesTokenIdsAndReportsStreamErrors) {
  ScriptedSse s;
  s.events = {R"({"error":"Request failed during generation","error_type":"generation"})"};
  TgiGenerator gen(s.endpoint(), "");
  EXPECT_EQ(gen.Stream(IdsSpec(), nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  GenerateSpec spec = IdsSpec();
  spec.prompt = PromptInput::Text("x");
  auto r = gen.Stream(spec, nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "stream_error");
  EXPECT_NE(r.status().message().find("Request failed during generation"), absl::string_view::npos);
}

// An in-process mamba.v1 service: each request generates max_new_tokens tokens (ids 100, 101,
// ...) `delay` apart, then one end message with usage and timing.
class FakeMambaService final : public v1::MambaService::Service {
 public:
  std::chrono::milliseconds delay{0};
  std::string required_key;
  std::atomic<int> cancelled{0};
  std::mutex mu;
  std::string last_authorization;

  ::grpc::Status Check(::grpc::ServerContext* ctx) {
    auto it = ctx->client_metadata().find("authorization");
    std::string auth =
        it == ctx->client_metadata().end() ? "" : std::string(it->second.data(), it->second.size());
    {
      std::lock_guard<std::mutex> lock(mu);
      last_authorization = auth;
    }
    if (!required_key.empty() && auth != "Bearer " + required_key) {
      return ::grpc::Status(::grpc::StatusCode::UNAUTHENTICATED, "missing or wrong API key");
    }
    return ::grpc::Status::OK;
  }

  ::grpc::Status GenerateStream(::grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                ::grpc::ServerWriter<v1::GenerateStreamResponse>* writer) override {
    if (auto s = Check(ctx); !s.ok()) return s;
    const int n = req->stopping().has_max_new_tokens() ? req->stopping().max_new_tokens() : 16;
    if (n > 1000)
      return ::grpc::Status(::grpc::StatusCode::RESOURCE_EXHAUSTED, "the queue is full");
    const int64_t prompt = req->has_token_ids() ? req->token_ids().ids_size()
                                                : static_cast<int64_t>(req->text().size());
    for (int i = 0; i < n; ++i) {
      if (ctx->IsCancelled()) {
        ++cancelled;
        return ::grpc::Status::CANCELLED;
      }
      v1::GenerateStreamResponse m;
      m.set_text(absl::StrCat("t", i));
      m.mutable_token()->set_id(100 + i);
      if (req->logprobs()) {
        m.mutable_token()->set_logprob(-0.5f);
        m.mutable_token()->set_token_bytes("t");
      }
      writer->Write(m);
      std::this_thread::sleep_for(delay);
    }
    v1::GenerateStreamResponse end;
    end.mutable_end()->set_finish_reason(v1::FINISH_REASON_LENGTH);
    end.mutable_end()->mutable_usage()->set_prompt_tokens(prompt);
    end.mutable_end()->mutable_usage()->set_completion_tokens(n);
    end.mutable_end()->mutable_usage()->set_total_tokens(prompt + n);
    end.mutable_end()->mutable_timing()->set_queue_seconds(0.25);
    writer->Write(end);
    return ::grpc::Status::OK;
  }

  ::grpc::Status GetModelInfo(::grpc::ServerContext* ctx, const v1::GetModelInfoRequest*,
                              v1::ModelInfo* info) override {
    if (auto s = Check(ctx); !s.ok()) return s;
    info->set_model_name("fake");
    info->mutable_config()->set_vocab_size(1000);
    info->set_slots_total(4);
    return ::grpc::Status::OK;
  }

  ::grpc::Status Tokenize(::grpc::ServerContext*, const v1::TokenizeRequest* req,
                          v1::TokenizeResponse* out) override {
    for (char c : req->text()) out->add_token_ids(static_cast<unsigned char>(c));
    return ::grpc::Status::OK;
  }

  ::grpc::Status Detokenize(::grpc::ServerContext*, const v1::DetokenizeRequest* req,
                            v1::DetokenizeResponse* out) override {
    std::string text;
    for (int32_t id : req->token_ids()) text.push_back(static_cast<char>(id));
    out->set_text(text);
    return ::grpc::Status::OK;
  }
};

class GrpcGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::grpc::EnableDefaultHealthCheckService(true);
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    endpoint_ = ParseEndpoint("grpc://127.0.0.1:" + std::to_string(port_)).value();
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  FakeMambaService service_;
  std::unique_ptr<::grpc::Server> server_;
  int port_ = 0;
  Endpoint endpoint_;
};

TEST_F(GrpcGeneratorTest, StreamsTokensWithUsageAndQueueTime) {
  service_.required_key = "k1";
  ConnectOptions options;
  options.api_key = "k1";
  GeneratorFactory factory(endpoint_, Api::kGrpc, options);
  auto gen = factory.Make(0);
  ASSERT_TRUE(gen.ok());
  GenerateSpec spec = IdsSpec();
  spec.sampling.max_tokens = 5;
  spec.sampling.logprobs = true;
  std::vector<StreamEvent> events;
  auto r = (*gen)->Stream(
      spec, [&](const StreamEvent& e) { events.push_back(e); }, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[4].token_ids, (std::vector<int32_t>{104}));
  EXPECT_EQ(events[4].logprobs, (std::vector<float>{-0.5f}));
  EXPECT_EQ(r->completions[0].text, "t0t1t2t3t4");
  EXPECT_EQ(r->completions[0].finish_reason, "length");
  EXPECT_EQ(r->completions[0].token_ids.size(), 5u);
  EXPECT_EQ(r->OutputTokens(), 5);
  EXPECT_EQ(r->PromptTokens(), 3);
  EXPECT_EQ(r->completions[0].queue_s, 0.25);
  std::lock_guard<std::mutex> lock(service_.mu);
  EXPECT_EQ(service_.last_authorization, "Bearer k1");
}

TEST_F(GrpcGeneratorTest, StatusErrorsCarryTheirCode) {
  service_.required_key = "right";
  GrpcGenerator wrong(MakeGrpcChannel(endpoint_, {}).value(), "wrong");
  auto r = wrong.Stream(IdsSpec(), nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ErrorKind(r.status()), "grpc_unauthenticated");
  EXPECT_NE(r.status().message().find("gRPC UNAUTHENTICATED"), absl::string_view::npos);
  GrpcGenerator right(MakeGrpcChannel(endpoint_, {}).value(), "right");
  GenerateSpec spec = IdsSpec();
  spec.sampling.max_tokens = 5000;
  r = right.Stream(spec, nullptr, nullptr);
  EXPECT_EQ(ErrorKind(r.status()), "grpc_resource_exhausted");
  Endpoint nowhere =
      ParseEndpoint("grpc://127.0.0.1:" + std::to_string(testing::UnusedPort())).value();
  GrpcGenerator refused(MakeGrpcChannel(nowhere, {}).value(), "");
  r = refused.Stream(IdsSpec(), nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(GrpcGeneratorTest, CancelStopsTheServerSide) {
  service_.delay = std::chrono::milliseconds(10);
  GrpcGenerator gen(MakeGrpcChannel(endpoint_, {}).value(), "");
  GenerateSpec spec = IdsSpec();
  spec.sampling.max_tokens = 500;
  CancelToken token;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    token.Cancel();
  });
  int tokens = 0;
  auto r = gen.Stream(
      spec, [&](const StreamEvent& e) { tokens += e.tokens; }, &token);
  canceller.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind(r.status()), "cancelled");
  EXPECT_GT(tokens, 0);
  EXPECT_LT(tokens, 500);
  for (int i = 0; i < 200 && service_.cancelled == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(service_.cancelled.load(), 1);
}

TEST_F(GrpcGeneratorTest, UnaryCallsAndHealth) {
  GrpcClient client(MakeGrpcChannel(endpoint_, {}).value(), "");
  EXPECT_EQ(client.GetModelInfo(5)->model_name(), "fake");
  auto ids = client.Tokenize("AB", false, 5);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->token_ids_size(), 2);
  EXPECT_EQ(client.Detokenize({72, 105}, false, 5)->text(), "Hi");
  EXPECT_EQ(client.CheckHealth("", 5).value(), "SERVING");
  server_->GetHealthCheckService()->SetServingStatus(false);
  EXPECT_EQ(client.CheckHealth("", 5).value(), "NOT_SERVING");
  auto unknown = client.CheckHealth("no.such.Service", 5);
  EXPECT_FALSE(unknown.ok());  // NOT_FOUND from the default health service
}

TEST(GeneratorFactoryTest, ApisAndTargets) {
  EXPECT_EQ(ParseApi("tgi").value(), Api::kTgi);
  EXPECT_FALSE(ParseApi("vllm").ok());
  Endpoint grpc = ParseEndpoint("grpc://h:1").value(), http = ParseEndpoint("http://h:1").value();
  EXPECT_EQ(DefaultApi(grpc), Api::kGrpc);
  EXPECT_EQ(DefaultApi(http), Api::kOpenAi);
  EXPECT_TRUE(CheckApi(Api::kTgi, http).ok());
  EXPECT_FALSE(CheckApi(Api::kGrpc, http).ok());
  EXPECT_FALSE(CheckApi(Api::kOpenAi, grpc).ok());
}

}  // namespace
}  // namespace mamba::client
