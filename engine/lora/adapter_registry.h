// The adapters a server serves (issue 15): loaded at start-up (--lora NAME=DIR) or at run time
// (POST /v1/load_lora_adapter, gRPC LoadLoraAdapter), found by name per request, unloaded at run
// time. Thread-safe: front-end threads load, unload and look up while the engine runs steps.
//
// A request holds its adapter (shared_ptr) from submission to its end, so an unloaded adapter
// stops being found at once but its weights stay until the last request using it finishes; it
// counts as resident until then. An adapter is found only once it is wholly loaded (parsed,
// validated and laid out by the backend): a request never sees a half-loaded one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/lora/lora_adapter.h"

namespace mamba::engine {

// An adapter as the engine serves it.
struct ServedAdapter {
  std::string name;
  std::filesystem::path path;
  std::shared_ptr<const LoraAdapter> host;        // parsed, fp32
  std::shared_ptr<const AdapterWeights> weights;  // the backend's layout (ChunkInput::adapter)
  uint64_t key = 0;       // StateKey::adapter: a hash of host->fingerprint(), never 0
  int64_t loaded_ms = 0;  // Unix milliseconds
};

struct AdapterRegistryOptions {
  int max_loras = 8;  // --max-loras: adapters resident at once (loaded + unloaded but in use)
  LoraLoadOptions load;
};

class AdapterRegistry {
 public:
  // `backend` lays adapters out (Backend::LoadAdapter) and must outlive the registry.
  AdapterRegistry(Backend& backend, const AdapterRegistryOptions& options);

  // Loads `dir` as `name`. InvalidArgument: a bad name (1-128 bytes of [A-Za-z0-9._:/-]) or a
  // bad adapter (LoraAdapter::Load's message, prefixed with the name); NotFound: no such
  // directory; AlreadyExists: the name is taken; ResourceExhausted: max_loras resident;
  // Unimplemented: the backend has no LoRA support.
  absl::StatusOr<std::shared_ptr<const ServedAdapter>> Load(std::string_view name,
                                                            const std::filesystem::path& dir);
  // NotFound when no adapter has that name.
  absl::Status Unload(std::string_view name);
  // Null when no adapter has that name.
  std::shared_ptr<const ServedAdapter> Find(std::string_view name) const;
  // Loaded adapters, by name.
  std::vector<std::shared_ptr<const ServedAdapter>> List() const;
  // Loaded plus unloaded ones still held by a request.
  int resident() const;
  const AdapterRegistryOptions& options() const { return options_; }

 private:
  Backend& backend_;
  AdapterRegistryOptions options_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const ServedAdapter>> loaded_;      // sorted by name
  mutable std::vector<std::weak_ptr<const ServedAdapter>> gone_;  // unloaded, maybe still held
};

}  // namespace mamba::engine
