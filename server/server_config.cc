#include "server/server_config.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/tools/demo_model.h"

namespace mamba::server {

// Every option can also come from the environment: --http-port <-> MAMBA_HTTP_PORT.
void AddServerFlags(CLI::App& app, ServerConfig* c) {
  app.set_config("--config", "", "Read options from a TOML/INI file (keys = long flag names)");
  app.add_option("--model", c->model_dir,
                 "Model directory (HF layout); default: the bundled demo model")
      ->envname("MAMBA_MODEL");
  app.add_option("--model-name", c->model_name,
                 "Name reported by the APIs (default: the first --served-model-name, else the "
                 "directory name)")
      ->envname("MAMBA_MODEL_NAME");
  app.add_option("--served-model-name", c->served_model_names,
                 "Names a request's \"model\" may give, listed by /v1/models (repeat the flag or "
                 "separate with commas)")
      ->delimiter(',')
      ->envname("MAMBA_SERVED_MODEL_NAME");
  app.add_flag("--strict-model-name", c->strict_model_name,
               "Answer 404 to a \"model\" that is not a served name (default: one model is "
               "served, so any name selects it, as TGI and llama.cpp do)")
      ->envname("MAMBA_STRICT_MODEL_NAME");
  app.add_option("--generation-config", c->generation_config,
                 "Sampling defaults (temperature, top_k, top_p, min_p, repetition_penalty, "
                 "max_new_tokens) for requests that leave them unset: auto (the model "
                 "directory's generation_config.json, if any), none, or a file or directory")
      ->envname("MAMBA_GENERATION_CONFIG")
      ->capture_default_str();
  app.add_option("--host", c->host, "Address to bind")
      ->envname("MAMBA_HOST")
      ->capture_default_str();
  app.add_option("--http-port", c->http_port, "HTTP port (0 = any free, -1 = off)")
      ->envname("MAMBA_HTTP_PORT")
      ->capture_default_str();
  app.add_option("--grpc-port", c->grpc_port, "gRPC port (0 = any free, -1 = off)")
      ->envname("MAMBA_GRPC_PORT")
      ->capture_default_str();
  app.add_option("--device", c->device, "auto | cpu | cuda[:N]")
      ->envname("MAMBA_DEVICE")
      ->capture_default_str();
  app.add_option("--dtype", c->dtype,
                 "auto | float32 | bfloat16 | float16 | int8 (int8: the large matrices quantized "
                 "at load to int8 with fp32 scales; auto: as the checkpoint stores them)")
      ->envname("MAMBA_DTYPE")
      ->capture_default_str();
  app.add_option("--int8-group-size", c->int8_group_size,
                 "With --dtype int8: inputs per scale, a multiple of 4 (0 = one scale per row)")
      ->envname("MAMBA_INT8_GROUP_SIZE")
      ->capture_default_str();
  app.add_option("--threads", c->threads, "Compute threads (0 = all cores)")
      ->envname("MAMBA_THREADS")
      ->capture_default_str();
  app.add_option(
         "--slots", c->slots,
         "State slots = max concurrent sequences (0 = automatic: CUDA fills the memory left after "
         "the weights, the CPU engine takes 16, fewer when their states would take more than a "
         "quarter of memory; on the CPU, slots whose states exceed the memory are refused)")
      ->envname("MAMBA_SLOTS")
      ->capture_default_str();
  app.add_option("--state-cache-bytes", c->state_cache_bytes,
                 "Host memory for snapshots of recurrent states, reused when a prompt extends a "
                 "sequence seen before (-1: the smaller of 2 GiB and 25 % of the memory the "
                 "process may use, "
                 "RAM or its cgroup limit; 0: off)")
      ->envname("MAMBA_STATE_CACHE_BYTES")
      ->capture_default_str();
  app.add_option("--state-cache-policy", c->state_cache_policy,
                 "Which snapshots the state cache evicts first: cost (the fewest prefill tokens "
                 "saved per byte, aged) or lru (least recently used)")
      ->envname("MAMBA_STATE_CACHE_POLICY")
      ->check(CLI::IsMember({"cost", "lru"}))
      ->capture_default_str();
  app.add_option("--session-bytes", c->session_bytes,
                 "Host memory for sessions (conversations continued by id, see README): their "
                 "states and tokens (-1: the same default as --state-cache-bytes; 0: sessions "
                 "off)")
      ->envname("MAMBA_SESSION_BYTES")
      ->capture_default_str();
  app.add_option("--session-ttl", c->session_ttl_s,
                 "Seconds a session may stay unused before it ends (each use restarts the clock)")
      ->envname("MAMBA_SESSION_TTL")
      ->capture_default_str();
  app.add_option("--session-dir", c->session_dir,
                 "Write sessions to this directory and load them again at start-up (default: "
                 "memory only)")
      ->envname("MAMBA_SESSION_DIR");
  app.add_option("--session-dir-bytes", c->session_dir_bytes,
                 "Disk budget of --session-dir; the least recently used files go first (0: "
                 "unbounded)")
      ->envname("MAMBA_SESSION_DIR_BYTES")
      ->capture_default_str();
  app.add_option("--max-step-tokens", c->max_step_tokens, "Token budget of one engine step")
      ->envname("MAMBA_MAX_STEP_TOKENS")
      ->capture_default_str();
  app.add_option("--decode-path", c->decode_path,
                 "How decode tokens run: auto (the engine's choice: the decode kernels, CUDA "
                 "graphs and sampling on the device on a GPU; with the prompt chunks on the "
                 "CPU), decode, or prefill (one-token prompt chunks; for comparisons)")
      ->envname("MAMBA_DECODE_PATH")
      ->check(CLI::IsMember({"auto", "prefill", "decode"}))
      ->capture_default_str();
  app.add_option("--max-prompt-tokens", c->max_prompt_tokens, "Longest prompt accepted")
      ->envname("MAMBA_MAX_PROMPT_TOKENS")
      ->capture_default_str();
  app.add_option("--max-session-tokens", c->max_session_tokens,
                 "Most tokens one session may hold (history + a turn's prompt); each turn's "
                 "prompt still obeys --max-prompt-tokens, so long documents flow through a "
                 "session in turns (mamba-client score)")
      ->envname("MAMBA_MAX_SESSION_TOKENS")
      ->capture_default_str();
  app.add_option("--max-new-tokens-limit", c->max_new_tokens_limit, "Largest max_tokens accepted")
      ->envname("MAMBA_MAX_NEW_TOKENS_LIMIT")
      ->capture_default_str();
  app.add_option("--max-queue", c->max_queue,
                 "Requests waiting for a state slot beyond this get 429 / RESOURCE_EXHAUSTED (0: "
                 "run now or refuse)")
      ->envname("MAMBA_MAX_QUEUE")
      ->capture_default_str();
  app.add_option("--drain-timeout", c->drain_timeout_s, "Seconds running requests get on SIGTERM")
      ->envname("MAMBA_DRAIN_TIMEOUT")
      ->capture_default_str();
  app.add_option("--request-timeout", c->request_timeout_s,
                 "Default per-request deadline in seconds (0 = none)")
      ->envname("MAMBA_REQUEST_TIMEOUT")
      ->capture_default_str();
  app.add_option("--http-threads", c->http_threads, "HTTP I/O threads")
      ->envname("MAMBA_HTTP_THREADS")
      ->capture_default_str();
  app.add_option("--max-body-bytes", c->max_body_bytes, "Largest HTTP request body")
      ->envname("MAMBA_MAX_BODY_BYTES")
      ->capture_default_str();
  app.add_option(
         "--http-idle-timeout", c->http_idle_timeout_s,
         "Seconds an HTTP connection may take to send a request (idle keep-alive included) or "
         "leave a response unread before it is closed")
      ->envname("MAMBA_HTTP_IDLE_TIMEOUT")
      ->capture_default_str();
  app.add_option(
         "--max-stream-buffer-bytes", c->max_stream_buffer_bytes,
         "A streaming client this many bytes behind is disconnected and its request cancelled")
      ->envname("MAMBA_MAX_STREAM_BUFFER_BYTES")
      ->capture_default_str();
  app.add_option("--stream-send-buffer-bytes", c->stream_send_buffer_bytes,
                 "Kernel send buffer (SO_SNDBUF) of an HTTP connection while it streams, so that "
                 "a client that stops reading reaches --max-stream-buffer-bytes soon "
                 "(0 = the kernel's autotuned default, which may hold megabytes)")
      ->envname("MAMBA_STREAM_SEND_BUFFER_BYTES")
      ->capture_default_str();
  app.add_option("--api-key", c->api_key,
                 "Require this Bearer token (HTTP) / authorization metadata (gRPC)")
      ->envname("MAMBA_API_KEY");
  app.add_option("--tls-cert", c->tls_cert_file, "TLS certificate (PEM) for both front ends")
      ->envname("MAMBA_TLS_CERT");
  app.add_option("--tls-key", c->tls_key_file, "TLS private key (PEM)")->envname("MAMBA_TLS_KEY");
  // An unknown level is a start-up error: spdlog's from_str would map it to "off" silently.
  app.add_option("--log-level", c->log_level,
                 "trace | debug | info | warn | error | critical | off")
      ->envname("MAMBA_LOG_LEVEL")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_flag("--log-json", c->log_json, "One JSON object per log line")
      ->envname("MAMBA_LOG_JSON");
  app.add_option("--ready-file", c->ready_file,
                 "Write {\"http_port\", \"grpc_port\"} here once serving");
  app.add_option("--lora", c->loras,
                 "Serve the PEFT LoRA adapter in directory DIR as NAME=DIR (repeat the flag or "
                 "separate with commas); a request selects it with \"model\": NAME (OpenAI), "
                 "\"adapter_id\": NAME (TGI) or GenerateRequest.adapter (gRPC)")
      ->delimiter(',')
      ->envname("MAMBA_LORA");
  app.add_option("--max-loras", c->max_loras,
                 "LoRA adapters held at once (loaded, or unloaded but still used by a request); "
                 "a load beyond it is refused")
      ->envname("MAMBA_MAX_LORAS")
      ->capture_default_str();
  app.add_option("--max-lora-rank", c->max_lora_rank,
                 "Largest LoRA rank accepted (any module's r, rank_pattern included)")
      ->envname("MAMBA_MAX_LORA_RANK")
      ->capture_default_str();
}

absl::Status ValidateConfig(const ServerConfig& c) {
  auto port_ok = [](int p) { return p >= -1 && p <= 65535; };
  if (!port_ok(c.http_port) || !port_ok(c.grpc_port))
    return absl::InvalidArgumentError("ports must be in [-1, 65535]");
  if (c.http_port < 0 && c.grpc_port < 0)
    return absl::InvalidArgumentError("both front ends are disabled");
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (c.int8_group_size < 0 || c.int8_group_size % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--int8-group-size must be 0 or a positive multiple of 4, got ", c.int8_group_size));
  }
  if (c.slots < 0 || c.max_step_tokens < 1 || c.max_queue < 0 || c.drain_timeout_s < 0 ||
      c.request_timeout_s < 0 || c.http_threads < 1 || c.max_prompt_tokens < 1 ||
      c.max_session_tokens < 1 || c.http_idle_timeout_s <= 0 || c.max_stream_buffer_bytes < 1 ||
      c.stream_send_buffer_bytes < 0 || c.stream_send_buffer_bytes > (1 << 30) ||
      c.state_cache_bytes < -1) {
    return absl::InvalidArgumentError("slots, budgets, queue and timeouts must be positive");
  }
  if (c.session_bytes < -1) {
    return absl::InvalidArgumentError(
        "--session-bytes must be -1 (default), 0 (sessions off) or a byte count");
  }
  if (!(c.session_ttl_s > 0) || c.session_ttl_s > 1e9) {
    return absl::InvalidArgumentError("--session-ttl must be a positive number of seconds");
  }
  if (c.session_dir_bytes < 0) {
    return absl::InvalidArgumentError("--session-dir-bytes must be >= 0 (0: unbounded)");
  }
  if (c.session_bytes == 0 && !c.session_dir.empty()) {
    return absl::InvalidArgumentError("--session-dir needs sessions on (--session-bytes is 0)");
  }
  if (!engine::ParseDecodePath(c.decode_path).ok()) {
    return absl::InvalidArgumentError("--decode-path must be auto, prefill or decode");
  }
  if (c.state_cache_policy != "cost" && c.state_cache_policy != "lru") {
    return absl::InvalidArgumentError("--state-cache-policy must be cost or lru");
  }
  if (c.max_loras < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-loras must be at least 1, got ", c.max_loras));
  }
  if (c.max_lora_rank < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-lora-rank must be at least 1, got ", c.max_lora_rank));
  }
  const std::string dir = c.model_dir.empty() ? DefaultModelDir() : c.model_dir;
  if (absl::StatusOr<std::vector<LoraFlag>> l = ParseLoraFlags(c, ServedModelNames(c, dir));
      !l.ok()) {
    return l.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LoraFlag>> ParseLoraFlags(const ServerConfig& c,
                                                     const std::vector<std::string>& served_names) {
  std::vector<LoraFlag> out;
  for (const std::string& value : c.loras) {
    const size_t eq = value.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--lora takes NAME=DIR (an adapter name and its directory), got '", value, "'"));
    }
    LoraFlag f{value.substr(0, eq), value.substr(eq + 1)};
    for (const LoraFlag& other : out) {
      if (other.name == f.name) {
        return absl::InvalidArgumentError(
            absl::StrCat("--lora: the adapter name '", f.name, "' is given twice"));
      }
    }
    if (std::find(served_names.begin(), served_names.end(), f.name) != served_names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--lora: the adapter name '", f.name,
                       "' is the served model's name; a request's \"model\" selects the base "
                       "model by it, so give the adapter another name"));
    }
    out.push_back(std::move(f));
  }
  if (static_cast<int64_t>(out.size()) > c.max_loras) {
    return absl::InvalidArgumentError(absl::StrCat(out.size(), " --lora adapters but --max-loras ",
                                                   c.max_loras, ": raise --max-loras"));
  }
  return out;
}

