#include "tests/server/grpc/grpc_test_support.h"

#include "gtest/gtest.h"

namespace mamba::server::testing {

std::unique_ptr<TestServer> TestServer::Start(const ServerSetup& setup) {
  std::unique_ptr<TestServer> t(new TestServer());
  ::mamba::testing::ServingSetup serving;
  serving.num_slots = setup.num_slots;
  serving.engine = setup.engine;
  serving.with_tokenizer = setup.with_tokenizer;
  serving.perturbed_model = setup.perturbed_model;
  serving.model_name = "tiny-random";
  serving.health = setup.serving ? Health::kServing : Health::kStarting;
  t->serving_ = ::mamba::testing::ServingHarness::Start(serving);
  if (!t->serving_) return nullptr;
  FrontEndOptions fo = setup.front_end;
  fo.host = "127.0.0.1";
  fo.port = 0;
  auto server = GrpcServer::Start(&t->serving_->state(), fo);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  t->server_ = std::move(*server);
  return t;
}

TestServer::~TestServer() {
  if (server_) server_->Shutdown(std::chrono::seconds(1));
  serving_.reset();
}

std::shared_ptr<::grpc::Channel> TestServer::Channel() const {
  return ::grpc::CreateChannel(address(), ::grpc::InsecureChannelCredentials());
}

std::unique_ptr<v1::MambaService::Stub> TestServer::Stub() const {
  return v1::MambaService::NewStub(Channel());
}

std::unique_ptr<::grpc::ClientContext> Context(std::chrono::milliseconds deadline) {
  auto c = std::make_unique<::grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + deadline);
  return c;
}

v1::GenerateRequest GreedyRequest(const std::string& text, int max_new_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_stopping()->set_max_new_tokens(max_new_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  return r;
}

std::string StreamResult::Text(int index) const {
  std::string text;
  for (const auto& m : messages) {
    if (m.index() == index && !m.has_prompt()) text += m.text();
  }
  return text;
}

std::vector<int32_t> StreamResult::TokenIds(int index) const {
  std::vector<int32_t> ids;
  for (const auto& m : messages) {
    if (m.index() == index && m.has_token()) ids.push_back(m.token().id());
  }
  return ids;
}

int StreamResult::Ends(int index) const {
  int ends = 0;
  for (const auto& m : messages) ends += m.index() == index && m.has_end();
  return ends;
}

StreamResult ReadStream(v1::MambaService::Stub& stub, const v1::GenerateRequest& request,
                        ::grpc::ClientContext* context) {
  StreamResult result;
  auto reader = stub.GenerateStream(context, request);
  v1::GenerateStreamResponse m;
  while (reader->Read(&m)) result.messages.push_back(m);
  result.status = reader->Finish();
  return result;
}

std::vector<int32_t> Ids(const v1::Completion& c) {
  return {c.token_ids().begin(), c.token_ids().end()};
}

}  // namespace mamba::server::testing
