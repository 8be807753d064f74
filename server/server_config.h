// The server's configuration: every flag (and config-file key) in one place, turned into each
// component's options struct here and nowhere else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/generation_config.h"
#include "server/serving_state.h"

namespace mamba::server {

struct ServerConfig {
  std::string model_dir;   // empty: the bundled demo model
  std::string model_name;  // empty: the first served name, else the model directory's name
  std::vector<std::string> served_model_names;  // more names the `model` field may give
  bool strict_model_name = false;  // a `model` not served is 404 (default: any name is served)
  std::string generation_config = "auto";  // auto | none | a generation_config.json or its dir
  std::string host = "127.0.0.1";
  int http_port = 8000;   // 0 picks a free port; -1 disables HTTP
  int grpc_port = 50051;  // 0 picks a free port; -1 disables gRPC
  std::string device = "auto";
  std::string dtype = "auto";
  int64_t int8_group_size = 0;
  int threads = 0;
  int slots = 16;
  int64_t max_step_tokens = 512;
  std::string decode_path = "auto";  // auto | prefill | decode (engine/backend.h DecodePath)
  int64_t max_prompt_tokens = 65536;
  int64_t max_session_tokens = int64_t{1} << 24;
  int32_t max_new_tokens_limit = 16384;
  int max_queue = 256;
  int64_t state_cache_bytes = -1;           // -1: min(2 GiB, 25 % of RAM or cgroup limit); 0: off
  std::string state_cache_policy = "cost";  // cost | lru
  int64_t session_bytes = -1;               // -1: the state cache's default budget; 0: off
  double session_ttl_s = 3600;
  std::string session_dir;        // empty: sessions live in memory only
  int64_t session_dir_bytes = 0;  // 0: unbounded
  double drain_timeout_s = 30;
  double request_timeout_s = 0;
  int http_threads = 2;
  int64_t max_body_bytes = 8 << 20;
  double http_idle_timeout_s = 60;
  int64_t max_stream_buffer_bytes = 4 << 20;
  int64_t stream_send_buffer_bytes = 0;  // 0: the kernel's default
  std::string api_key;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string log_level = "info";
  bool log_json = false;
  std::string ready_file;  // written with the bound ports once serving (for scripts and tests)
  // LoRA adapters (issue 15): NAME=DIR loaded at start-up, and the registry's bounds.
  std::vector<std::string> loras;
  int max_loras = 8;
  int64_t max_lora_rank = 64;
};

// One --lora NAME=DIR.
struct LoraFlag {
  std::string name;
  std::string dir;
};

// Registers every option on `app` (also readable from --config FILE, TOML/INI).
void AddServerFlags(CLI::App& app, ServerConfig* config);

// Checks values that CLI11 cannot (ports, TLS pairs, timeouts).
absl::Status ValidateConfig(const ServerConfig& c);

// The --lora flags split into names and directories: InvalidArgument for a value without '=',
// an empty name or directory, a name given twice or equal to one of `served_names` (a request's
// `model` could not tell them apart), or more adapters than --max-loras.
absl::StatusOr<std::vector<LoraFlag>> ParseLoraFlags(const ServerConfig& c,
                                                     const std::vector<std::string>& served_names);

// The default budgets of the state cache and of sessions: the smaller of 2 GiB and 25 % of the
// memory the process may use (RAM, or its cgroup limit).
int64_t DefaultStateCacheBytes();

// The bundled demo model's directory, relative to the binary (engine/tools/demo_model.h).
std::string DefaultModelDir();

// The names the server answers to, the reported one first: --model-name, then
// --served-model-name in order (duplicates dropped); the model directory's name when neither is
// given.
std::vector<std::string> ServedModelNames(const ServerConfig& c, const std::string& model_dir);

// The sampling defaults --generation-config names: auto = the model directory's
// generation_config.json when it exists; none = no defaults; else that file (or the one in that
// directory), which must exist. A max_new_tokens above --max-new-tokens-limit is lowered to it.
absl::StatusOr<engine::GenerationDefaults> LoadGenerationDefaults(const ServerConfig& c,
                                                                  const std::string& model_dir);

engine::BackendOptions ToBackendOptions(const ServerConfig& c, engine::ComputeDType dtype);
engine::EngineOptions ToEngineOptions(const ServerConfig& c);
FrontEndOptions ToFrontEndOptions(const ServerConfig& c, int port);

}  // namespace mamba::server
