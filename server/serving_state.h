// What both front ends share: the engine, the tokenizer, the model's name, the serving state
// (starting / serving / draining) and the options every front end honours.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "engine/engine.h"

namespace mamba::server {

enum class Health { kStarting, kServing, kDraining };

struct FrontEndOptions {
  std::string host = "127.0.0.1";
  int port = 0;               // 0 picks a free port; the bound one is reported
  std::string api_key;        // non-empty: required as Bearer token / authorization metadata
  std::string tls_cert_file;  // both set: TLS
  std::string tls_key_file;
  int64_t max_body_bytes = 8 << 20;           // HTTP request bodies beyond this: 413
  int64_t request_timeout_ms = 0;             // default per-request deadline (0 = none)
  int64_t max_stream_buffer_bytes = 4 << 20;  // a client this far behind is cancelled
  // HTTP: SO_SNDBUF of a connection once it starts streaming (0 = the kernel's autotuned
  // buffer, which may absorb megabytes before max_stream_buffer_bytes is reached).
  int64_t stream_send_buffer_bytes = 0;
  // HTTP: the time a connection may take to send (the rest of) a request, idle keep-alive
  // included, and the time a write may wait for the client to read. Then it is closed.
  int64_t idle_timeout_ms = 60'000;
};

struct ServingState {
  engine::Engine* engine = nullptr;
  const engine::Tokenizer* tokenizer = nullptr;  // may be null: text prompts then refused
  std::string model_name;                        // what /v1/models and ModelInfo report
  std::string device;                            // e.g. "cpu"
  std::atomic<Health> health{Health::kStarting};
};

}  // namespace mamba::server
