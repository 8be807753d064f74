// What existing clients send that the plain API tests do not: any `model` name (Hugging Face's
// client posts its endpoint URL), served aliases, token ids the tokenizer cannot spell, TGI's
// GET /info, POST / and best_of, OpenAI's logit_bias, best_of and user.
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/http/http_test_server.h"
#include "tests/support/temp_dir.h"

namespace mamba::server::http_testing {
namespace {

using ::nlohmann::json;

json Greedy(json prompt, int max_tokens) {
  return {{"prompt", std::move(prompt)},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true}};
}

// POSTs and expects `status`; returns the parsed body.
json Post(int port, const std::string& path, const json& body, int status = 200) {
  std::optional<Response> r = PostJson(port, path, body);
  EXPECT_TRUE(r.has_value());
  if (!r) return json();
  EXPECT_EQ(r->status, status) << path << " " << body.dump() << " -> " << r->body;
  return r->Json();
}

TEST(HttpCompatTest, AnyModelNameServesTheOneModel) {
  ServerSetup setup;
  setup.served_model_names = {kModelName, "alias-a", "alias-b"};
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  const json want = Post(port, "/v1/completions", Greedy("Hello", 4));
  EXPECT_EQ(want["model"], kModelName);
  // An alias is reported as given; any other name (here the endpoint URL, as
  // @huggingface/inference sends it) is served by the one model and reported by its name.
  for (const std::string name : {"alias-b", "http://127.0.0.1:8000", "gpt-4"}) {
    json body = Greedy("Hello", 4);
    body["model"] = name;
    json r = Post(port, "/v1/completions", body);
    EXPECT_EQ(r["choices"][0]["text"], want["choices"][0]["text"]) << name;
    EXPECT_EQ(r["model"], name == "alias-b" ? "alias-b" : kModelName);
  }
  // /v1/models lists every served name; /v1/models/{id} knows only those.
  json models = json::parse(Call(port, "GET", "/v1/models")->body);
  ASSERT_EQ(models["data"].size(), 3u);
  EXPECT_EQ(models["data"][0]["id"], kModelName);
  EXPECT_EQ(models["data"][1]["id"], "alias-a");
  EXPECT_EQ(models["data"][2]["id"], "alias-b");
  EXPECT_EQ(Call(port, "GET", "/v1/models/alias-a")->status, 200);
  EXPECT_EQ(Call(port, "GET", "/v1/models/gpt-4")->status, 404);
}

TEST(HttpCompatTest, StrictModelNameRefusesOthers) {
  ServerSetup setup;
  setup.served_model_names = {kModelName, "alias-a"};
  setup.strict_model_name = true;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  json body = Greedy("Hello", 2);
  body["model"] = "alias-a";
  EXPECT_EQ(Post(s->port(), "/v1/completions", body)["model"], "alias-a");
  body["model"] = "gpt-4";
  json e = Post(s->port(), "/v1/completions", body, 404);
  EXPECT_EQ(e["error"]["code"], "model_not_found");
  EXPECT_EQ(e["error"]["param"], "model");
  EXPECT_THAT(e["error"]["message"].get<std::string>(), ::testing::HasSubstr("'alias-a'"));
  body.erase("model");  // no model: the served one
  EXPECT_EQ(Post(s->port(), "/v1/completions", body)["model"], kModelName);
}

// The tiny model has 50280 embedding rows; the GPT-NeoX tokenizer spells 50277 ids. Ids
// 50277..50279 are valid input everywhere and decode to "".
TEST(HttpCompatTest, TokenIdsBeyondTheTokenizerAreValidInput) {
  auto s = HttpTestServer::Start();
  ASSERT_TRUE(s);
  const int port = s->port();
  const int64_t spelled = s->tokenizer().vocab_size();
  ASSERT_EQ(spelled, 50277);
  json models = json::parse(Call(port, "GET", "/v1/models")->body);
  EXPECT_EQ(models["data"][0]["vocab_size"], 50280);
  EXPECT_EQ(models["data"][0]["tokenizer_vocab_size"], spelled);
  EXPECT_EQ(models["data"][0]["model_type"], "mamba");
  EXPECT_EQ(models["data"][0]["max_session_tokens"], 65536);  // the prompt limit when unset

  // A multi-turn client resends what it was given, ids the tokenizer lacks included.
  std::vector<int> ids = s->tokenizer().Encode("In the beginning").value();
  ids.insert(ids.end(), {50277, 50278, 50279});
  json r = Post(port, "/v1/completions", Greedy(ids, 3));
  EXPECT_EQ(r["usage"]["prompt_tokens"], ids.size());
  json echo = Greedy(ids, 2);
  echo["echo"] = true;
  echo["logprobs"] = 1;
  json e = Post(port, "/v1/completions", echo);
  const json& lp = e["choices"][0]["logprobs"];
  ASSERT_GE(lp["tokens"].size(), ids.size());
  EXPECT_EQ(lp["tokens"][ids.size() - 1], "");
  EXPECT_THAT(e["choices"][0]["text"].get<std::string>(),
              ::testing::StartsWith("In the beginning"));
  echo["stream"] = true;
  std::optional<Response> st = PostJson(port, "/v1/completions", echo);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->status, 200) << st->body;

