// What the load generator sends: conversations of one or more turns, made deterministically
// from (seed, conversation index) so that every run and every sweep point sends the same
// prompts.
//
// Prompt sources:
//   random         each turn adds `input_len` random token ids (uniform over the vocabulary,
//                  avoiding the end-of-sequence ids); lengths vary uniformly within
//                  [len * (1 - range_ratio), len * (1 + range_ratio)] as vLLM's random dataset.
//   shared prefix  the first turn starts with one of `num_prefixes` fixed random prefixes of
//                  `shared_prefix_len` tokens (conversation i uses prefix i % num_prefixes).
//   dataset        JSONL lines {"prompt": text or [ids], "max_tokens": optional}; turn k of
//                  conversation i uses line (i * turns + k) % lines.
// With text_prompts (TGI, or multi-turn over OpenAI where answers come back as text), random
// ids are turned into text by the detokenizer given (the server's /detokenize) or, without one,
// into random English words (about one token each).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/generation.h"

namespace mamba::client::loadgen {

struct WorkloadOptions {
  int input_len = 1024;
  int output_len = 128;
  double range_ratio = 0;
  int shared_prefix_len = 0;
  int num_prefixes = 1;
  std::string dataset;  // JSONL path; replaces random prompts
  int turns = 1;
  uint64_t seed = 0;
  int64_t vocab_size = 32000;      // random ids in [0, vocab_size)
  std::vector<int32_t> avoid_ids;  // e.g. eos ids
  bool text_prompts = false;
};

struct Turn {
  PromptInput input;  // this turn's new input (the history goes before it)
  int max_tokens = 16;
  int64_t planned_tokens = 0;  // token ids behind `input` (0 for dataset text: unknown)
};

struct Conversation {
  int64_t index = 0;
  std::vector<Turn> turns;
};

// ids -> text, for text prompts; null: random words.
using Detokenizer = std::function<absl::StatusOr<std::string>(const std::vector<int32_t>&)>;

class Workload {
 public:
  // Loads the dataset when one is named. Errors name the file and line.
  static absl::StatusOr<std::unique_ptr<Workload>> Create(WorkloadOptions options,
                                                          Detokenizer detokenize);

  // Conversation `index`; the same (options, index) always gives the same conversation. Not
  // thread-safe (the detokenizer may hold a connection).
  absl::StatusOr<Conversation> Make(int64_t index);

  const WorkloadOptions& options() const { return options_; }
  int64_t dataset_size() const { return static_cast<int64_t>(dataset_.size()); }

 private:
  struct Entry {
    PromptInput prompt;
    std::optional<int> max_tokens;
  };

  explicit Workload(WorkloadOptions options, Detokenizer detokenize)
      : options_(std::move(options)), detokenize_(std::move(detokenize)) {}
  absl::Status LoadDataset();
  std::vector<int32_t> RandomIds(uint64_t stream, int count) const;
  absl::StatusOr<PromptInput> Input(std::vector<int32_t> ids);
  std::string Words(const std::vector<int32_t>& ids) const;

  WorkloadOptions options_;
  Detokenizer detokenize_;
  std::vector<Entry> dataset_;
};

// A length drawn from [len * (1 - r), len * (1 + r)] (at least 1), as vLLM does.
int DrawLength(int len, double range_ratio, uint64_t stream);

// SplitMix64: a well-mixed 64-bit hash used to derive independent random streams.
uint64_t Mix(uint64_t x);

}  // namespace mamba::client::loadgen
