// `mamba-client score FILE`: the exact log-likelihood of a document under the served model. The
// text is tokenized by the server (in pieces of at most --piece-bytes split at line starts, which
// a byte-level BPE tokenizer encodes independently: checked at every split), then streamed through
// one recurrent state in chunks: each chunk is a session turn that generates nothing and returns
// its tokens' log-probs (OpenAI echo + logprobs + max_tokens 0 over HTTP; prompt_logprobs +
// max_new_tokens 0 over gRPC), so a document of any length (up to the server's
// --max-session-tokens) costs the server one state, not a window.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/client_commands.h"
#include "client/errors.h"
#include "client/grpc_api.h"
#include "client/http_api.h"
#include "client/session_api.h"
#include "client/text_pieces.h"

namespace mamba::client::cli {
namespace {

// Log-probs of one chunk: the sum and how many tokens had one (a document's first token has
// none).
struct ChunkScore {
  double sum = 0;
  int64_t scored = 0;
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text) = 0;
  virtual absl::StatusOr<ChunkScore> Score(const std::string& session,
                                           const std::vector<int32_t>& ids) = 0;
};

class HttpScorer : public Scorer {
 public:
  HttpScorer(const Endpoint& e, const GlobalOptions& g) : api_(e, g.api_key, Http(g)), g_(g) {}

  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text) override {
    return api_.Tokenize(text, g_.timeout_s);
  }

  absl::StatusOr<ChunkScore> Score(const std::string& session,
                                   const std::vector<int32_t>& ids) override {
    Json body = {{"prompt", ids},
                 {"max_tokens", 0},
                 {"echo", true},
                 {"logprobs", 0},
                 {"session_id", session}};
    if (!g_.model.empty()) body["model"] = g_.model;
    absl::StatusOr<Json> r = api_.JsonCall("POST", "/v1/completions", &body, g_.timeout_s);
    if (!r.ok()) return r.status();
    ChunkScore s;
    try {
      for (const Json& lp : r->at("choices").at(0).at("logprobs").at("token_logprobs")) {
        if (lp.is_null()) continue;
        s.sum += lp.get<double>();
        ++s.scored;
      }
    } catch (const Json::exception& e) {
      return absl::InternalError(absl::StrCat("unexpected answer from the server: ", e.what()));
    }
    return s;
  }

 private:
  static HttpClientOptions Http(const GlobalOptions& g) {
    HttpClientOptions o;
    o.tls.ca_file = g.tls_ca;
    o.tls.server_name = g.tls_server_name;
    return o;
  }
  HttpApi api_;
  const GlobalOptions& g_;
};

class GrpcScorer : public Scorer {
 public:
  GrpcScorer(std::shared_ptr<::grpc::Channel> channel, const GlobalOptions& g)
      : client_(std::move(channel), g.api_key), g_(g) {}

  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::string& text) override {
    absl::StatusOr<v1::TokenizeResponse> r = client_.Tokenize(text, false, g_.timeout_s);
    if (!r.ok()) return r.status();
    return std::vector<int32_t>(r->token_ids().begin(), r->token_ids().end());
  }

  absl::StatusOr<ChunkScore> Score(const std::string& session,
                                   const std::vector<int32_t>& ids) override {
    v1::GenerateRequest req;
    req.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
    req.mutable_stopping()->set_max_new_tokens(0);
    req.set_prompt_logprobs(0);
    req.set_session_id(session);
    absl::StatusOr<v1::GenerateResponse> r = client_.Generate(req, g_.timeout_s);
    if (!r.ok()) return r.status();
    ChunkScore s;
    for (const v1::Token& t : r->prompt().logprobs()) {
      if (!t.has_logprob()) continue;
      s.sum += t.logprob();
      ++s.scored;
    }
    return s;
  }

 private:
  GrpcClient client_;
  const GlobalOptions& g_;
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ostringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    text << in.rdbuf();
  }
  return text.str();
}