  EXPECT_EQ(Post(port, "/detokenize", {{"tokens", {50277, 50279}}})["prompt"], "");
  std::vector<int> mixed = s->tokenizer().Encode("Amen").value();
  mixed.push_back(50278);
  EXPECT_EQ(Post(port, "/detokenize", {{"tokens", mixed}})["prompt"], "Amen");
  json bad = Post(port, "/detokenize", {{"tokens", {1, 50280}}}, 400);
  EXPECT_EQ(bad["error"]["param"], "tokens");
  Post(port, "/v1/completions", Greedy(json::array({50280}), 2), 400);
  Post(port, "/v1/completions", Greedy(json::array({-1}), 2), 400);
}

TEST(HttpCompatTest, TgiInfo) {
  ServerSetup setup;
  setup.num_slots = 4;
  setup.engine.max_queue = 10;
  setup.engine.max_prompt_tokens = 1000;
  setup.engine.max_new_tokens_limit = 200;
  setup.engine.max_step_tokens = 256;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  std::optional<Response> r = Call(s->port(), "GET", "/info");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json info = r->Json();
  EXPECT_EQ(info["model_id"], kModelName);
  EXPECT_EQ(info["model_dtype"], "torch.float32");
  EXPECT_EQ(info["model_device_type"], "cpu");
  EXPECT_EQ(info["max_input_tokens"], 1000);
  EXPECT_EQ(info["max_input_length"], 1000);
  EXPECT_EQ(info["max_total_tokens"], 1200);
  EXPECT_EQ(info["max_batch_total_tokens"], 256);
  EXPECT_EQ(info["max_concurrent_requests"], 14);
  EXPECT_EQ(info["max_stop_sequences"], 16);
  EXPECT_EQ(info["max_best_of"], 4);  // best_of sequences run at once, one slot each
  EXPECT_TRUE(info["version"].is_string());
  EXPECT_FALSE(info["version"].get<std::string>().empty());
  EXPECT_EQ(Call(s->port(), "POST", "/info")->status, 405);
}

