// Added tokens ("<|endoftext|>", runs of spaces, ...): found in the text before BPE runs, with
// Hugging Face's rules (leftmost-longest; single_word, lstrip, rstrip; tokens marked
// `normalized` are matched on the normalized text, the others on the raw text).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/types.h"

namespace mamba::engine {

struct AddedTokenSpec {
  TokenId id = 0;  // as written in tokenizer.json
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

// A span of text to tokenize (id < 0) or an added token found there. Spans of consecutive
// pieces may overlap when an rstrip token's spaces contain the next match; HF does the same.
struct TextPiece {
  uint32_t begin = 0;
  uint32_t end = 0;
  TokenId id = -1;
};

class AddedVocabulary {
 public:
  // Checks that the ids in the file are the ids Hugging Face would assign (it re-derives them
  // and only warns on a mismatch; we refuse to guess) and builds the two matchers.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> Create(
      const std::vector<AddedTokenSpec>& tokens, const BpeModel& model,
      const Normalizer& normalizer);
  ~AddedVocabulary();

  // Splits raw text on the tokens that are not `normalized` (special tokens, usually).
  void SplitRaw(std::string_view text, std::vector<TextPiece>* pieces) const;
  // Splits normalized text on the `normalized` tokens.
  void SplitNormalized(std::string_view text, std::vector<TextPiece>* pieces) const;

  const std::vector<AddedTokenSpec>& tokens() const { return tokens_; }
  // How HF spells tokens()[i] when decoding (and in id_to_token): a `normalized` token's
  // content after the normalizer (recent HF caches it so that decoders see what encoding
  // saw), any other token's content.
  const std::string& spelling(size_t i) const { return spellings_[i]; }

 private:
  class Matcher;
  AddedVocabulary();
  void Split(const Matcher& matcher, std::string_view text, std::vector<TextPiece>* out) const;

  std::vector<AddedTokenSpec> tokens_;
  std::vector<std::string> spellings_;
  std::unique_ptr<Matcher> raw_;
  std::unique_ptr<Matcher> normalized_;
};

}  // namespace mamba::engine
