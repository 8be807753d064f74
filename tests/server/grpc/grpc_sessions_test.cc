// Sessions over gRPC: GenerateRequest.session_id turns equal cold runs of the whole conversation
// (unary and streamed, with Usage.session_tokens), the session RPCs (get, list, delete, fork,
// export, import) and their codes: NOT_FOUND, ALREADY_EXISTS, ABORTED for a session in use,
// INVALID_ARGUMENT for bad ids and bad files, FAILED_PRECONDITION when sessions are off.
#include <set>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/grpc/grpc_test_support.h"

namespace mamba::server::testing {
namespace {

using ::grpc::StatusCode;
using ::mamba::testing::RunAlone;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr int kTurnTokens = 6;

ServerSetup SessionSetup() {
  ServerSetup s;
  s.engine.sessions.max_bytes = 64 << 20;
  // Session files up to ~8 MiB: an ImportSession message beyond gRPC's default 4 MiB must arrive.
  s.engine.sessions.max_tokens = 2 << 20;
  s.engine.max_new_tokens_limit = 1 << 20;  // a turn that runs until its client goes
  return s;
}

std::string Describe(const ::grpc::Status& s) {
  return std::to_string(s.error_code()) + ": " + s.error_message();
}

class GrpcSessionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = TestServer::Start(SessionSetup()).release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = server_->Stub();
  }
  void TearDown() override { EXPECT_TRUE(server_->WaitEngineIdle()); }

  std::vector<engine::TokenId> Encode(const std::string& text) {
    return server_->state().tokenizer->Encode(text).value();
  }

  // One unary turn on `session`; checks it against the cold run of the whole history, which
  // grows by the turn's prompt and completion.
  void CheckedTurn(const std::string& session, const std::string& text,
                   std::vector<engine::TokenId>* history) {
    v1::GenerateRequest r = GreedyRequest(text, kTurnTokens);
    r.set_session_id(session);
    v1::GenerateResponse response;
    ::grpc::Status s = stub_->Generate(Context().get(), r, &response);
    ASSERT_TRUE(s.ok()) << Describe(s);
    const std::vector<engine::TokenId> added = Encode(text);
    const auto held = static_cast<int64_t>(history->size());
    history->insert(history->end(), added.begin(), added.end());
    // The usage counts the prompt the model read: what the session held + the new tokens.
    EXPECT_EQ(response.usage().prompt_tokens(), static_cast<int64_t>(history->size()));
    EXPECT_EQ(response.usage().cached_tokens(), held > 0 ? held - 1 : 0);
    const ::mamba::testing::AloneResult want = RunAlone(server_->engine(), *history, kTurnTokens);
    history->insert(history->end(), want.ids.begin(), want.ids.end());
    ASSERT_EQ(response.completions_size(), 1);
    EXPECT_EQ(Ids(response.completions(0)), want.ids) << session << ": " << text;
    EXPECT_EQ(response.completions(0).text(), want.text);
    EXPECT_EQ(response.usage().session_tokens(), static_cast<int64_t>(history->size()));
    EXPECT_EQ(response.completions(0).end().usage().session_tokens(),
              static_cast<int64_t>(history->size()));
  }

  ::grpc::Status Get(const std::string& id, v1::SessionInfo* info) {
    v1::SessionRef ref;
    ref.set_id(id);
    return stub_->GetSession(Context().get(), ref, info);
  }

  ::grpc::Status Export(const std::string& id, std::string* data) {
    v1::SessionRef ref;
    ref.set_id(id);
    v1::SessionState state;
    ::grpc::Status s = stub_->ExportSession(Context().get(), ref, &state);
    *data = state.data();
    return s;
  }

  ::grpc::Status Import(const std::string& id, const std::string& data,
                        v1::ImportSessionResponse* out) {
    v1::ImportSessionRequest r;
    r.set_id(id);
    r.set_data(data);
    return stub_->ImportSession(Context().get(), r, out);
  }

  ::grpc::Status Fork(const std::string& id, const std::string& new_id, v1::SessionInfo* out) {
    v1::ForkSessionRequest r;
    r.set_id(id);
    r.set_new_id(new_id);
    return stub_->ForkSession(Context().get(), r, out);
  }

