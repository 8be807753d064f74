// The ByteLevel pre-tokenizer: splits text into words with the GPT-2 pattern (PCRE2, JIT
// compiled) before BPE runs on each word's bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mamba::engine {

struct ByteLevelOptions {
  bool add_prefix_space = false;  // prepend ' ' to a piece that does not start with one
  bool use_regex = true;          // split with the GPT-2 pattern (else the piece is one word)
};

// A word inside a piece of text: [begin, begin + length).
struct WordSpan {
  uint32_t begin = 0;
  uint32_t length = 0;
};

class ByteLevelPreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<ByteLevelPreTokenizer>> Create(
      const ByteLevelOptions& options);
  ~ByteLevelPreTokenizer();
  ByteLevelPreTokenizer(const ByteLevelPreTokenizer&) = delete;
  ByteLevelPreTokenizer& operator=(const ByteLevelPreTokenizer&) = delete;

  // Splits a non-empty piece of valid UTF-8 into words, replacing `*words`. Returns the text
  // the spans index: `piece` itself, or `*scratch` holding " " + piece (add_prefix_space).
  // Thread-safe. Fails only if PCRE2 fails (it never should on valid UTF-8).
  absl::StatusOr<std::string_view> Split(std::string_view piece, std::string* scratch,
                                         std::vector<WordSpan>* words) const;

  // The regular expression used, in PCRE2 syntax (for tests and diagnostics).
  static std::string_view Pattern();

 private:
  struct Regex;
  ByteLevelPreTokenizer(const ByteLevelOptions& options, std::unique_ptr<Regex> regex);
  absl::Status SplitWithRegex(std::string_view text, std::vector<WordSpan>* words) const;

  ByteLevelOptions options_;
  std::unique_ptr<Regex> regex_;
};

}  // namespace mamba::engine