// TGI's compat route: POST / answers as /generate, or with "stream": true as /generate_stream.
TEST(HttpCompatTest, TgiRootDispatchesOnStream) {
  auto s = HttpTestServer::Start();
  ASSERT_TRUE(s);
  const int port = s->port();
  json req = {{"inputs", "The root"}, {"parameters", {{"max_new_tokens", 5}, {"details", true}}}};
  json want = Post(port, "/generate", req);
  json got = Post(port, "/", req);
  EXPECT_EQ(got["generated_text"], want["generated_text"]);
  EXPECT_EQ(got["details"]["tokens"], want["details"]["tokens"]);
  req["stream"] = false;
  EXPECT_EQ(Post(port, "/", req)["generated_text"], want["generated_text"]);
  req["stream"] = true;
  std::optional<Response> st = PostJson(port, "/", req);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->status, 200);
  EXPECT_EQ(st->Header("content-type"), "text/event-stream");
  std::vector<std::string> events = SseData(st->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(json::parse(events.back())["generated_text"], want["generated_text"]);
  // Errors in TGI's shape: 422 with error_type.
  json e = Post(port, "/", {{"inputs", "x"}, {"stream", "yes"}}, 422);
  EXPECT_EQ(e["error_type"], "validation");
  e = Post(port, "/", {{"inputs", "x"}, {"parameters", {{"max_new_tokens", 0}}}}, 422);
  EXPECT_EQ(e["error_type"], "validation");
  EXPECT_EQ(Call(port, "GET", "/")->status, 405);
}

// The model's sampling defaults (generation_config.json) fill what a request leaves unset, on
// the OpenAI and TGI routes; request fields override them.
TEST(HttpCompatTest, ModelDefaultsFillUnsetFields) {
  ServerSetup setup;
  setup.generation_defaults.temperature = 0.0f;  // greedy unless a request says otherwise
  setup.generation_defaults.max_new_tokens = 5;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  const json greedy = Post(port, "/v1/completions", Greedy("Defaults", 5));
  json r = Post(port, "/v1/completions", {{"prompt", "Defaults"}, {"ignore_eos", true}});
  EXPECT_EQ(r["usage"]["completion_tokens"], 5);
  EXPECT_EQ(r["choices"][0]["text"], greedy["choices"][0]["text"]);
  // The request's own values win.
  r = Post(port, "/v1/completions",
           {{"prompt", "Defaults"},
            {"ignore_eos", true},
            {"max_tokens", 3},
            {"temperature", 1.5},
            {"seed", 3},
            {"n", 4}});
  EXPECT_EQ(r["usage"]["completion_tokens"], 12);
  std::set<std::string> texts;
  for (const json& c : r["choices"]) texts.insert(c["text"].get<std::string>());
  EXPECT_GT(texts.size(), 1u) << "temperature 1.5 should sample";
  // TGI: max_new_tokens from the model (not TGI's 100).
  json t =
      Post(port, "/generate",
           {{"inputs", "Defaults"}, {"parameters", {{"details", true}, {"ignore_eos", true}}}});
  EXPECT_EQ(t["details"]["generated_tokens"], 5);
  EXPECT_EQ(t["generated_text"], greedy["choices"][0]["text"]);
}

