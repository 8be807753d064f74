// LoRA adapters over gRPC (issue 15): LoadLoraAdapter / UnloadLoraAdapter / ListLoraAdapters
// with the registry's status codes, behind the API key, and GenerateRequest.adapter selecting an
// adapter (its output, not the base model's, the same as on a server that loaded it first).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/server/grpc/grpc_test_support.h"
#include "tests/server/lora_fixtures.h"
#include "tests/support/temp_dir.h"

namespace mamba::server::testing {
namespace {

using ::mamba::testing::TempDir;
using ::mamba::testing::WriteDoraAdapter;
using ::mamba::testing::WriteTinyAdapter;

// The tiny model these servers run (grpc_test_support.h: the perturbed one by default).
constexpr bool kPerturbed = true;

::grpc::Status Load(v1::MambaService::Stub& stub, const std::string& name, const std::string& path,
                    v1::LoraAdapterInfo* info = nullptr) {
  v1::LoadLoraAdapterRequest req;
  req.set_name(name);
  req.set_path(path);
  v1::LoraAdapterInfo out;
  return stub.LoadLoraAdapter(Context().get(), req, info ? info : &out);
}

::grpc::Status Unload(v1::MambaService::Stub& stub, const std::string& name) {
  v1::UnloadLoraAdapterRequest req;
  req.set_name(name);
  v1::UnloadLoraAdapterResponse out;
  return stub.UnloadLoraAdapter(Context().get(), req, &out);
}

// A completion's text and each token's id and log-prob (a greedy text alone may not tell two
// models apart).
std::string Signature(const std::string& text, const std::vector<v1::Token>& tokens) {
  std::string out = text;
  for (const v1::Token& t : tokens) {
    absl::StrAppend(&out, " ", t.id(), ":", t.logprob());
  }
  return out;
}

v1::GenerateRequest Request(const std::string& adapter) {
  v1::GenerateRequest req = GreedyRequest("In the beginning", 8);
  req.set_adapter(adapter);
  req.set_logprobs(true);
  return req;
}

// The greedy completion of a short prompt under `adapter` ("" = the base model).
std::string Generate(v1::MambaService::Stub& stub, const std::string& adapter) {
  v1::GenerateResponse resp;
  const ::grpc::Status s = stub.Generate(Context().get(), Request(adapter), &resp);
  EXPECT_TRUE(s.ok()) << adapter << ": " << s.error_message();
  if (!s.ok()) return "";
  const auto& c = resp.completions(0);
  return Signature(c.text(), std::vector<v1::Token>(c.logprobs().begin(), c.logprobs().end()));
}

ServerSetup WithMaxLoras(int n) {
  ServerSetup s;
  s.engine.lora.max_loras = n;
  return s;
}

TEST(GrpcLoraTest, LoadUnloadListAndTheirCodes) {
  TempDir dir;
  auto server = TestServer::Start(WithMaxLoras(2));
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1, kPerturbed).string();
  const std::string b = WriteTinyAdapter(dir.path(), "b", 2, kPerturbed).string();

  v1::LoraAdapterInfo info;
  ::grpc::Status s = Load(*stub, "a", a, &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.name(), "a");
  EXPECT_EQ(info.path(), a);
  EXPECT_EQ(info.max_rank(), 4);
  EXPECT_GT(info.bytes(), 0);
  EXPECT_GT(info.loaded_unix_ms(), 0);
  std::vector<std::string> targets(info.targets().begin(), info.targets().end());
  EXPECT_EQ(targets, (std::vector<std::string>{"in_proj", "x_proj", "out_proj", "embeddings"}));

