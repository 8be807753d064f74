// libFuzzer target: HTTP requests as the server reads them. Arbitrary bytes go through Beast's
// request_parser<string_body> with the server's header and body limits (fed whole, or in small
// pieces as TCP may deliver them; up to four pipelined keep-alive requests). Each request that
// parses is dispatched by the Router (with and without an API key) through a recording Exchange,
// its body is also sent to every POST endpoint, and given to the OpenAI and TGI parsers directly.
// The engine is real but refuses every valid request as draining (tests/fuzz/fuzz_serving.h).
// Properties: nothing crashes, leaks, hits UB or throws; every request is answered exactly once,
// at once, with a documented status and a JSON body (errors in OpenAI's shape); a spec the
// parsers accept is within the engine's limits.
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "boost/asio/buffer.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/string_body.hpp"
#include "engine/tokenizer/utf8.h"
#include "server/http/api_error.h"
#include "server/http/completions.h"
#include "server/http/http_limits.h"
#include "server/http/json_util.h"
#include "server/http/router.h"
#include "server/http/tgi.h"
#include "server/metrics.h"
#include "tests/fuzz/fuzz_serving.h"

namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
using mamba::server::http::HttpRequest;
using mamba::server::http::HttpResponse;
using mamba::server::http::Json;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

// What the connection code does, recorded: the handlers run synchronously here, and since the
// engine submits nothing, every exchange must end inside Router::Handle.
class RecordingExchange : public mamba::server::http::Exchange {
 public:
  void Post(std::function<void()> task) override {
    if (!ended_) posted_.push_back(std::move(task));
  }
  void Respond(HttpResponse response) override {
    Check(!ended_ && !streaming_, "Respond on an ended or streaming exchange");
    ended_ = true;
    response_ = std::move(response);
  }
  void StartStream() override {
    Check(!ended_ && !streaming_, "StartStream twice or after the end");
    streaming_ = true;
  }
  bool Write(std::string) override {
    Check(streaming_ && !ended_, "Write outside a stream");
    return true;
  }
  void EndStream() override {
    Check(streaming_ && !ended_, "EndStream outside a stream");
    ended_ = true;
  }
  void Abort() override { ended_ = true; }
  void SetOnClientGone(std::function<void()> fn) override { on_gone_ = std::move(fn); }

  void RunPosted() {
    while (!posted_.empty() && !ended_) {
      auto task = std::move(posted_.front());
      posted_.erase(posted_.begin());
      task();
    }
  }
  bool ended() const { return ended_; }
  bool streamed() const { return streaming_; }
  const HttpResponse& response() const { return response_; }

 private:
  bool ended_ = false;
  bool streaming_ = false;
  HttpResponse response_;
  std::vector<std::function<void()>> posted_;
  std::function<void()> on_gone_;
};

struct Fixture {
  mamba::server::ServingState& state = mamba::fuzz::FuzzServingState();
  mamba::server::Metrics metrics;
  mamba::server::http::HandlerContext ctx{&state, &metrics, {}};
  mamba::server::http::Router open{ctx};
  mamba::server::http::Router keyed{[this] {
    mamba::server::http::HandlerContext c = ctx;
    c.options.api_key = "fuzz-key";
    return c;
  }()};
};

Fixture& F() {
  static Fixture* f = new Fixture;
  return *f;
}

bool Documented(int status) {
  switch (status) {
    case 200:
    case 400:
    case 401:
    case 404:
    case 405:
    case 413:
    case 422:
    case 429:
    case 503:
      return true;
    default:
      return false;  // 500 would be a handler bug; 504 needs a running request
  }
}

void Dispatch(mamba::server::http::Router& router, const HttpRequest& request) {
  auto exchange = std::make_shared<RecordingExchange>();
  router.Handle(request, exchange);
  exchange->RunPosted();
  Check(exchange->ended(), "a request was not answered at once");
  Check(!exchange->streamed(), "a stream started though the engine accepted nothing");
  const HttpResponse& r = exchange->response();
  Check(Documented(r.status), "undocumented HTTP status");
  F().metrics.OnResponse("http", mamba::server::http::Router::EndpointLabel(request.path),
                         r.status);
  if (r.content_type != "application/json") return;
  Json j = Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  Check(j.is_object(), "a JSON response that is not a JSON object");
  if (r.status != 200) {
    auto e = j.find("error");
    if (mamba::server::http::StyleOf(request.path) == mamba::server::http::ApiStyle::kTgi) {
      auto t = j.find("error_type");
      Check(e != j.end() && e->is_string(), "a TGI error without its message");
      Check(t != j.end() && t->is_string(), "a TGI error without its error_type");
      return;
    }
    Check(e != j.end() && e->is_object(), "an error without an error object");
    auto m = e->find("message");
    auto t = e->find("type");
    auto p = e->find("param");
    auto c = e->find("code");
    Check(m != e->end() && m->is_string(), "an error without a message");
    Check(t != e->end() && t->is_string(), "an error without a type");
    Check(p != e->end() && (p->is_null() || p->is_string()), "an error's param");
    Check(c != e->end() && (c->is_null() || c->is_string()), "an error's code");
  }
}

void CheckPrompt(const mamba::server::http::Prompt& p) {
  Check(!p.ids.empty(), "an accepted prompt is empty");
  Check(static_cast<int64_t>(p.ids.size()) <= mamba::fuzz::kFuzzMaxPromptTokens,
        "an accepted prompt is over max_prompt_tokens");
  if (p.text) {
    Check(mamba::engine::utf8::FindInvalid(*p.text) == mamba::engine::utf8::kAllValid,
          "an accepted text prompt is not UTF-8");
    const int64_t vocab = F().state.tokenizer->vocab_size();
    for (mamba::engine::TokenId id : p.ids) Check(id >= 0 && id < vocab, "Encode made a bad id");
  }
}