// logit_bias: +100 on one token makes greedy decoding pick it every time; -100 on the greedy
// choice makes another token win; reported log-probs stay the raw model's.
TEST(HttpCompatTest, LogitBias) {
  auto s = HttpTestServer::Start();
  ASSERT_TRUE(s);
  const int port = s->port();
  json plain = Greedy("Bias me", 4);
  plain["logprobs"] = 1;
  const json base = Post(port, "/v1/completions", plain);
  const int forced = s->tokenizer().Encode(" Amen").value().at(0);
  const std::string forced_text = s->tokenizer().Decode(std::vector<int>{forced}).value();
  json body = plain;
  body["logit_bias"] = {{std::to_string(forced), 100}};
  body["user"] = "someone";  // accepted and ignored
  json r = Post(port, "/v1/completions", body);
  const json& tokens = r["choices"][0]["logprobs"]["tokens"];
  ASSERT_EQ(tokens.size(), 4u);
  for (const json& t : tokens) EXPECT_EQ(t, forced_text);
  // The raw log-prob of the forced token is reported, not the biased one (which is ~0).
  EXPECT_LT(r["choices"][0]["logprobs"]["token_logprobs"][0].get<double>(), -0.01);
  // Banning the first greedy token changes the first token.
  const int first_id =
      ::mamba::testing::RunAlone(s->engine(), s->tokenizer().Encode("Bias me").value(), 1)
          .ids.at(0);
  body = plain;
  body["logit_bias"] = {{std::to_string(first_id), -100}};
  json banned = Post(port, "/v1/completions", body);
  EXPECT_NE(banned["choices"][0]["text"], base["choices"][0]["text"]);
  EXPECT_EQ(banned["choices"][0]["logprobs"]["top_logprobs"][0],
            base["choices"][0]["logprobs"]["top_logprobs"][0]);  // raw alternatives
  // An empty object changes nothing.
  body["logit_bias"] = json::object();
  EXPECT_EQ(Post(port, "/v1/completions", body)["choices"][0]["text"], base["choices"][0]["text"]);

  // Bad input: 400 naming logit_bias.
  json too_many = json::object();
  for (int i = 0; i < 301; ++i) too_many[std::to_string(i)] = 1;
  for (const json& bad : {json{{"abc", 1}}, json{{"-1", 1}}, json{{"1.5", 1}}, json{{"", 1}},
                          json{{"50280", 1}}, json{{"99999999999", 1}}, json{{"5", 101}},
                          json{{"5", -100.5}}, json{{"5", "1"}}, json{{"5", nullptr}}, too_many}) {
    body = plain;
    body["logit_bias"] = bad;
    json e = Post(port, "/v1/completions", body, 400);
    EXPECT_EQ(e["error"]["param"], "logit_bias") << bad.dump();
  }
  body = plain;
  body["logit_bias"] = json::array({1, 2});
  EXPECT_EQ(Post(port, "/v1/completions", body, 400)["error"]["param"], "logit_bias");
  json ok300 = json::object();
  for (int i = 0; i < 300; ++i) ok300[std::to_string(i)] = -1;
  body["logit_bias"] = ok300;
  Post(port, "/v1/completions", body);
}

