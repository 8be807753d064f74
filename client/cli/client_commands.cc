#include "client/cli/client_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/errors.h"
#include "client/generators.h"
#include "client/grpc_api.h"
#include "client/http_api.h"
#include "client/lora_api.h"
#include "client/openai_api.h"
#include "client/session_api.h"
#include "client/tgi_api.h"
#include "google/protobuf/util/json_util.h"

namespace mamba::client::cli {
namespace {

using Clock = std::chrono::steady_clock;

void PrintError(const absl::Status& s, const GlobalOptions& g) {
  std::string hint;
  if (s.code() == absl::StatusCode::kUnavailable && HttpStatusOf(s) == 0 && ErrorKind(s) != "tls") {
    hint = absl::StrCat(" (is a server listening at ", g.target, "?)");
  } else if (s.code() == absl::StatusCode::kUnauthenticated) {
    hint = " (give the server's key with --api-key or MAMBA_API_KEY)";
  }
  std::fprintf(stderr, "mamba-client: error: %s%s\n", std::string(s.message()).c_str(),
               hint.c_str());
}

int Fail(const absl::Status& s, const GlobalOptions& g) {
  PrintError(s, g);
  return 1;
}

absl::StatusOr<std::string> ReadAll(std::istream& in, const std::string& what) {
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("cannot read ", what));
  return text.str();
}

absl::StatusOr<std::string> ReadPromptText(const PromptSource& p) {
  if (!p.text.empty() && !p.file.empty()) {
    return absl::InvalidArgumentError(
        "give the prompt either as an argument or with --prompt-file, not both");
  }
  if (p.text == "-" || p.file == "-") return ReadAll(std::cin, "stdin");
  if (!p.file.empty()) {
    std::ifstream in(p.file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open the prompt file ", p.file));
    return ReadAll(in, p.file);
  }
  if (p.text.empty()) {
    return absl::InvalidArgumentError(
        "no prompt: give it as an argument, with --prompt-file FILE, or '-' for stdin");
  }
  return p.text;
}

// "1,2 3\n4" -> ids.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::vector<std::string>& parts) {
  std::vector<int32_t> ids;
  for (const std::string& part : parts) {
    for (absl::string_view piece :
         absl::StrSplit(part, absl::ByAnyChar(", \t\r\n[]"), absl::SkipEmpty())) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(piece, &id) || id < 0) {
        return absl::InvalidArgumentError(absl::StrCat("'", piece, "' is not a token id"));
      }
      ids.push_back(id);
    }
  }
  if (ids.empty()) return absl::InvalidArgumentError("no token ids given");
  return ids;
}

absl::StatusOr<PromptInput> ReadPrompt(const PromptSource& p) {
  if (!p.token_ids.empty()) {
    if (!p.text.empty() || !p.file.empty()) {
      return absl::InvalidArgumentError("give either --token-ids or a text prompt, not both");
    }
    std::vector<std::string> parts = {p.token_ids};
    if (p.token_ids == "-") {
      absl::StatusOr<std::string> all = ReadAll(std::cin, "stdin");
      if (!all.ok()) return all.status();
      parts = {*all};
    }
    absl::StatusOr<std::vector<int32_t>> ids = ParseIds(parts);
    if (!ids.ok()) return ids.status();
    return PromptInput::Ids(*std::move(ids));
  }
  absl::StatusOr<std::string> text = ReadPromptText(p);
  if (!text.ok()) return text.status();
  return PromptInput::Text(*std::move(text));
}

struct Target {
  Endpoint endpoint;
  Api api = Api::kGrpc;
  ConnectOptions connect;
};

