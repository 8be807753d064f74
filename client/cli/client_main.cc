// mamba-client: talk to a MambaServe server (or any server with the same gRPC / OpenAI / TGI
// API) from a terminal: generate (streamed), score, tokenize, detokenize, info, health, session,
// lora.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "client/cli/client_commands.h"

namespace {

using mamba::client::SamplingOptions;
using mamba::client::cli::GenerateOptions;
using mamba::client::cli::GlobalOptions;
using mamba::client::cli::PromptSource;

// Optional values: CLI11 fills a plain variable; it is copied into the optional only when the
// flag was given, so that unset options stay the server's defaults.
class Optionals {
 public:
  template <typename T>
  void Add(CLI::App* app, const std::string& name, std::optional<T>* out, const std::string& help) {
    auto value = std::make_shared<T>();
    CLI::Option* opt = app->add_option(name, *value, help);
    apply_.push_back([opt, value, out] {
      if (opt->count() > 0) *out = *value;
    });
  }
  void Apply() {
    for (auto& f : apply_) f();
  }

 private:
  std::vector<std::function<void()>> apply_;
};

void AddPrompt(CLI::App* cmd, PromptSource* p) {
  cmd->add_option("prompt", p->text, "The prompt text, or - to read it from stdin");
  cmd->add_option("--prompt-file,-f", p->file, "Read the prompt from this file (- for stdin)");
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{
      "mamba-client: generate text, tokenize and inspect a MambaServe server (gRPC or HTTP, "
      "either\n"
      "with TLS: grpcs:// or https://, the server's certificate verified against --tls-ca or the\n"
      "system's trusted roots)"};
  app.require_subcommand(1);
  GlobalOptions g;
  if (const char* t = std::getenv("MAMBA_TARGET")) g.target = t;
  app.add_option(
         "--target,-t", g.target,
         "grpc://HOST:PORT, grpcs://HOST:PORT (TLS), http://HOST:PORT or https://HOST:PORT (TLS) "
         "(env MAMBA_TARGET)")
      ->capture_default_str();
  app.add_option("--api-key", g.api_key, "Sent as 'Authorization: Bearer KEY'")
      ->envname("MAMBA_API_KEY");
  app.add_option(
      "--tls-ca", g.tls_ca,
      "PEM root certificates to verify a grpcs:// or https:// server with (default: the system's; "
      "implies TLS for gRPC)");
  app.add_option(
         "--tls-server-name", g.tls_server_name,
         "Name to check the server certificate against (default: the target's host; https:// also "
         "sends it as SNI)")
      ->envname("MAMBA_TLS_SERVER_NAME");
  app.add_option("--http-api", g.http_api,
                 "HTTP generation endpoint: openai (/v1/completions) or tgi (/generate_stream)")
      ->check(CLI::IsMember({"openai", "tgi"}))
      ->capture_default_str();
  app.add_option("--model", g.model, "OpenAI 'model' field (our server accepts none)");
  app.add_option("--timeout", g.timeout_s, "Seconds before a call is abandoned (0: never)")
      ->capture_default_str();

  // generate
  GenerateOptions gen;
  Optionals opt;
  CLI::App* generate = app.add_subcommand("generate", "Generate text; streams it as it arrives");
  AddPrompt(generate, &gen.prompt);
  generate->add_option("--token-ids", gen.prompt.token_ids,
                       "Send these token ids as the prompt (\"1,2,3\", - for stdin)");
  SamplingOptions& s = gen.sampling;
  opt.Add(generate, "--max-tokens,-m", &s.max_tokens, "Tokens to generate at most");
  opt.Add(generate, "--min-tokens", &s.min_tokens,
          "Tokens to generate at least (EOS masked until then)");
  opt.Add(generate, "--temperature", &s.temperature, "0 = greedy");
  opt.Add(generate, "--top-k", &s.top_k, "Keep the k most likely tokens (0 = off)");
  opt.Add(generate, "--top-p", &s.top_p, "Nucleus sampling mass, in (0, 1]");
  opt.Add(generate, "--min-p", &s.min_p, "Drop tokens below min_p times the top probability");
  opt.Add(generate, "--repetition-penalty", &s.repetition_penalty,
          "Hugging Face repetition penalty (1 = off)");
  opt.Add(generate, "--presence-penalty", &s.presence_penalty,
          "OpenAI presence penalty, in [-2, 2]");
  opt.Add(generate, "--frequency-penalty", &s.frequency_penalty,
          "OpenAI frequency penalty, in [-2, 2]");
  opt.Add(generate, "--seed", &s.seed, "Seed of the random draws");
  generate->add_option("--stop", s.stop, "Stop string (repeatable)");
  generate->add_flag("--logprobs", s.logprobs, "Show each generated token's log-probability");
  generate->add_option("--top-logprobs", s.top_logprobs,
                       "Also show this many alternatives per token");
  generate->add_flag("--ignore-eos", s.ignore_eos,
                     "Keep generating after the end-of-sequence token");
  generate->add_option("-n,--n", s.n, "Completions of the prompt")->check(CLI::Range(1, 1024));
  generate->add_option("--session", gen.session,
                       "Continue this server-side session (created on first use): send only the "
                       "turn's new text, which may be empty; its token count goes to stderr");
  generate->add_option("--adapter", gen.adapter,
                       "Run under this LoRA adapter loaded on the server (gRPC adapter, OpenAI "
                       "model, TGI adapter_id; default: the base model)");
  generate->add_flag("--json", gen.json, "Print the server's whole (non-streamed) answer as JSON");
  generate->add_flag("--stats", gen.stats,
                     "Print token counts and timing to stderr (default when it is a terminal)");

  // score
  mamba::client::cli::ScoreOptions score_opt;
  CLI::App* score = app.add_subcommand(
      "score", "Log-likelihood of a text file: tokens, NLL, perplexity, bits per byte");
  score->add_option("file", score_opt.file, "The text (- for stdin)")->required();
  score
      ->add_option("--chunk", score_opt.chunk_tokens,
                   "Tokens per request; the document flows through one session state")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  score
      ->add_option("--piece-bytes", score_opt.piece_bytes,
                   "Longer texts are tokenized in pieces of at most this many bytes, split where "
                   "a line starts (exact for byte-level BPE tokenizers; checked at each split)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  score->add_flag("--json", score_opt.json, "Print the figures as JSON");
  score->add_flag("--progress", score_opt.progress, "Show progress on stderr");

  // tokenize
  PromptSource tok_prompt;
  bool show_tokens = false, tok_json = false;
  CLI::App* tokenize = app.add_subcommand("tokenize", "Text -> token ids");
  AddPrompt(tokenize, &tok_prompt);
  tokenize->add_flag("--show-tokens", show_tokens,
                     "Also show each token's vocabulary spelling (gRPC)");
  tokenize->add_flag("--json", tok_json, "Print {\"tokens\", \"count\"}");

  // detokenize
  std::vector<std::string> ids;
  bool skip_special = false, detok_json = false;
  CLI::App* detokenize = app.add_subcommand("detokenize", "Token ids -> text");
  detokenize->add_option("ids", ids, "Token ids (\"1 2 3\" or \"1,2,3\"; none or - reads stdin)");
  detokenize->add_flag("--skip-special", skip_special, "Leave special tokens out (gRPC)");
  detokenize->add_flag("--json", detok_json, "Print {\"prompt\"}");

  // info / health
  bool info_json = false;
  CLI::App* info = app.add_subcommand("info", "The served model, its limits and current load");
  info->add_flag("--json", info_json, "Print JSON");
  std::string service;
  CLI::App* health =
      app.add_subcommand("health", "Is the server ready? Exit 0 if serving, 1 if not");
  health->add_option("--service", service, "gRPC health service name (default: the whole server)");

  // session get|list|delete|fork|export|import
  mamba::client::cli::SessionCommand session_cmd;
  CLI::App* session = app.add_subcommand(
      "session", "Manage the server's sessions (conversations continued with generate --session)");
  session->require_subcommand(1);
  auto with_id = [&](const char* name, const char* help) {
    CLI::App* sub = session->add_subcommand(name, help);
    sub->add_option("id", session_cmd.id, "Session id")->required();
    sub->final_callback([&session_cmd, name] { session_cmd.action = name; });
    return sub;
  };
  with_id("get", "Show a session (tokens, memory, times) as JSON");
  session->add_subcommand("list", "List the sessions as JSON")->final_callback([&session_cmd] {
    session_cmd.action = "list";
  });
  with_id("delete", "Delete a session");
  with_id("fork", "Copy a session to continue both independently; prints the copy")
      ->add_option("--new-id", session_cmd.new_id, "The copy's id (default: the server picks)");
  with_id("export", "Save a session to a file (safetensors)")
      ->add_option("file", session_cmd.file, "Output file (- for stdout)")
      ->required();
  with_id("import", "Create or replace a session from an exported file")
      ->add_option("file", session_cmd.file, "Input file (- for stdin)")
      ->required();

  // lora load|unload|list
  mamba::client::cli::LoraCommand lora_cmd;
  CLI::App* lora = app.add_subcommand(
      "lora", "Manage the server's LoRA adapters (selected with generate --adapter)");
  lora->require_subcommand(1);
  CLI::App* lora_load = lora->add_subcommand("load", "Load an adapter directory under a name");
  lora_load->add_option("name", lora_cmd.name, "The adapter's name")->required();
  lora_load->add_option("dir", lora_cmd.path, "Its PEFT directory, on the server's file system")
      ->required();
  lora_load->final_callback([&lora_cmd] { lora_cmd.action = "load"; });
  lora->add_subcommand("unload", "Unload an adapter (running requests finish under it)")
      ->final_callback([&lora_cmd] { lora_cmd.action = "unload"; })
      ->add_option("name", lora_cmd.name, "The adapter's name")
      ->required();
  lora->add_subcommand("list", "List the loaded adapters as JSON")->final_callback([&lora_cmd] {
    lora_cmd.action = "list";
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The same shape as every other failure, with the usage-error exit status.
    std::fprintf(stderr, "mamba-client: error: %s\nRun with --help for more information.\n",
                 e.what());
    return 2;
  }
  opt.Apply();

  if (*generate) return mamba::client::cli::RunGenerate(g, gen);
  if (*score) return mamba::client::cli::RunScore(g, score_opt);
  if (*tokenize) return mamba::client::cli::RunTokenize(g, tok_prompt, show_tokens, tok_json);
  if (*detokenize) return mamba::client::cli::RunDetokenize(g, ids, skip_special, detok_json);
  if (*info) return mamba::client::cli::RunInfo(g, info_json);
  if (*health) return mamba::client::cli::RunHealth(g, service);
  if (*session) return mamba::client::cli::RunSession(g, session_cmd);
  if (*lora) return mamba::client::cli::RunLora(g, lora_cmd);
  return 1;
}