// best_of: best_of completions run, the n with the highest cumulative log-prob come back.
TEST(HttpCompatTest, BestOf) {
  ServerSetup setup;
  setup.num_slots = 8;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  json all = {{"prompt", "Best of"}, {"max_tokens", 6}, {"temperature", 1.5},
              {"seed", 11},          {"n", 5},          {"logprobs", 0},
              {"ignore_eos", true}};
  json five = Post(port, "/v1/completions", all);
  ASSERT_EQ(five["choices"].size(), 5u);
  std::vector<std::pair<double, std::string>> ranked;
  for (const json& c : five["choices"]) {
    double sum = 0;
    for (const json& lp : c["logprobs"]["token_logprobs"]) sum += lp.get<double>();
    ranked.emplace_back(sum, c["text"].get<std::string>());
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  json best = all;
  best["n"] = 2;
  best["best_of"] = 5;
  json two = Post(port, "/v1/completions", best);
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][0]["index"], 0);
  EXPECT_EQ(two["choices"][1]["index"], 1);
  EXPECT_EQ(two["choices"][0]["text"], ranked[0].second);
  EXPECT_EQ(two["choices"][1]["text"], ranked[1].second);
  EXPECT_EQ(two["usage"]["completion_tokens"], 30);  // every candidate counts, as OpenAI bills
  best.erase("logprobs");  // no logprobs asked: none reported, the ranking is the same
  json quiet = Post(port, "/v1/completions", best);
  EXPECT_TRUE(quiet["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(quiet["choices"][0]["text"], ranked[0].second);
  // best_of == n is plain n; best_of < n, streaming best_of, a session: 400.
  best["best_of"] = 2;
  EXPECT_EQ(Post(port, "/v1/completions", best)["choices"].size(), 2u);
  best["best_of"] = 1;
  EXPECT_EQ(Post(port, "/v1/completions", best, 400)["error"]["param"], "best_of");
  best["best_of"] = 3;
  best["stream"] = true;
  EXPECT_EQ(Post(port, "/v1/completions", best, 400)["error"]["param"], "best_of");
  best["best_of"] = 9;  // more than the slots: n's limit
  best.erase("stream");
  EXPECT_EQ(Post(port, "/v1/completions", best, 400)["error"]["param"], "n");
}

// TGI's best_of: best_of sampled sequences (sequence i seeded seed + i), the one with the
// highest sum of log-probs answered, the others in details.best_of_sequences in order.
TEST(HttpCompatTest, TgiBestOf) {
  ServerSetup setup;
  setup.num_slots = 8;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  const int port = s->port();
  json req = {{"inputs", "Best of"},
              {"parameters",
               {{"max_new_tokens", 6},
                {"do_sample", true},
                {"temperature", 1.5},
                {"seed", 11},
                {"ignore_eos", true},
                {"best_of", 4},
                {"details", true},
                {"decoder_input_details", true},
                {"top_n_tokens", 2}}}};
  json r = Post(port, "/generate", req);
  const json& details = r["details"];
  ASSERT_EQ(details["best_of_sequences"].size(), 3u) << r.dump();
  std::vector<json> seqs = {details};
  seqs.front()["generated_text"] = r["generated_text"];
  for (const json& other : details["best_of_sequences"]) seqs.push_back(other);
  std::vector<double> sums;
  std::set<uint64_t> seeds;
  for (const json& seq : seqs) {
    EXPECT_EQ(seq["finish_reason"], "length");
    EXPECT_EQ(seq["generated_tokens"], 6);
    ASSERT_EQ(seq["tokens"].size(), 6u);
    EXPECT_EQ(seq["top_tokens"].size(), 6u);
    EXPECT_EQ(seq["prefill"].size(), details["prefill"].size());
    EXPECT_TRUE(seq["prefill"].back()["logprob"].is_number());
    double sum = 0;
    for (const json& t : seq["tokens"]) sum += t["logprob"].get<double>();
    sums.push_back(sum);
    seeds.insert(seq["seed"].get<uint64_t>());
    // Each sequence is what one request with its seed generates.
    json one = req;
    one["parameters"].erase("best_of");
    one["parameters"]["seed"] = seq["seed"];
    EXPECT_EQ(Post(port, "/generate", one)["generated_text"], seq["generated_text"]);
  }
  EXPECT_EQ(seeds, (std::set<uint64_t>{11, 12, 13, 14}));
  for (size_t i = 1; i < seqs.size(); ++i) {
    EXPECT_GE(sums[0], sums[i]) << "the answer is not the best sequence";
    if (i > 1) {
      EXPECT_LT(seqs[i - 1]["seed"], seqs[i]["seed"]);  // in the order they ran
    }
  }
  // Without details only the best text; a neutral warper given counts as sampling (as TGI).
  req["parameters"].erase("details");
  json plain = Post(port, "/generate", req);
  EXPECT_EQ(plain["generated_text"], r["generated_text"]);
  EXPECT_FALSE(plain.contains("details"));
  // ... and then samples: each sequence has its own seed (not the greedy one twice).
  json neutral = Post(
      port, "/generate",
      {{"inputs", "x"}, {"parameters", {{"best_of", 2}, {"temperature", 1.0}, {"details", true}}}});
  ASSERT_EQ(neutral["details"]["best_of_sequences"].size(), 1u) << neutral.dump();
  EXPECT_TRUE(neutral["details"]["seed"].is_number()) << neutral.dump();
  EXPECT_NE(neutral["details"]["seed"], neutral["details"]["best_of_sequences"][0]["seed"]);

  // Refusals, 422 in TGI's words: greedy, streamed, more than the slots, a session.
  auto refused = [&](const std::string& path, json body, const std::string& message) {
    json e = Post(port, path, body, 422);
    EXPECT_EQ(e["error_type"], "validation") << body.dump();
    EXPECT_THAT(e["error"].get<std::string>(), ::testing::HasSubstr(message)) << body.dump();
  };
  refused("/generate", {{"inputs", "x"}, {"parameters", {{"best_of", 2}}}},
          "you must use sampling when 'best_of' is > 1");
  const json sampled = {{"inputs", "x"}, {"parameters", {{"best_of", 2}, {"do_sample", true}}}};
  refused("/generate_stream", sampled, "'best_of' != 1 is not supported when streaming tokens");
  json root = sampled;
  root["stream"] = true;
  refused("/", root, "'best_of' != 1 is not supported when streaming tokens");
  json nine = sampled;
  nine["parameters"]["best_of"] = 9;
  refused("/generate", nine, "'best_of' must be in [1, 8]");
  nine["parameters"]["best_of"] = 0;
  refused("/generate", nine, "'best_of' must be in [1, 8]");
  json session = sampled;
  session["session_id"] = "bo";
  refused("/generate", session, "no best_of");
}

}  // namespace
}  // namespace mamba::server::http_testing