void CheckRequest(const mamba::engine::Request& r) {
  const mamba::engine::Engine& e = *F().state.engine;
  mamba::engine::SamplingParams p = r.params;
  if (p.max_new_tokens == 0) {  // scoring only: needs prompt log-probs, the rest must hold
    Check(r.prompt_logprobs >= 0, "accepted max tokens 0 without prompt log-probs");
    p.max_new_tokens = 1;
  }
  Check(p.Validate(e.backend().config().vocab_size).ok(), "accepted invalid sampling");
  Check(r.params.max_new_tokens <= e.options().max_new_tokens_limit,
        "accepted max tokens over the limit");
  Check(r.n >= 1 && r.n <= e.backend().num_slots(), "accepted n outside [1, slots]");
  for (const std::string& s : r.stop_strings) Check(!s.empty(), "kept an empty stop string");
}

bool ParseStatusOk(const absl::Status& s, mamba::server::http::ApiStyle style) {
  const int status = mamba::server::http::ToApiError(s, style).status;
  return status == 400 || status == 404 || status == 422;
}

// The JSON-to-request conversions, called directly so accepted specs can be checked.
void CheckParsers(const std::string& body) {
  using namespace mamba::server::http;
  absl::StatusOr<Json> j = ParseObject(body);
  if (!j.ok()) {
    Check(j.status().code() == absl::StatusCode::kInvalidArgument,
          "ParseObject: not InvalidArgument");
    return;
  }
  CompletionSpec spec;
  if (absl::Status s = ParseCompletionRequest(*j, F().ctx, &spec); s.ok()) {
    Check(!spec.prompts.empty() && spec.prompts.size() <= 1024, "completions: prompt count");
    for (const Prompt& p : spec.prompts) CheckPrompt(p);
    CheckRequest(spec.request);
    if (spec.logprobs)
      Check(*spec.logprobs >= 0 && *spec.logprobs <= mamba::engine::kMaxTopLogprobs,
            "logprobs range");
  } else {
    Check(ParseStatusOk(s, ApiStyle::kOpenAi), "completions: unexpected error code");
  }
  TgiSpec tgi;
  if (absl::Status s = ParseTgiRequest(*j, F().ctx, &tgi); s.ok()) {
    CheckPrompt(tgi.prompt);
    Check(tgi.prompt.text.has_value(), "TGI: a prompt without its text");
    CheckRequest(tgi.request);
    Check(tgi.sampling || tgi.request.params.temperature == 0, "TGI: greedy with a temperature");
    Check(tgi.best_of == tgi.request.n, "TGI: best_of is not the sequences run");
    if (tgi.best_of > 1) {
      Check(tgi.sampling && tgi.request.session_id.empty(), "TGI: best_of greedy or on a session");
    }
  } else {
    Check(ParseStatusOk(s, ApiStyle::kTgi), "TGI: unexpected error code");
  }
}

void Serve(const bhttp::request<bhttp::string_body>& msg) {
  // As http_server.cc builds it.
  HttpRequest req;
  req.method = std::string(msg.method_string());
  const std::string_view target(msg.target().data(), msg.target().size());
  req.path = std::string(target.substr(0, target.find('?')));
  req.body = msg.body();
  req.authorization = std::string(msg[bhttp::field::authorization]);
  Dispatch(F().open, req);
  Dispatch(F().keyed, req);
  for (const char* path :
       {"/v1/completions", "/generate", "/generate_stream", "/tokenize", "/detokenize"}) {
    if (req.path == path && req.method == "POST") continue;  // done above
    Dispatch(F().open, HttpRequest{"POST", path, req.body, ""});
  }
  CheckParsers(req.body);
}

// Parses one request from the front of `in`, presenting at most `step` more bytes per call as a
// read loop would. Returns the bytes consumed, or nullopt when no complete request parsed.
std::optional<size_t> ParseOne(std::string_view in, size_t step,
                               std::optional<bhttp::request<bhttp::string_body>>* out) {
  bhttp::request_parser<bhttp::string_body> parser;
  parser.eager(true);
  parser.header_limit(mamba::server::http::kMaxHeaderBytes);
  parser.body_limit(
      static_cast<uint64_t>(std::max<int64_t>(mamba::server::FrontEndOptions{}.max_body_bytes, 0)));
  size_t used = 0;
  size_t avail = std::min(step, in.size());
  beast::error_code ec;
  while (!parser.is_done()) {
    const size_t n = parser.put(boost::asio::buffer(in.data() + used, avail - used), ec);
    Check(n <= avail - used, "the parser consumed more than it was given");
    used += n;
    if (ec == bhttp::error::need_more || (!ec && n == 0)) {
      ec = {};
      if (avail == in.size()) {  // the peer closed: end of stream
        parser.put_eof(ec);
        break;
      }
      avail = std::min(avail + step, in.size());
      continue;
    }
    if (ec) break;
  }
  if (ec || !parser.is_done()) return std::nullopt;
  out->emplace(parser.release());
  return used;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Odd sizes arrive in pieces of 1..61 bytes; even sizes at once.
  const size_t step = (size & 1) ? 1 + size % 61 : size;
  for (int i = 0; i < 4 && !in.empty(); ++i) {
    std::optional<bhttp::request<bhttp::string_body>> msg;
    std::optional<size_t> used = ParseOne(in, step, &msg);
    if (!used) break;
    Serve(*msg);
    if (!msg->keep_alive() || *used == 0) break;
    in.remove_prefix(*used);
  }
  return 0;
}
