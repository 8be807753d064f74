// The mamba-client subcommands: each takes parsed options, talks to the target and returns the
// process exit code (0 success, 1 any failure, with the reason on stderr).
#pragma once

#include <string>
#include <vector>

#include "client/generation.h"

namespace mamba::client::cli {

struct GlobalOptions {
  std::string target = "grpc://127.0.0.1:50051";
  std::string api_key;
  std::string tls_ca;
  std::string tls_server_name;
  std::string http_api = "openai";  // HTTP generation endpoint: openai or tgi
  std::string model;                // OpenAI "model" field
  double timeout_s = 600;
};

// Where the prompt comes from: an argument, a file, or stdin ("-" as either).
struct PromptSource {
  std::string text;
  std::string file;
  std::string token_ids;  // "1,2,3": send ids instead of text
};

struct GenerateOptions {
  PromptSource prompt;
  SamplingOptions sampling;
  bool json = false;
  bool stats = false;
  std::string session;  // continue this server-side session (the prompt may then be empty)
  std::string adapter;  // run under this LoRA adapter loaded on the server (empty: the base model)
};

// `session get|list|delete|fork|export|import`.
struct SessionCommand {
  std::string action;  // "get", "list", "delete", "fork", "export", "import"
  std::string id;
  std::string new_id;  // fork
  std::string file;    // export / import ("-": stdout / stdin)
};

// `score FILE`: tokens, negative log-likelihood, perplexity and bits per byte of a text, streamed
// through one server-side session in chunks (client/cli/score_command.cc).
struct ScoreOptions {
  std::string file;  // "-": stdin
  int chunk_tokens = 1024;
  // Longer texts are tokenized in pieces of at most this many bytes, split at line starts (a
  // server takes 8 MiB bodies by default; JSON escaping may grow a text up to six times).
  int64_t piece_bytes = 1 << 20;
  bool json = false;
  bool progress = false;
};

int RunGenerate(const GlobalOptions& g, const GenerateOptions& o);
int RunScore(const GlobalOptions& g, const ScoreOptions& o);
// `lora load NAME DIR | unload NAME | list`.
struct LoraCommand {
  std::string action;  // "load", "unload", "list"
  std::string name;
  std::string path;  // load: the adapter's directory on the server
};
int RunLora(const GlobalOptions& g, const LoraCommand& c);
int RunTokenize(const GlobalOptions& g, const PromptSource& prompt, bool show_tokens, bool json);
int RunDetokenize(const GlobalOptions& g, const std::vector<std::string>& ids, bool skip_special,
                  bool json);
int RunInfo(const GlobalOptions& g, bool json);
int RunHealth(const GlobalOptions& g, const std::string& service);
int RunSession(const GlobalOptions& g, const SessionCommand& c);

}  // namespace mamba::client::cli