namespace mamba::server::http_testing {
namespace {

// A tokenizer whose post-processor template puts a BOS first (Mistral/Codestral's "<s>"; here
// the NeoX tokenizer with id 0 as the BOS): text prompts get it by default on the OpenAI and TGI
// routes (vLLM's add_special_tokens, TGI's encoding), not when asked otherwise, not on a session
// turn, and /tokenize only when asked.
TEST(HttpCompatTest, AddSpecialTokensFollowsTheTemplate) {
  std::ifstream in(::mamba::testing::SourceDir() / "models/gpt-neox-20b/tokenizer.json");
  std::stringstream text;
  text << in.rdbuf();
  json tj = json::parse(text.str());
  tj["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
      "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0],
                                           "tokens": ["<|endoftext|>"]}}})");
  auto bos_tokenizer = engine::Tokenizer::FromJson(tj.dump());
  ASSERT_TRUE(bos_tokenizer.ok()) << bos_tokenizer.status();
  ServerSetup setup;
  setup.engine.sessions.max_bytes = 16 << 20;
  auto s = HttpTestServer::Start(setup);
  ASSERT_TRUE(s);
  s->state().tokenizer = bos_tokenizer->get();
  const int port = s->port();
  const std::string prompt = "In the beginning God created";
  const json plain = Post(port, "/tokenize", {{"prompt", prompt}});
  const auto n = plain["tokens"].size();
  ASSERT_GT(n, 2u);
  EXPECT_NE(plain["tokens"][0], 0);
  const json with = Post(port, "/tokenize", {{"prompt", prompt}, {"add_special_tokens", true}});
  ASSERT_EQ(with["tokens"].size(), n + 1);
  EXPECT_EQ(with["tokens"][0], 0);

  json body = Greedy(prompt, 1);
  EXPECT_EQ(Post(port, "/v1/completions", body)["usage"]["prompt_tokens"], n + 1);
  body["add_special_tokens"] = false;
  EXPECT_EQ(Post(port, "/v1/completions", body)["usage"]["prompt_tokens"], n);
  body["add_special_tokens"] = "yes";
  Post(port, "/v1/completions", body, 400);
  json turn = Greedy(prompt, 1);
  turn["session_id"] = "bos-test";
  EXPECT_EQ(Post(port, "/v1/completions", turn)["usage"]["prompt_tokens"], n);
  const json tgi =
      Post(port, "/generate",
           {{"inputs", prompt},
            {"parameters",
             {{"max_new_tokens", 1}, {"details", true}, {"decoder_input_details", true}}}});
  ASSERT_EQ(tgi["details"]["prefill"].size(), n + 1);
  EXPECT_EQ(tgi["details"]["prefill"][0]["id"], 0);
  s->state().tokenizer = &s->tokenizer();  // the harness's own before it shuts down
}

}  // namespace
}  // namespace mamba::server::http_testing
