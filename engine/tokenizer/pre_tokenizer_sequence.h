// Hugging Face pre-tokenizers beyond a lone ByteLevel, composed as a "Sequence": Punctuation,
// Digits, Split (regex or literal pattern, any delimiter behavior, invert) and ByteLevel at any
// position. Falcon (tiiuae/falcon-7b, falcon-mamba-7b) ships
//   Sequence[Punctuation(Contiguous), ByteLevel(use_regex), Digits(individual_digits=false),
//            Split(Regex "[0-9][0-9][0-9]", Isolated)].
// Each step splits every current piece further, with HF's semantics: a step after ByteLevel sees
// the byte-level characters ("Ġ" for a space, "Ã¼" for "ü"), exactly as HF's pipeline does.
// The plain ByteLevel case keeps its own fast path (ByteLevelPreTokenizer); this class is the
// general one and copies pieces.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/pre_tokenizer.h"

namespace mamba::engine {

// HF's SplitDelimiterBehavior: what happens to a matched delimiter.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  enum class Kind { kByteLevel, kPunctuation, kDigits, kSplitRegex, kSplitString };
  Kind kind = Kind::kByteLevel;
  ByteLevelOptions byte_level;                        // kByteLevel
  SplitBehavior behavior = SplitBehavior::kIsolated;  // kPunctuation, kSplit*
  bool individual_digits = false;                     // kDigits
  std::string pattern;                                // kSplit*: regex (Oniguruma) or literal
  bool invert = false;                                // kSplit*
};

// HF's char classes as its `tokenizers` 0.23 build sees them (tables probed from the npm
// package for every code point: data/hf_char_class_probe.js). Punctuation is ASCII punctuation
// or Unicode P* of the Unicode version HF's unicode_categories crate knows (older than ours);
// numeric is Rust's char::is_numeric (Nd, Nl, No of a newer Unicode).
namespace hf_chars {
bool IsPunctuation(char32_t c);
bool IsNumeric(char32_t c);
}  // namespace hf_chars

class SequencePreTokenizer {
 public:
  // At least one step must be ByteLevel (our BPE model takes bytes); Unimplemented otherwise.
  // InvalidArgument when a Split regex does not compile.
  static absl::StatusOr<std::unique_ptr<SequencePreTokenizer>> Create(
      std::vector<PreTokenizerStep> steps);
  ~SequencePreTokenizer();
  SequencePreTokenizer(const SequencePreTokenizer&) = delete;
  SequencePreTokenizer& operator=(const SequencePreTokenizer&) = delete;

  // Splits a piece of valid UTF-8 into words given as raw bytes (what BpeModel::Tokenize
  // takes), replacing `*words`. Empty words are dropped, as HF drops empty splits. Thread-safe.
  absl::Status Split(std::string_view piece, std::vector<std::string>* words) const;

 private:
  struct Step;
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<Step>> steps);
  std::vector<std::unique_ptr<Step>> steps_;
};

}  // namespace mamba::engine