absl::StatusOr<Target> ResolveTarget(const GlobalOptions& g) {
  Target t;
  absl::StatusOr<Endpoint> e = ParseEndpoint(g.target);
  if (!e.ok()) return e.status();
  t.endpoint = *e;
  if (t.endpoint.protocol == Protocol::kHttp) {
    absl::StatusOr<Api> api = ParseApi(g.http_api);
    if (!api.ok()) return api.status();
    if (*api == Api::kGrpc) return absl::InvalidArgumentError("--http-api is openai or tgi");
    t.api = *api;
    // gRPC takes --tls-ca as a request for TLS; over HTTP the scheme says it. (A server name,
    // which may come from the environment, is simply unused over plain HTTP.)
    if (!t.endpoint.tls && !g.tls_ca.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--tls-ca needs a TLS target: use https://",
                                                     t.endpoint.Authority(), t.endpoint.base_path));
    }
  }
  t.connect.api_key = g.api_key;
  t.connect.grpc.api_key = g.api_key;
  t.connect.grpc.tls_ca_file = g.tls_ca;
  t.connect.grpc.tls_server_name = g.tls_server_name;
  t.connect.http.tls.ca_file = g.tls_ca;
  t.connect.http.tls.server_name = g.tls_server_name;
  return t;
}

absl::StatusOr<GrpcClient> GrpcFor(const Target& t) {
  absl::StatusOr<std::shared_ptr<::grpc::Channel>> channel =
      MakeGrpcChannel(t.endpoint, t.connect.grpc);
  if (!channel.ok()) return channel.status();
  return GrpcClient(*std::move(channel), t.connect.api_key);
}

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

void PrintJson(const Json& j) {
  std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
}

// A token's text for display: JSON-escaped (keeps spaces and control bytes visible).
std::string Quoted(const std::string& s) {
  return Json(s).dump(-1, ' ', false, Json::error_handler_t::replace);
}

int GenerateJson(const Target& t, const GlobalOptions& g, const GenerateSpec& spec) {
  if (t.api == Api::kGrpc) {
    absl::StatusOr<GrpcClient> c = GrpcFor(t);
    if (!c.ok()) return Fail(c.status(), g);
    absl::StatusOr<v1::GenerateResponse> r = c->Generate(ToGenerateRequest(spec), spec.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    std::cout << ToJson(*r);
    return 0;
  }
  if (t.api == Api::kOpenAi) {
    OpenAiGenerator gen(t.endpoint, t.connect.api_key, t.connect.http);
    absl::StatusOr<Json> r = gen.Complete(spec);
    if (!r.ok()) return Fail(r.status(), g);
    PrintJson(*r);
    return 0;
  }
  absl::StatusOr<Json> body = TgiBody(spec);
  if (!body.ok()) return Fail(body.status(), g);
  HttpApi api(t.endpoint, t.connect.api_key, t.connect.http);
  absl::StatusOr<Json> r = api.JsonCall("POST", "/generate", &*body, spec.timeout_s);
  if (!r.ok()) return Fail(r.status(), g);
  PrintJson(*r);
  return 0;
}

// After a stream: each completion when there were several, and the log-probs when asked for.
void PrintCompletions(const GenerateResult& r,
                      const std::vector<std::vector<StreamEvent>>& per_token, int n,
                      bool want_logprobs) {
  for (const CompletionResult& c : r.completions) {
    if (n > 1) {
      std::printf("--- completion %d (%s) ---\n%s\n", c.index, c.finish_reason.c_str(),
                  c.text.c_str());
    }
    if (want_logprobs && c.index < n) {
      std::printf("--- logprobs%s ---\n",
                  n > 1 ? absl::StrCat(" of completion ", c.index).c_str() : "");
      for (const StreamEvent& e : per_token[c.index]) {
        for (size_t i = 0; i < e.logprobs.size(); ++i) {
          std::string line = absl::StrCat(
              i < e.token_ids.size() ? absl::StrCat(e.token_ids[i], "\t") : "",
              i < e.token_texts.size() ? Quoted(e.token_texts[i]) : "?", "\t", e.logprobs[i]);
          if (i < e.top_logprobs.size() && !e.top_logprobs[i].empty()) {
            line += "\ttop:";
            for (const Alternative& a : e.top_logprobs[i])
              absl::StrAppend(&line, " ", Quoted(a.text), "=", a.logprob);
          }
          std::printf("%s\n", line.c_str());
        }
      }
    }
  }
}

// "temperature=0.8 top_k=40" (as the server logs them at start-up), or "none".
std::string DefaultsText(const v1::GenerationDefaults& d) {
  std::vector<std::string> parts;
  if (d.has_temperature()) parts.push_back(absl::StrCat("temperature=", d.temperature()));
  if (d.has_top_k()) parts.push_back(absl::StrCat("top_k=", d.top_k()));
  if (d.has_top_p()) parts.push_back(absl::StrCat("top_p=", d.top_p()));
  if (d.has_min_p()) parts.push_back(absl::StrCat("min_p=", d.min_p()));
  if (d.has_repetition_penalty()) {
    parts.push_back(absl::StrCat("repetition_penalty=", d.repetition_penalty()));
  }
  if (d.has_max_new_tokens()) parts.push_back(absl::StrCat("max_new_tokens=", d.max_new_tokens()));
  return parts.empty() ? "none" : absl::StrJoin(parts, " ");
}

}  // namespace

