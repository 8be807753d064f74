#include "tests/server/http/http_test_server.h"

#include "gtest/gtest.h"

namespace mamba::server::http_testing {

std::unique_ptr<HttpTestServer> HttpTestServer::Start(const ServerSetup& setup) {
  std::unique_ptr<HttpTestServer> t(new HttpTestServer());
  t->metrics_ = std::make_unique<Metrics>();
  ::mamba::testing::ServingSetup serving;
  serving.num_slots = setup.num_slots;
  serving.engine = setup.engine;
  serving.with_tokenizer = setup.with_tokenizer;
  serving.perturbed_model = setup.perturbed_model;
  serving.model_name = kModelName;
  serving.observer = t->metrics_.get();
  t->serving_ = ::mamba::testing::ServingHarness::Start(serving);
  if (!t->serving_) return nullptr;
  t->serving_->state().served_model_names = setup.served_model_names;
  t->serving_->state().strict_model_name = setup.strict_model_name;
  t->serving_->state().generation_defaults = setup.generation_defaults;
  FrontEndOptions fe = setup.front_end;
  fe.host = "127.0.0.1";
  fe.port = 0;
  auto server = HttpServer::Start(&t->serving_->state(), t->metrics_.get(), fe, 2);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  t->server_ = std::move(*server);
  return t;
}

HttpTestServer::~HttpTestServer() {
  if (server_) server_->Shutdown();
  server_.reset();
  serving_.reset();
  metrics_.reset();
}

}  // namespace mamba::server::http_testing