  static TestServer* server_;
  std::unique_ptr<v1::MambaService::Stub> stub_;
};
TestServer* GrpcSessionsTest::server_ = nullptr;

TEST_F(GrpcSessionsTest, TurnsEqualColdRunsOfTheWholeConversation) {
  std::vector<engine::TokenId> history;
  CheckedTurn("g-conv", "The quick brown fox", &history);
  CheckedTurn("g-conv", " jumps over", &history);
  // A streamed turn: the same tokens, and the end message's usage says what the session holds.
  v1::GenerateRequest r = GreedyRequest(" the lazy dog", kTurnTokens);
  r.set_session_id("g-conv");
  const StreamResult stream = ReadStream(*stub_, r, Context().get());
  ASSERT_TRUE(stream.status.ok()) << Describe(stream.status);
  const std::vector<engine::TokenId> added = Encode(" the lazy dog");
  history.insert(history.end(), added.begin(), added.end());
  const ::mamba::testing::AloneResult want = RunAlone(server_->engine(), history, kTurnTokens);
  history.insert(history.end(), want.ids.begin(), want.ids.end());
  EXPECT_EQ(stream.TokenIds(0), want.ids);
  ASSERT_TRUE(stream.messages.back().has_end());
  EXPECT_EQ(stream.messages.back().end().usage().session_tokens(),
            static_cast<int64_t>(history.size()));
  // A turn with no prompt at all continues from the session alone.
  v1::GenerateRequest empty = GreedyRequest("", kTurnTokens);
  empty.clear_prompt();
  empty.set_session_id("g-conv");
  v1::GenerateResponse response;
  ASSERT_TRUE(stub_->Generate(Context().get(), empty, &response).ok());
  const ::mamba::testing::AloneResult next = RunAlone(server_->engine(), history, kTurnTokens);
  EXPECT_EQ(Ids(response.completions(0)), next.ids);
  history.insert(history.end(), next.ids.begin(), next.ids.end());

  v1::SessionInfo info;
  ASSERT_TRUE(Get("g-conv", &info).ok());
  EXPECT_EQ(info.id(), "g-conv");
  EXPECT_EQ(info.tokens(), static_cast<int64_t>(history.size()));
  EXPECT_FALSE(info.in_use());
  EXPECT_GT(info.bytes(), 0);
  EXPECT_GE(info.last_used_unix_ms(), info.created_unix_ms());
  EXPECT_EQ(info.expires_unix_ms() - info.last_used_unix_ms(), 3600 * 1000);
  // Without a session the usage says nothing about one.
  ASSERT_TRUE(stub_->Generate(Context().get(), GreedyRequest("x", 2), &response).ok());
  EXPECT_EQ(response.usage().session_tokens(), 0);
}