std::vector<std::string> ServedModelNames(const ServerConfig& c, const std::string& model_dir) {
  std::vector<std::string> names;
  auto add = [&](const std::string& n) {
    if (!n.empty() && std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  add(c.model_name);
  for (const std::string& n : c.served_model_names) add(n);
  std::filesystem::path dir(model_dir);
  if (dir.filename().empty()) dir = dir.parent_path();  // "models/kjv/"
  if (names.empty()) add(dir.filename().string());
  if (names.empty()) names.push_back("mamba");  // a directory path like "/"
  return names;
}

absl::StatusOr<engine::GenerationDefaults> LoadGenerationDefaults(const ServerConfig& c,
                                                                  const std::string& model_dir) {
  namespace fs = std::filesystem;
  if (c.generation_config == "none") return engine::GenerationDefaults{};
  fs::path path;
  if (c.generation_config == "auto") {
    path = fs::path(model_dir) / "generation_config.json";
    if (!fs::exists(path)) return engine::GenerationDefaults{};
  } else {
    path = c.generation_config;
    if (fs::is_directory(path)) path /= "generation_config.json";
  }
  absl::StatusOr<engine::GenerationDefaults> d = engine::ReadGenerationDefaults(path);
  if (d.ok() && d->max_new_tokens && *d->max_new_tokens > c.max_new_tokens_limit) {
    d->max_new_tokens = c.max_new_tokens_limit;
  }
  return d;
}

std::string DefaultModelDir() { return engine::tools::DemoModelDir(); }

namespace {

// The memory this process may use: the machine's, or less when a cgroup (v2: memory.max, v1:
// memory.limit_in_bytes) limits it, as in a container with a memory limit.
int64_t UsableMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  int64_t bytes = pages > 0 && page > 0 ? int64_t{pages} * page : int64_t{8} << 30;
  for (const char* path :
       {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    int64_t limit = 0;
    if (in >> limit && limit > 0) bytes = std::min(bytes, limit);  // "max" does not parse
  }
  return bytes;
}

}  // namespace

engine::BackendOptions ToBackendOptions(const ServerConfig& c, engine::ComputeDType dtype) {
  engine::BackendOptions o;
  o.device = c.device;
  o.dtype = dtype;
  o.num_threads = c.threads;
  o.num_slots = c.slots;
  o.max_step_tokens = std::max<int64_t>(c.max_step_tokens, c.slots);
  o.int8_group_size = c.int8_group_size;
  o.memory_bytes = UsableMemoryBytes();
  return o;
}

int64_t DefaultStateCacheBytes() { return std::min(int64_t{2} << 30, UsableMemoryBytes() / 4); }

engine::EngineOptions ToEngineOptions(const ServerConfig& c) {
  engine::EngineOptions o;
  o.max_step_tokens = c.max_step_tokens;
  o.max_queue = c.max_queue;
  o.decode_path = engine::ParseDecodePath(c.decode_path).value_or(engine::DecodePath::kAuto);
  o.max_prompt_tokens = c.max_prompt_tokens;
  o.max_new_tokens_limit = c.max_new_tokens_limit;
  o.state_cache_bytes = c.state_cache_bytes;
  if (o.state_cache_bytes < 0) o.state_cache_bytes = DefaultStateCacheBytes();
  o.state_cache_policy =
      c.state_cache_policy == "lru" ? engine::EvictionPolicy::kLru : engine::EvictionPolicy::kCost;
  o.sessions.max_bytes = c.session_bytes < 0 ? DefaultStateCacheBytes() : c.session_bytes;
  o.sessions.ttl_seconds = c.session_ttl_s;
  o.max_session_tokens = c.max_session_tokens;  // the engine bounds imports by it + a completion
  o.sessions.dir = c.session_dir;
  o.sessions.dir_max_bytes = c.session_dir_bytes;
  o.lora.max_loras = c.max_loras;
  o.lora.load.max_rank = c.max_lora_rank;
  return o;
}

FrontEndOptions ToFrontEndOptions(const ServerConfig& c, int port) {
  FrontEndOptions o;
  o.host = c.host;
  o.port = port;
  o.api_key = c.api_key;
  o.tls_cert_file = c.tls_cert_file;
  o.tls_key_file = c.tls_key_file;
  o.max_body_bytes = c.max_body_bytes;
  o.request_timeout_ms = static_cast<int64_t>(c.request_timeout_s * 1000);
  o.idle_timeout_ms = std::max<int64_t>(1, static_cast<int64_t>(c.http_idle_timeout_s * 1000));
  o.max_stream_buffer_bytes = c.max_stream_buffer_bytes;
  o.stream_send_buffer_bytes = c.stream_send_buffer_bytes;
  return o;
}

}  // namespace mamba::server