  EXPECT_EQ(Load(*stub, "a", b).error_code(), ::grpc::StatusCode::ALREADY_EXISTS);
  s = Load(*stub, "x", (dir.path() / "missing").string());
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = Load(*stub, "dora", WriteDoraAdapter(dir.path(), "dora", kPerturbed).string());
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("use_dora"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("dora"), std::string::npos) << s.error_message();
  s = Load(*stub, "tiny-random", b);  // the served model's name
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  ASSERT_TRUE(Load(*stub, "b", b).ok());
  s = Load(*stub, "c", WriteTinyAdapter(dir.path(), "c", 3, kPerturbed).string());
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();

  v1::ListLoraAdaptersResponse list;
  ASSERT_TRUE(stub->ListLoraAdapters(Context().get(), {}, &list).ok());
  ASSERT_EQ(list.adapters_size(), 2);
  EXPECT_EQ(list.adapters(0).name(), "a");
  EXPECT_EQ(list.adapters(1).name(), "b");
  EXPECT_EQ(list.adapters(1).path(), b);
  EXPECT_EQ(list.max_loras(), 2);
  EXPECT_EQ(list.resident(), 2);

  EXPECT_TRUE(Unload(*stub, "a").ok());
  EXPECT_EQ(Unload(*stub, "a").error_code(), ::grpc::StatusCode::NOT_FOUND);
  list.Clear();
  ASSERT_TRUE(stub->ListLoraAdapters(Context().get(), {}, &list).ok());
  ASSERT_EQ(list.adapters_size(), 1);
  EXPECT_EQ(list.adapters(0).name(), "b");
}

TEST(GrpcLoraTest, ApiKeyIsRequired) {
  TempDir dir;
  ServerSetup setup;
  setup.front_end.api_key = "sekret";
  auto server = TestServer::Start(setup);
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1, kPerturbed).string();
  EXPECT_EQ(Load(*stub, "a", a).error_code(), ::grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Unload(*stub, "a").error_code(), ::grpc::StatusCode::UNAUTHENTICATED);
  v1::ListLoraAdaptersResponse list;
  EXPECT_EQ(stub->ListLoraAdapters(Context().get(), {}, &list).error_code(),
            ::grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(server->engine().adapters()->List().empty());
  v1::LoadLoraAdapterRequest req;
  req.set_name("a");
  req.set_path(a);
  v1::LoraAdapterInfo info;
  auto ctx = Context();
  ctx->AddMetadata("authorization", "Bearer sekret");
  const ::grpc::Status s = stub->LoadLoraAdapter(ctx.get(), req, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST(GrpcLoraTest, AdapterFieldSelectsTheAdapter) {
  TempDir dir;
  const std::string a = WriteTinyAdapter(dir.path(), "a", 1, kPerturbed).string();
  std::string fresh_a;
  {
    auto fresh = TestServer::Start();
    ASSERT_TRUE(fresh);
    auto stub = fresh->Stub();
    ASSERT_TRUE(Load(*stub, "a", a).ok());
    fresh_a = Generate(*stub, "a");
  }
  auto server = TestServer::Start();
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  const std::string base = Generate(*stub, "");
  ASSERT_TRUE(Load(*stub, "a", a).ok());
  const std::string with_a = Generate(*stub, "a");
  EXPECT_NE(with_a, base);
  EXPECT_EQ(with_a, fresh_a);
  EXPECT_EQ(Generate(*stub, ""), base);

  v1::GenerateRequest req = Request("a");
  auto ctx = Context();
  StreamResult streamed = ReadStream(*stub, req, ctx.get());
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  std::vector<v1::Token> tokens;
  for (const auto& m : streamed.messages) {
    if (m.has_token()) tokens.push_back(m.token());
  }
  EXPECT_EQ(Signature(streamed.Text(0), tokens), fresh_a);

  req.set_adapter("nope");
  v1::GenerateResponse resp;
  ::grpc::Status s = stub->Generate(Context().get(), req, &resp);
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("nope"), std::string::npos) << s.error_message();
  auto ctx2 = Context();
  StreamResult refused = ReadStream(*stub, req, ctx2.get());
  EXPECT_EQ(refused.status.error_code(), ::grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace mamba::server::testing