std::string RandomSessionId() {
  std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("score-%016x", rng());
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "mamba-client: error: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int RunScore(const GlobalOptions& g, const ScoreOptions& o) {
  if (o.chunk_tokens < 1) return Fail(absl::InvalidArgumentError("--chunk must be >= 1"));
  absl::StatusOr<Endpoint> e = ParseEndpoint(g.target);
  if (!e.ok()) return Fail(e.status());
  std::unique_ptr<Scorer> scorer;
  GrpcOptions grpc;
  grpc.api_key = g.api_key;
  grpc.tls_ca_file = g.tls_ca;
  grpc.tls_server_name = g.tls_server_name;
  HttpClientOptions http;
  http.tls.ca_file = g.tls_ca;
  http.tls.server_name = g.tls_server_name;
  if (e->protocol == Protocol::kGrpc) {
    absl::StatusOr<std::shared_ptr<::grpc::Channel>> ch = MakeGrpcChannel(*e, grpc);
    if (!ch.ok()) return Fail(ch.status());
    scorer = std::make_unique<GrpcScorer>(*std::move(ch), g);
  } else {
    scorer = std::make_unique<HttpScorer>(*e, g);
  }
  absl::StatusOr<std::string> text = ReadFile(o.file);
  if (!text.ok()) return Fail(text.status());
  absl::StatusOr<std::vector<int32_t>> ids =
      TokenizeInPieces(*text, static_cast<size_t>(o.piece_bytes),
                       [&scorer](std::string_view s) { return scorer->Tokenize(std::string(s)); });
  if (!ids.ok()) return Fail(ids.status());
  if (ids->size() < 2) {
    return Fail(absl::InvalidArgumentError("the text has fewer than 2 tokens: nothing to score"));
  }
  absl::StatusOr<std::unique_ptr<SessionApi>> sessions =
      MakeSessionApi(*e, g.api_key, http, grpc, g.timeout_s);
  if (!sessions.ok()) return Fail(sessions.status());
  const std::string session = RandomSessionId();
  double nll = 0;
  int64_t scored = 0;
  absl::Status status;
  for (size_t at = 0; at < ids->size() && status.ok();) {
    const size_t n = std::min(ids->size() - at, static_cast<size_t>(o.chunk_tokens));
    std::vector<int32_t> chunk(ids->begin() + static_cast<std::ptrdiff_t>(at),
                               ids->begin() + static_cast<std::ptrdiff_t>(at + n));
    absl::StatusOr<ChunkScore> s = scorer->Score(session, chunk);
    if (!s.ok()) {
      status = s.status();
      break;
    }
    nll -= s->sum;
    scored += s->scored;
    at += n;
    if (o.progress) {
      std::fprintf(stderr, "\r[%zu / %zu tokens]", at, ids->size());
      if (at == ids->size()) std::fprintf(stderr, "\n");
    }
  }
  (void)(*sessions)->Delete(session);  // best effort: it expires anyway
  if (!status.ok()) return Fail(status);
  const auto tokens = static_cast<int64_t>(ids->size());
  const auto bytes = static_cast<int64_t>(text->size());
  const double ppl = std::exp(nll / static_cast<double>(scored));
  const double bpb = nll / std::log(2.0) / static_cast<double>(bytes);
  if (o.json) {
    Json j = {{"tokens", tokens}, {"scored_tokens", scored}, {"bytes", bytes},
              {"nll", nll},       {"perplexity", ppl},       {"bits_per_byte", bpb}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::printf("tokens         %lld (%lld scored: the first has no context)\n",
              static_cast<long long>(tokens), static_cast<long long>(scored));
  std::printf("bytes          %lld\n", static_cast<long long>(bytes));
  std::printf("nll            %.4f nats (%.4f per scored token)\n", nll,
              nll / static_cast<double>(scored));
  std::printf("perplexity     %.4f\n", ppl);
  std::printf("bits per byte  %.4f\n", bpb);
  return 0;
}

}  // namespace mamba::client::cli