int RunGenerate(const GlobalOptions& g, const GenerateOptions& o) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  // A session's turn may add nothing: it then continues from what the session holds.
  const bool no_prompt =
      o.prompt.text.empty() && o.prompt.file.empty() && o.prompt.token_ids.empty();
  absl::StatusOr<PromptInput> prompt =
      !o.session.empty() && no_prompt ? PromptInput::Text("") : ReadPrompt(o.prompt);
  if (!prompt.ok()) return Fail(prompt.status(), g);
  GenerateSpec spec;
  spec.prompt = *std::move(prompt);
  spec.sampling = o.sampling;
  spec.model = g.model;
  spec.timeout_s = g.timeout_s;
  spec.session_id = o.session;
  spec.adapter = o.adapter;
  if (o.json) return GenerateJson(*t, g, spec);

  GeneratorFactory factory(t->endpoint, t->api, t->connect);
  absl::StatusOr<std::unique_ptr<Generator>> gen = factory.Make(0);
  if (!gen.ok()) return Fail(gen.status(), g);
  const int n = std::max(1, o.sampling.n);
  std::vector<std::vector<StreamEvent>> per_token(n);  // for the logprobs listing
  const bool want_logprobs = o.sampling.logprobs || o.sampling.top_logprobs > 0;
  const Clock::time_point start = Clock::now();
  std::optional<Clock::time_point> first;
  bool printed_any = false, ends_with_newline = false;
  auto on_event = [&](const StreamEvent& e) {
    if (!first && e.tokens > 0) first = Clock::now();
    if (want_logprobs && e.index < n) per_token[e.index].push_back(e);
    if (n == 1 && !e.text.empty()) {
      std::fwrite(e.text.data(), 1, e.text.size(), stdout);
      std::fflush(stdout);
      printed_any = true;
      ends_with_newline = e.text.back() == '\n';
    }
  };
  absl::StatusOr<GenerateResult> r = (*gen)->Stream(spec, on_event, nullptr);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (printed_any && !ends_with_newline) std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!r.ok()) return Fail(r.status(), g);
  PrintCompletions(*r, per_token, n, want_logprobs);
  if (r->session) {
    std::fprintf(stderr, "[session %s: %lld tokens]\n", r->session->id.c_str(),
                 static_cast<long long>(r->session->tokens));
  }
  if (o.stats || isatty(STDERR_FILENO)) {
    const int64_t out = r->OutputTokens();
    std::string prompt_part;
    if (auto p = r->PromptTokens()) prompt_part = absl::StrCat(*p, " prompt + ");
    const double ttft_ms =
        first ? std::chrono::duration<double, std::milli>(*first - start).count() : 0;
    std::fprintf(stderr,
                 "[%s%lld generated tokens, finish: %s, %.3f s, TTFT %.1f ms, %.1f tok/s]\n",
                 prompt_part.c_str(), static_cast<long long>(out),
                 r->completions.empty() ? "?" : r->completions[0].finish_reason.c_str(), seconds,
                 ttft_ms, seconds > 0 ? static_cast<double>(out) / seconds : 0.0);
  }
  return 0;
}

