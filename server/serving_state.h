// What both front ends share: the engine, the tokenizer, the model's name, the serving state
// (starting / serving / draining) and the options every front end honours.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/generation_config.h"
#include "engine/lora/adapter_registry.h"
#include "engine/request_validation.h"

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
  // Every name a request's `model` may give (--served-model-name aliases; model_name first).
  // Empty: model_name alone.
  std::vector<std::string> served_model_names;
  // One model is served, so by default any `model` selects it (as TGI and llama.cpp's server
  // do; Hugging Face's client sends the endpoint URL). Strict: a name not served is NotFound.
  bool strict_model_name = false;
  // Set once a LoRA adapter has been loaded (--lora or at run time), and never cleared: from then
  // on names are strict too, so that a misspelt or unloaded adapter's name is NotFound rather
  // than silently the base model.
  std::atomic<bool> adapters_loaded{false};
  // The model's sampling defaults (generation_config.json): what a request that leaves a field
  // unset is sampled with, on every front end, before the API's own default.
  engine::GenerationDefaults generation_defaults;
  std::string device;  // e.g. "cpu"
  std::atomic<Health> health{Health::kStarting};
};

// The names the server answers to, model_name first.
inline std::vector<std::string> ServedModelNames(const ServingState& s) {
  if (s.served_model_names.empty()) return {s.model_name};
  return s.served_model_names;
}

// The served name a request's `model` selects, as the answer reports it: the name itself when it
// is one of ServedModelNames, model_name when it is empty or (not strict) any other name;
// nullopt when strict and not served.
inline std::optional<std::string> ResolveModelName(const ServingState& s,
                                                   std::string_view requested) {
  if (requested.empty()) return s.model_name;
  const std::vector<std::string> names = ServedModelNames(s);
  if (std::find(names.begin(), names.end(), requested) != names.end()) {
    return std::string(requested);
  }
  if (s.strict_model_name) return std::nullopt;
  return s.model_name;
}

// What a request's `model` selects: the name the answer reports and the LoRA adapter to run
// under (null: the base model).
struct ModelSelection {
  std::string name;
  std::shared_ptr<const engine::ServedAdapter> adapter;
};

// ResolveModelName, with LoRA adapters (issue 15): a served name selects the base model, a
// loaded adapter's name that adapter (vLLM's convention), any other name the base model unless
// strict or adapters_loaded (then nullopt). Adapter names never equal a served name (the loads
// refuse them).
inline std::optional<ModelSelection> SelectModel(const ServingState& s,
                                                 std::string_view requested) {
  if (requested.empty()) return ModelSelection{s.model_name, nullptr};
  const std::vector<std::string> names = ServedModelNames(s);
  if (std::find(names.begin(), names.end(), requested) != names.end()) {
    return ModelSelection{std::string(requested), nullptr};
  }
  if (s.engine != nullptr) {
    if (auto a = s.engine->adapters()->Find(requested)) return ModelSelection{a->name, a};
  }
  if (s.strict_model_name || s.adapters_loaded.load()) return std::nullopt;
  return ModelSelection{s.model_name, nullptr};
}

// Every name a request's `model` selects something by: the served names, then the loaded
// adapters' (by name).
inline std::vector<std::string> ModelIds(const ServingState& s) {
  std::vector<std::string> ids = ServedModelNames(s);
  if (s.engine != nullptr) {
    for (const auto& a : s.engine->adapters()->List()) ids.push_back(a->name);
  }
  return ids;
}

// TGI's `adapter_id` / gRPC's GenerateRequest.adapter: empty selects the base model, else a
// loaded adapter by name (NotFound naming `field` otherwise).
inline absl::StatusOr<std::shared_ptr<const engine::ServedAdapter>> FindAdapter(
    const ServingState& s, std::string_view name, const char* field) {
  if (name.empty() || s.engine == nullptr) return nullptr;
  if (auto a = s.engine->adapters()->Find(name)) return a;
  return engine::WithField(absl::NotFoundError(absl::StrCat(field, ": no LoRA adapter '",
                                                            std::string(name), "' is loaded")),
                           field, "adapter_not_found");
}

// The text of token ids a client sent, for /detokenize and echo: every id below the model's
// vocab_size is valid (the model has an embedding row for it), and those the tokenizer cannot
// spell decode to "". Ids outside [0, vocab_size) are InvalidArgument naming `field`.
inline absl::StatusOr<std::string> DecodeClientIds(const ServingState& s,
                                                   std::span<const engine::TokenId> ids,
                                                   bool skip_special_tokens, const char* field) {
  const int64_t vocab =
      s.engine ? s.engine->backend().config().vocab_size : s.tokenizer->vocab_size();
  for (engine::TokenId id : ids) {
    if (id < 0 || id >= vocab) {
      return engine::InvalidField(
          field, absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  return s.tokenizer->DecodeKnown(ids, skip_special_tokens);
}

}  // namespace mamba::server
