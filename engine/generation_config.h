// A model's recommended sampling defaults, from Hugging Face's generation_config.json: the values
// a request that does not set them is sampled with (vLLM applies the file the same way).
// eos/bos/pad ids from the same file are Checkpoint's (checkpoint.cc).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/sampling.h"

namespace mamba::engine {

// Each field is set only when the file gives it.
struct GenerationDefaults {
  std::optional<float> temperature;
  std::optional<int32_t> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<int32_t> max_new_tokens;

  bool empty() const {
    return !temperature && !top_k && !top_p && !min_p && !repetition_penalty && !max_new_tokens;
  }
  // "temperature=0.8 top_k=40 ...": for the start-up log; "none" when empty.
  std::string ToString() const;
  // `params` with every field this sets replaced (what a request starts from).
  SamplingParams Apply(SamplingParams params) const;
};

// The defaults in `path` (a generation_config.json). HF's do_sample is not read: as in vLLM the
// file's values are the defaults of whoever samples; a request's temperature 0 is still greedy.
// Keys that are absent or null are unset; top_k 0 and max_new_tokens are taken as given. Values
// must pass SamplingParams::Validate (InvalidArgument naming the file and the key otherwise).
absl::StatusOr<GenerationDefaults> ReadGenerationDefaults(const std::filesystem::path& path);

}  // namespace mamba::engine