int RunTokenize(const GlobalOptions& g, const PromptSource& prompt, bool show_tokens, bool json) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  absl::StatusOr<std::string> text = ReadPromptText(prompt);
  if (!text.ok()) return Fail(text.status(), g);
  std::vector<int32_t> ids;
  std::vector<std::string> tokens;
  if (t->endpoint.protocol == Protocol::kGrpc) {
    absl::StatusOr<GrpcClient> c = GrpcFor(*t);
    if (!c.ok()) return Fail(c.status(), g);
    absl::StatusOr<v1::TokenizeResponse> r = c->Tokenize(*text, show_tokens, g.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    ids.assign(r->token_ids().begin(), r->token_ids().end());
    tokens.assign(r->tokens().begin(), r->tokens().end());
  } else {
    HttpApi api(t->endpoint, t->connect.api_key, t->connect.http);
    absl::StatusOr<std::vector<int32_t>> r = api.Tokenize(*text, g.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    ids = *std::move(r);
  }
  if (json) {
    Json j = {{"tokens", ids}, {"count", ids.size()}};
    if (!tokens.empty()) j["token_strings"] = tokens;
    PrintJson(j);
  } else if (show_tokens && tokens.size() == ids.size() && !tokens.empty()) {
    for (size_t i = 0; i < ids.size(); ++i)
      std::printf("%d\t%s\n", ids[i], Quoted(tokens[i]).c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&line, i ? " " : "", ids[i]);
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

int RunDetokenize(const GlobalOptions& g, const std::vector<std::string>& args, bool skip_special,
                  bool json) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  std::vector<std::string> parts = args;
  if (parts.empty() || (parts.size() == 1 && parts[0] == "-")) {
    absl::StatusOr<std::string> all = ReadAll(std::cin, "stdin");
    if (!all.ok()) return Fail(all.status(), g);
    parts = {*all};
  }
  absl::StatusOr<std::vector<int32_t>> ids = ParseIds(parts);
  if (!ids.ok()) return Fail(ids.status(), g);
  std::string text;
  if (t->endpoint.protocol == Protocol::kGrpc) {
    absl::StatusOr<GrpcClient> c = GrpcFor(*t);
    if (!c.ok()) return Fail(c.status(), g);
    absl::StatusOr<v1::DetokenizeResponse> r = c->Detokenize(*ids, skip_special, g.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    text = r->text();
  } else {
    if (skip_special)
      std::fprintf(stderr, "mamba-client: note: --skip-special is not sent over HTTP\n");
    HttpApi api(t->endpoint, t->connect.api_key, t->connect.http);
    absl::StatusOr<std::string> r = api.Detokenize(*ids, g.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    text = *std::move(r);
  }
  if (json) {
    PrintJson(Json{{"prompt", text}});
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
    if (isatty(STDOUT_FILENO)) std::fputc('\n', stdout);
  }
  return 0;
}

int RunInfo(const GlobalOptions& g, bool json) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  if (t->endpoint.protocol == Protocol::kHttp) {
    HttpApi api(t->endpoint, t->connect.api_key, t->connect.http);
    absl::StatusOr<Json> r = api.JsonCall("GET", "/v1/models", nullptr, g.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    PrintJson(*r);
    return 0;
  }
  absl::StatusOr<GrpcClient> c = GrpcFor(*t);
  if (!c.ok()) return Fail(c.status(), g);
  absl::StatusOr<v1::ModelInfo> r = c->GetModelInfo(g.timeout_s);
  if (!r.ok()) return Fail(r.status(), g);
  if (json) {
    std::cout << ToJson(*r);
    return 0;
  }
  const v1::ModelConfig& m = r->config();
  std::printf("model          %s\n", r->model_name().c_str());
  std::printf("device         %s\n", r->device().c_str());
  std::printf("dtype          %s\n", r->dtype().c_str());
  if (r->backend() != r->device()) std::printf("backend        %s\n", r->backend().c_str());
  std::printf("parameters     %lld\n", static_cast<long long>(r->num_parameters()));
  std::printf(
      "architecture   %s, %lld layers, d_model %lld, d_inner %lld, d_state %lld, d_conv %lld, "
      "vocab %lld\n",
      m.model_type().empty() ? "mamba" : m.model_type().c_str(),
      static_cast<long long>(m.num_hidden_layers()), static_cast<long long>(m.hidden_size()),
      static_cast<long long>(m.intermediate_size()), static_cast<long long>(m.state_size()),
      static_cast<long long>(m.conv_kernel()), static_cast<long long>(m.vocab_size()));
  if (m.num_heads() > 0) {
    std::printf("heads          %lld of %lld channels, %lld group(s) sharing B and C%s\n",
                static_cast<long long>(m.num_heads()), static_cast<long long>(m.head_dim()),
                static_cast<long long>(m.n_groups()),
                m.mlp_size() > 0 ? absl::StrCat(", MLP split ", m.mlp_size()).c_str() : "");
  }
  std::printf("state          %lld bytes per sequence\n",
              static_cast<long long>(r->state_bytes_per_sequence()));
  std::printf(
      "tokenizer      %s\n",
      r->has_tokenizer() ? absl::StrCat(r->tokenizer_vocab_size(), " tokens").c_str() : "none");
  std::printf(
      "limits         %d slots, max prompt %lld tokens, max new tokens %d, queue %d, step %lld "
      "tokens\n",
      r->slots_total(), static_cast<long long>(r->max_prompt_tokens()), r->max_new_tokens_limit(),
      r->max_queue(), static_cast<long long>(r->max_step_tokens()));
  std::printf("load           %d slots used, %lld running, %lld waiting%s\n", r->slots_used(),
              static_cast<long long>(r->requests_running()),
              static_cast<long long>(r->requests_waiting()), r->draining() ? ", DRAINING" : "");
  if (r->served_model_names_size() > 1) {
    std::printf("served as      %s\n", absl::StrJoin(r->served_model_names(), ", ").c_str());
  }
  std::printf("defaults       %s\n", DefaultsText(r->generation_defaults()).c_str());
  return 0;
}

int RunHealth(const GlobalOptions& g, const std::string& service) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  if (t->endpoint.protocol == Protocol::kHttp) {
    HttpApi api(t->endpoint, t->connect.api_key, t->connect.http);
    absl::StatusOr<HttpResult> r = api.Health(g.timeout_s);
    if (!r.ok()) return Fail(r.status(), g);
    std::string body = r->body;
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    std::printf("%s %s\n", r->status == 200 ? "SERVING" : "NOT_SERVING",
                absl::StrCat("(HTTP ", r->status, body.empty() ? "" : ": ", body, ")").c_str());
    return r->status == 200 ? 0 : 1;
  }
  absl::StatusOr<GrpcClient> c = GrpcFor(*t);
  if (!c.ok()) return Fail(c.status(), g);
  absl::StatusOr<std::string> r = c->CheckHealth(service, g.timeout_s);
  if (!r.ok()) return Fail(r.status(), g);
  std::printf("%s\n", r->c_str());
  return *r == "SERVING" ? 0 : 1;
}

}  // namespace mamba::client::cli

namespace mamba::client::cli {
namespace {

absl::Status WriteOut(const std::string& path, const std::string& bytes) {
  if (path == "-") {
    std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    std::fflush(stdout);
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadIn(const std::string& path) {
  if (path == "-") return ReadAll(std::cin, "stdin");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  return ReadAll(in, path);
}

}  // namespace

int RunLora(const GlobalOptions& g, const LoraCommand& c) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  absl::StatusOr<std::unique_ptr<LoraApi>> api =
      MakeLoraApi(t->endpoint, g.api_key, t->connect.http, t->connect.grpc, g.timeout_s);
  if (!api.ok()) return Fail(api.status(), g);
  if (c.action == "list") {
    absl::StatusOr<std::vector<LoraInfo>> list = (*api)->List();
    if (!list.ok()) return Fail(list.status(), g);
    Json data = Json::array();
    for (const LoraInfo& info : *list) data.push_back(info.ToJson());
    PrintJson(Json{{"object", "list"}, {"data", std::move(data)}});
    return 0;
  }
  if (c.action == "load") {
    if (absl::Status s = (*api)->Load(c.name, c.path); !s.ok()) return Fail(s, g);
    std::printf("loaded %s\n", c.name.c_str());
    return 0;
  }
  if (c.action == "unload") {
    if (absl::Status s = (*api)->Unload(c.name); !s.ok()) return Fail(s, g);
    std::printf("unloaded %s\n", c.name.c_str());
    return 0;
  }
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown lora command ", c.action)), g);
}

int RunSession(const GlobalOptions& g, const SessionCommand& c) {
  absl::StatusOr<Target> t = ResolveTarget(g);
  if (!t.ok()) return Fail(t.status(), g);
  absl::StatusOr<std::unique_ptr<SessionApi>> api =
      MakeSessionApi(t->endpoint, g.api_key, t->connect.http, t->connect.grpc, g.timeout_s);
  if (!api.ok()) return Fail(api.status(), g);
  SessionApi& s = **api;
  if (c.action == "list") {
    absl::StatusOr<std::vector<SessionInfo>> list = s.List();
    if (!list.ok()) return Fail(list.status(), g);
    Json data = Json::array();
    for (const SessionInfo& info : *list) data.push_back(info.ToJson());
    PrintJson(Json{{"object", "list"}, {"data", std::move(data)}});
    return 0;
  }
  absl::StatusOr<SessionInfo> info = absl::UnknownError("unset");
  if (c.action == "get") {
    info = s.Get(c.id);
  } else if (c.action == "fork") {
    info = s.Fork(c.id, c.new_id);
  } else if (c.action == "delete") {
    if (absl::Status st = s.Delete(c.id); !st.ok()) return Fail(st, g);
    std::printf("deleted %s\n", c.id.c_str());
    return 0;
  } else if (c.action == "export") {
    absl::StatusOr<std::string> file = s.Export(c.id);
    if (!file.ok()) return Fail(file.status(), g);
    if (absl::Status st = WriteOut(c.file, *file); !st.ok()) return Fail(st, g);
    std::fprintf(stderr, "[session %s: %zu bytes written to %s]\n", c.id.c_str(), file->size(),
                 c.file == "-" ? "stdout" : c.file.c_str());
    return 0;
  } else if (c.action == "import") {
    absl::StatusOr<std::string> file = ReadIn(c.file);
    if (!file.ok()) return Fail(file.status(), g);
    bool created = false;
    info = s.Import(c.id, *file, &created);
    if (info.ok()) {
      std::fprintf(stderr, "[session %s %s]\n", c.id.c_str(), created ? "created" : "replaced");
    }
  } else {
    return Fail(absl::InvalidArgumentError(absl::StrCat("unknown session command ", c.action)), g);
  }
  if (!info.ok()) return Fail(info.status(), g);
  PrintJson(info->ToJson());
  return 0;
}

}  // namespace mamba::client::cli
