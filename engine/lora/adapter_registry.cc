#include "engine/lora/adapter_registry.h"

#include <algorithm>
#include <chrono>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace mamba::engine {
namespace {

constexpr size_t kMaxNameBytes = 128;

// Debian's abseil has its own string_view, which StrCat takes.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool NameByteOk(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '/' || c == '-';
}

absl::Status ValidateName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("an adapter name has 1 to ", kMaxNameBytes, " bytes, got ", name.size()));
  }
  for (char c : name) {
    if (!NameByteOk(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter name '", Sv(name), "': only letters, digits and . _ : / - are allowed"));
    }
  }
  return absl::OkStatus();
}

// The state cache's key for an adapter: FNV-1a over its fingerprint, never 0 (0 is the base
// model's).
uint64_t AdapterKey(const std::string& fingerprint) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : fingerprint) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h == 0 ? 1 : h;
}

// `status` with its message naming the adapter (unless the loader already did), code kept.
absl::Status Named(const absl::Status& status, std::string_view name) {
  const std::string quoted = absl::StrCat("'", Sv(name), "'");
  if (absl::StrContains(status.message(), quoted)) return status;
  return absl::Status(status.code(), absl::StrCat("LoRA adapter ", quoted, ": ", status.message()));
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

AdapterRegistry::AdapterRegistry(Backend& backend, const AdapterRegistryOptions& options)
    : backend_(backend), options_(options) {}

namespace {

// The position of `name` in `loaded` (sorted by name), or where it would go.
auto LowerBound(const std::vector<std::shared_ptr<const ServedAdapter>>& loaded,
                std::string_view name) {
  return std::lower_bound(loaded.begin(), loaded.end(), name,
                          [](const std::shared_ptr<const ServedAdapter>& a, std::string_view n) {
                            return a->name < n;
                          });
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ServedAdapter>> AdapterRegistry::Load(
    std::string_view name, const std::filesystem::path& dir) {
  if (absl::Status s = ValidateName(name); !s.ok()) return s;
  // Checked here to fail fast, and again under the lock before the insert: loading takes a
  // while and runs unlocked, so lookups and other loads go on meanwhile.
  auto admissible = [&]() -> absl::Status {
    auto it = LowerBound(loaded_, name);
    if (it != loaded_.end() && (*it)->name == name) {
      return absl::AlreadyExistsError(absl::StrCat("a LoRA adapter named '", Sv(name),
                                                   "' is already loaded (unload it first)"));
    }
    std::erase_if(gone_, [](const std::weak_ptr<const ServedAdapter>& w) { return w.expired(); });
    const auto resident = static_cast<int64_t>(loaded_.size() + gone_.size());
    if (resident >= options_.max_loras) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "LoRA adapter '", Sv(name), "': ", resident, " adapters are resident (--max-loras ",
          options_.max_loras, "; an unloaded one stays resident until its requests finish)"));
    }
    return absl::OkStatus();
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = admissible(); !s.ok()) return s;
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("LoRA adapter '", Sv(name), "': no directory ", dir.string()));
  }
  absl::StatusOr<std::shared_ptr<const LoraAdapter>> host =
      LoraAdapter::Load(dir, backend_.config(), options_.load, name);
  if (!host.ok()) return Named(host.status(), name);
  if (!*host) return absl::InternalError(absl::StrCat("LoRA adapter '", Sv(name), "': no data"));
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> weights = backend_.LoadAdapter(**host);
  if (!weights.ok()) return Named(weights.status(), name);
  auto served = std::make_shared<ServedAdapter>();
  served->name = std::string(name);
  served->path = dir;
  served->host = *std::move(host);
  served->weights = *std::move(weights);
  served->key = AdapterKey(served->host->fingerprint());
  served->loaded_ms = NowMs();
  std::shared_ptr<const ServedAdapter> out = std::move(served);
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = admissible(); !s.ok()) return s;  // another load won the race
  loaded_.insert(LowerBound(loaded_, name), out);
  return out;
}

absl::Status AdapterRegistry::Unload(std::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = LowerBound(loaded_, name);
  if (it == loaded_.end() || (*it)->name != name) {
    return absl::NotFoundError(absl::StrCat("no LoRA adapter named '", Sv(name), "' is loaded"));
  }
  // Requests holding it keep it (and its weights) until they end; it counts as resident until
  // then.
  gone_.push_back(*it);
  loaded_.erase(it);
  return absl::OkStatus();
}

std::shared_ptr<const ServedAdapter> AdapterRegistry::Find(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = LowerBound(loaded_, name);
  if (it == loaded_.end() || (*it)->name != name) return nullptr;
  return *it;
}

std::vector<std::shared_ptr<const ServedAdapter>> AdapterRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_;
}

int AdapterRegistry::resident() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(gone_, [](const std::weak_ptr<const ServedAdapter>& w) { return w.expired(); });
  return static_cast<int>(loaded_.size() + gone_.size());
}

}  // namespace mamba::engine