TEST_F(GrpcSessionsTest, ForkThenDivergeAndList) {
  std::vector<engine::TokenId> root;
  CheckedTurn("g-root", "Once", &root);
  v1::SessionInfo copy;
  ::grpc::Status s = Fork("g-root", "g-branch", &copy);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(copy.id(), "g-branch");
  EXPECT_EQ(copy.tokens(), static_cast<int64_t>(root.size()));
  EXPECT_EQ(Fork("g-root", "g-branch", &copy).error_code(), StatusCode::ALREADY_EXISTS);
  v1::SessionInfo named;
  ASSERT_TRUE(Fork("g-root", "", &named).ok());
  EXPECT_FALSE(named.id().empty());

  std::vector<engine::TokenId> branch = root;
  CheckedTurn("g-root", " upon", &root);
  CheckedTurn("g-branch", " more", &branch);

  v1::ListSessionsResponse list;
  ASSERT_TRUE(stub_->ListSessions(Context().get(), v1::ListSessionsRequest(), &list).ok());
  std::set<std::string> ids;
  for (const v1::SessionInfo& i : list.sessions()) ids.insert(i.id());
  EXPECT_TRUE(ids.count("g-root") && ids.count("g-branch") && ids.count(named.id()));

  v1::SessionRef ref;
  ref.set_id(named.id());
  v1::DeleteSessionResponse deleted;
  EXPECT_TRUE(stub_->DeleteSession(Context().get(), ref, &deleted).ok());
  EXPECT_EQ(Get(named.id(), &copy).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(GrpcSessionsTest, ExportImportRoundTripAndBadFiles) {
  std::vector<engine::TokenId> history;
  CheckedTurn("g-orig", "A state to carry", &history);
  std::string file;
  ASSERT_TRUE(Export("g-orig", &file).ok());
  v1::ImportSessionResponse imported;
  ::grpc::Status s = Import("g-copy", file, &imported);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_TRUE(imported.created());
  EXPECT_EQ(imported.info().tokens(), static_cast<int64_t>(history.size()));
  ASSERT_TRUE(Import("g-copy", file, &imported).ok());
  EXPECT_FALSE(imported.created());
  std::vector<engine::TokenId> copy = history;
  CheckedTurn("g-orig", " on", &history);
  CheckedTurn("g-copy", " on", &copy);

  std::string corrupt = file;
  corrupt[corrupt.size() - 5] ^= 0x21;
  for (const std::string& bad :
       {file.substr(0, file.size() / 2), corrupt, std::string("junk"), std::string()}) {
    s = Import("g-bad", bad, &imported);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
  }
  // Larger than gRPC's default 4 MiB: the server's raised limit lets it arrive, and the engine
  // refuses it for what it is.
  s = Import("g-bad", std::string(5 << 20, 'x'), &imported);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
}

TEST_F(GrpcSessionsTest, BusySessionIsAborted) {
  std::vector<engine::TokenId> history;
  CheckedTurn("g-busy", "Before", &history);
  // A million tokens: the turn holds the session until it is cancelled.
  v1::GenerateRequest hold = GreedyRequest("Hold on", 1 << 20);
  hold.set_session_id("g-busy");
  auto context = Context();
  auto reader = stub_->GenerateStream(context.get(), hold);
  v1::GenerateStreamResponse first;
  ASSERT_TRUE(reader->Read(&first));  // Submit took the session before any token

  v1::GenerateResponse response;
  v1::GenerateRequest second = GreedyRequest("x", 2);
  second.set_session_id("g-busy");
  ::grpc::Status s = stub_->Generate(Context().get(), second, &response);
  EXPECT_EQ(s.error_code(), StatusCode::ABORTED) << Describe(s);
  s = ReadStream(*stub_, second, Context().get()).status;
  EXPECT_EQ(s.error_code(), StatusCode::ABORTED) << Describe(s);
  v1::SessionInfo info;
  ASSERT_TRUE(Get("g-busy", &info).ok());
  EXPECT_TRUE(info.in_use());
  context->TryCancel();
  while (reader->Read(&first)) {
  }
  reader->Finish();
  EXPECT_TRUE(server_->WaitEngineIdle());
  // The cancelled turn left the session as it was before it.
  EXPECT_TRUE(WaitFor([&] { return Get("g-busy", &info).ok() && !info.in_use(); }, 10s));
  EXPECT_EQ(info.tokens(), static_cast<int64_t>(history.size()));
  CheckedTurn("g-busy", " after", &history);
}

TEST_F(GrpcSessionsTest, UnknownAndBadIds) {
  v1::SessionInfo info;
  std::string data;
  v1::ImportSessionResponse imported;
  v1::DeleteSessionResponse deleted;
  v1::SessionRef ref;
  ref.set_id("g-nope");
  EXPECT_EQ(Get("g-nope", &info).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(stub_->DeleteSession(Context().get(), ref, &deleted).error_code(),
            StatusCode::NOT_FOUND);
  EXPECT_EQ(Fork("g-nope", "", &info).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Export("g-nope", &data).error_code(), StatusCode::NOT_FOUND);

  for (const std::string& bad : {std::string(129, 'a'), std::string("a/b"), std::string(".."),
                                 std::string("a b"), std::string()}) {
    SCOPED_TRACE("'" + bad + "'");
    ref.set_id(bad);
    EXPECT_EQ(Get(bad, &info).error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(stub_->DeleteSession(Context().get(), ref, &deleted).error_code(),
              StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(Fork(bad, "", &info).error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(Export(bad, &data).error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(Import(bad, "x", &imported).error_code(), StatusCode::INVALID_ARGUMENT);
    if (!bad.empty()) {  // "" in a GenerateRequest means "no session"
      v1::GenerateRequest r = GreedyRequest("x", 2);
      r.set_session_id(bad);
      v1::GenerateResponse response;
      EXPECT_EQ(stub_->Generate(Context().get(), r, &response).error_code(),
                StatusCode::INVALID_ARGUMENT);
    }
  }
  std::vector<engine::TokenId> history;
  CheckedTurn("g-src", "Hi", &history);
  EXPECT_EQ(Fork("g-src", "a/b", &info).error_code(), StatusCode::INVALID_ARGUMENT);
  // n > 1 with a session.
  v1::GenerateRequest two = GreedyRequest("x", 2);
  two.set_n(2);
  two.set_session_id("g-src");
  v1::GenerateResponse response;
  EXPECT_EQ(stub_->Generate(Context().get(), two, &response).error_code(),
            StatusCode::INVALID_ARGUMENT);
}

TEST(GrpcSessionsOther, OtherModelAndSessionsOff) {
  ServerSetup other = SessionSetup();
  other.perturbed_model = false;
  auto a = TestServer::Start(SessionSetup());
  auto b = TestServer::Start(other);
  ASSERT_TRUE(a && b);
  auto sa = a->Stub(), sb = b->Stub();
  v1::GenerateRequest r = GreedyRequest("Hi", 3);
  r.set_session_id("m");
  v1::GenerateResponse response;
  ASSERT_TRUE(sa->Generate(Context().get(), r, &response).ok());
  v1::SessionRef ref;
  ref.set_id("m");
  v1::SessionState state;
  ASSERT_TRUE(sa->ExportSession(Context().get(), ref, &state).ok());
  v1::ImportSessionRequest import;
  import.set_id("m");
  import.set_data(state.data());
  v1::ImportSessionResponse imported;
  ::grpc::Status s = sb->ImportSession(Context().get(), import, &imported);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr(a->engine().backend().info().model_fingerprint));
  EXPECT_THAT(s.error_message(), HasSubstr(b->engine().backend().info().model_fingerprint));

  auto off = TestServer::Start();
  ASSERT_TRUE(off);
  auto so = off->Stub();
  EXPECT_EQ(so->Generate(Context().get(), r, &response).error_code(),
            StatusCode::FAILED_PRECONDITION);
  v1::SessionInfo info;
  EXPECT_EQ(so->GetSession(Context().get(), ref, &info).error_code(),
            StatusCode::FAILED_PRECONDITION);
  v1::ListSessionsResponse list;
  EXPECT_EQ(so->ListSessions(Context().get(), v1::ListSessionsRequest(), &list).error_code(),
            StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(so->ImportSession(Context().get(), import, &imported).error_code(),
            StatusCode::FAILED_PRECONDITION);
}

TEST(GrpcSessionsAuth, SessionRpcsNeedTheKey) {
  ServerSetup setup = SessionSetup();
  setup.front_end.api_key = "k";
  auto server = TestServer::Start(setup);
  ASSERT_TRUE(server);
  auto stub = server->Stub();
  v1::ListSessionsResponse list;
  EXPECT_EQ(stub->ListSessions(Context().get(), v1::ListSessionsRequest(), &list).error_code(),
            StatusCode::UNAUTHENTICATED);
  v1::SessionRef ref;
  ref.set_id("x");
  v1::SessionInfo info;
  EXPECT_EQ(stub->GetSession(Context().get(), ref, &info).error_code(),
            StatusCode::UNAUTHENTICATED);
  auto keyed = Context();
  keyed->AddMetadata("authorization", "Bearer k");
  EXPECT_TRUE(stub->ListSessions(keyed.get(), v1::ListSessionsRequest(), &list).ok());
}

}  // namespace
}  // namespace mamba::server::testing
