// mamba-server: serves a Mamba model over HTTP (OpenAI- and TGI-compatible) and gRPC.
// SIGTERM/SIGINT drain: health turns NOT_SERVING / 503, new requests are refused, running ones
// get --drain-timeout seconds to finish and are then cancelled; the exit code is 0.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "CLI/CLI.hpp"
#include "engine/backend_factory.h"
#include "engine/checkpoint.h"
#include "engine/logging.h"
#include "engine/lora/adapter_registry.h"
#include "server/grpc/grpc_server.h"
#include "server/http/http_server.h"
#include "server/metrics.h"
#include "server/server_config.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/spdlog.h"

namespace mamba::server {
namespace {

namespace fs = std::filesystem;

// %* in a log pattern: the message as a JSON string body (quotes, backslashes and control
// characters escaped), so that --log-json lines always parse.
class JsonMessageFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (char ch : std::string_view(msg.payload.data(), msg.payload.size())) {
      const auto u = static_cast<unsigned char>(ch);
      if (ch == '"' || ch == '\\') {
        dest.push_back('\\');
        dest.push_back(ch);
      } else if (u < 0x20) {
        char esc[8];
        std::snprintf(esc, sizeof(esc), "\\u%04x", u);
        dest.append(esc, esc + 6);
      } else {
        dest.push_back(ch);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

// The server's own lines (start-up, ports, drain); made after SetUpLogging, like every layer's.
std::shared_ptr<spdlog::logger> Log() { return engine::NamedLogger("server"); }

void SetUpLogging(const ServerConfig& c) {
  spdlog::set_level(spdlog::level::from_str(c.log_level));
  if (c.log_json) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonMessageFlag>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","pid":%P,"msg":"%*"})");
    spdlog::set_formatter(std::move(formatter));
  }
}

void LogSessions(const engine::SessionOptions& s) {
  if (s.max_bytes <= 0) {
    Log()->info("sessions: off (--session-bytes 0)");
    return;
  }
  std::string disk = "memory only";
  if (!s.dir.empty()) {
    disk = s.dir_max_bytes > 0
               ? fmt::format("written to {} (up to {} MiB)", s.dir.string(), s.dir_max_bytes >> 20)
               : fmt::format("written to {} (unbounded)", s.dir.string());
  }
  Log()->info("sessions: up to {} MiB of host memory, ended after {} s unused, {}",
              s.max_bytes >> 20, s.ttl_seconds, disk);
}

int Fail(const std::string& what, const absl::Status& s) {
  Log()->critical("{}: {}", what, s.ToString());
  return 1;
}

// The --lora adapters, loaded before serving starts. A bad one stops start-up as a bad flag does
// (exit code 2), naming the adapter and the reason.
int LoadLoras(const ServerConfig& c, const std::vector<std::string>& served_names,
              engine::AdapterRegistry& adapters) {
  absl::StatusOr<std::vector<LoraFlag>> loras = ParseLoraFlags(c, served_names);
  if (!loras.ok()) {
    Log()->critical("{}", std::string(loras.status().message()));
    return 2;
  }
  for (const LoraFlag& l : *loras) {
    auto a = adapters.Load(l.name, l.dir);
    if (!a.ok()) {
      Log()->critical("cannot start with --lora {}={}: {}", l.name, l.dir, a.status().ToString());
      return 2;
    }
    Log()->info("LoRA adapter '{}' loaded from {} (rank up to {})", l.name, l.dir,
                (*a)->host->max_rank());
  }
  Log()->info("LoRA adapters: {} loaded; up to {} at once (--max-loras), rank up to {}",
              loras->size(), c.max_loras, c.max_lora_rank);
  return 0;
}

int Run(const ServerConfig& c, const sigset_t& signals) {
  const bool demo = c.model_dir.empty();
  const std::string dir = demo ? DefaultModelDir() : c.model_dir;
  if (demo) {
    Log()->warn(
        "No --model given: serving the bundled DEMO model '{}' — a 10.7M-parameter Mamba trained "
        "only on the King James Bible, not a general assistant. To serve a real checkpoint: "
        "mamba-server --model /path/to/mamba-130m-hf (config.json, model.safetensors, "
        "tokenizer.json).",
        fs::path(dir).filename().string());
  }
  auto checkpoint = engine::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return Fail("cannot load the model", checkpoint.status());
  auto defaults = LoadGenerationDefaults(c, dir);
  if (!defaults.ok()) return Fail("bad --generation-config", defaults.status());
  Log()->info("sampling defaults for fields a request leaves unset (--generation-config {}): {}",
              c.generation_config, defaults->ToString());
  std::shared_ptr<const engine::Tokenizer> tokenizer;
  if (fs::exists(fs::path(dir) / "tokenizer.json")) {
    auto t = engine::Tokenizer::FromFile(fs::path(dir) / "tokenizer.json");
    if (!t.ok()) return Fail("cannot load tokenizer.json", t.status());
    tokenizer = std::move(*t);
  } else {
    Log()->warn("no tokenizer.json in {}: only token-id prompts are accepted", dir);
  }
  auto dtype = engine::ParseComputeDType(c.dtype);
  if (!dtype.ok()) return Fail("bad --dtype", dtype.status());
  auto backend = engine::CreateBackend(*checkpoint, ToBackendOptions(c, *dtype));
  if (!backend.ok()) return Fail("cannot start the engine", backend.status());
  const engine::BackendInfo info = (*backend)->info();
  Metrics metrics;
  const engine::EngineOptions engine_options = ToEngineOptions(c);
  if (engine_options.state_cache_bytes > 0) {
    Log()->info("state cache: up to {} MiB of host memory for state snapshots (eviction: {})",
                engine_options.state_cache_bytes >> 20, c.state_cache_policy);
  } else {
    Log()->info("state cache: off (--state-cache-bytes 0)");
  }
  LogSessions(engine_options.sessions);
  const bool decode_path =
      engine_options.decode_path == engine::DecodePath::kDecode ||
      (engine_options.decode_path == engine::DecodePath::kAuto && (*backend)->fast_decode());
  Log()->info("decode tokens: {} (--decode-path {})",
              decode_path ? "through the decode path, sampled where the logits are when no host "
                            "processing is needed"
                          : "as one-token chunks of each step's prefill",
              c.decode_path);
  auto eng = engine::Engine::Create(std::move(*backend), tokenizer, engine_options, &metrics);
  if (!eng.ok()) return Fail("cannot start the engine", eng.status());
  const std::vector<std::string> served_names = ServedModelNames(c, dir);
  if (int rc = LoadLoras(c, served_names, *(*eng)->adapters()); rc != 0) return rc;
  ServingState state;
  state.engine = eng->get();
  state.tokenizer = tokenizer.get();
  state.served_model_names = served_names;
  state.model_name = state.served_model_names.front();
  state.strict_model_name = c.strict_model_name;
  state.adapters_loaded = !c.loras.empty();
  state.generation_defaults = *defaults;
  state.device = info.device;

  std::unique_ptr<HttpServer> http;
  std::unique_ptr<GrpcServer> grpc;
  if (c.http_port >= 0) {
    auto h = HttpServer::Start(&state, &metrics, ToFrontEndOptions(c, c.http_port), c.http_threads);
    if (!h.ok()) return Fail("cannot start HTTP", h.status());
    http = std::move(*h);
  }
  if (c.grpc_port >= 0) {
    auto g = GrpcServer::Start(&state, ToFrontEndOptions(c, c.grpc_port),
                               [&metrics](std::string_view method, int code) {
                                 metrics.OnResponse("grpc", method, code);
                               });
    if (!g.ok()) return Fail("cannot start gRPC", g.status());
    grpc = std::move(*g);
  }
  const int http_port = http ? http->port() : -1, grpc_port = grpc ? grpc->port() : -1;
  if (!c.ready_file.empty()) {
    std::ofstream(c.ready_file) << "{\"http_port\": " << http_port
                                << ", \"grpc_port\": " << grpc_port << ", \"pid\": " << getpid()
                                << "}\n";
  }
  state.health = Health::kServing;
  if (grpc) grpc->SetServing(true);
  auto where = [&](int port) { return port >= 0 ? fmt::format("{}:{}", c.host, port) : "off"; };
  Log()->info("serving '{}' ({}) — HTTP {}, gRPC {}", state.model_name, info.description,
              where(http_port), where(grpc_port));

  int sig = 0;
  sigwait(&signals, &sig);
  Log()->info("received {}: draining (up to {} s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
              c.drain_timeout_s);
  state.health = Health::kDraining;
  if (grpc) grpc->SetServing(false);
  (*eng)->StartDrain();
  const bool clean =
      (*eng)->WaitIdle(std::chrono::milliseconds(static_cast<int64_t>(c.drain_timeout_s * 1000)));
  if (clean) {
    Log()->info("drained: every request finished");
  } else {
    Log()->warn("drain timeout: cancelled the requests still running");
  }
  // The engine is idle, but a slow reader may not have received the end of its stream yet.
  if (http && !http->WaitForPendingOutput(std::chrono::seconds(10))) {
    Log()->warn("some HTTP clients did not read their last bytes within 10 s");
  }
  if (http) http->Shutdown();
  if (grpc) grpc->Shutdown(std::chrono::seconds(2));
  eng->reset();
  Log()->info("stopped");
  return 0;
}

}  // namespace
}  // namespace mamba::server

int main(int argc, char** argv) {
  using namespace mamba::server;
  CLI::App app{"mamba-server: an inference server for Mamba language models (HTTP + gRPC)"};
  ServerConfig config;
  AddServerFlags(app, &config);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every flag error is a usage error, exit code 2.
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (absl::Status s = ValidateConfig(config); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  SetUpLogging(config);
  // Block the shutdown signals in every thread (they inherit this mask) and take them in main.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return Run(config, signals);
}
