#include "engine/generation_config.h"

#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/checkpoint.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace mamba::engine {
namespace {

using json = nlohmann::json;

template <typename T>
absl::Status Read(const json& j, const char* key, const std::filesystem::path& path,
                  std::optional<T>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  const bool ok = std::is_integral_v<T> ? it->is_number_integer() : it->is_number();
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": '", key, "' must be a number"));
  }
  if constexpr (std::is_integral_v<T>) {
    const int64_t v = it->get<int64_t>();
    if (v < 0 || v > (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": '", key, "' is out of range: ", v));
    }
    *out = static_cast<T>(v);
  } else {
    *out = it->get<T>();
  }
  return absl::OkStatus();
}

}  // namespace

std::string GenerationDefaults::ToString() const {
  std::vector<std::string> parts;
  if (temperature) parts.push_back(absl::StrCat("temperature=", *temperature));
  if (top_k) parts.push_back(absl::StrCat("top_k=", *top_k));
  if (top_p) parts.push_back(absl::StrCat("top_p=", *top_p));
  if (min_p) parts.push_back(absl::StrCat("min_p=", *min_p));
  if (repetition_penalty) parts.push_back(absl::StrCat("repetition_penalty=", *repetition_penalty));
  if (max_new_tokens) parts.push_back(absl::StrCat("max_new_tokens=", *max_new_tokens));
  return parts.empty() ? "none" : absl::StrJoin(parts, " ");
}

SamplingParams GenerationDefaults::Apply(SamplingParams p) const {
  if (temperature) p.temperature = *temperature;
  if (top_k) p.top_k = *top_k;
  if (top_p) p.top_p = *top_p;
  if (min_p) p.min_p = *min_p;
  if (repetition_penalty) p.repetition_penalty = *repetition_penalty;
  if (max_new_tokens) p.max_new_tokens = *max_new_tokens;
  return p;
}

absl::StatusOr<GenerationDefaults> ReadGenerationDefaults(const std::filesystem::path& path) {
  MAMBA_ASSIGN_OR_RETURN(json j, ReadJsonFile(path));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a JSON object"));
  }
  GenerationDefaults d;
  MAMBA_RETURN_IF_ERROR(Read(j, "temperature", path, &d.temperature));
  MAMBA_RETURN_IF_ERROR(Read(j, "top_k", path, &d.top_k));
  MAMBA_RETURN_IF_ERROR(Read(j, "top_p", path, &d.top_p));
  MAMBA_RETURN_IF_ERROR(Read(j, "min_p", path, &d.min_p));
  MAMBA_RETURN_IF_ERROR(Read(j, "repetition_penalty", path, &d.repetition_penalty));
  MAMBA_RETURN_IF_ERROR(Read(j, "max_new_tokens", path, &d.max_new_tokens));
  if (d.max_new_tokens && *d.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": 'max_new_tokens' must be >= 1"));
  }
  if (absl::Status s = d.Apply(SamplingParams{}).Validate(1); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", s.message()));
  }
  return d;
}

}  // namespace mamba::engine
