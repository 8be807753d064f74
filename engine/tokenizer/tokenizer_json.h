// Reads a Hugging Face tokenizer.json into plain specs, rejecting (with an error that names the
// feature) everything we do not implement, so that a file never tokenizes differently here.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/pre_tokenizer_sequence.h"

namespace mamba::engine {

// What we support, byte-level: model BPE (no dropout, no byte_fallback, no subword affixes);
// normalizer null, NFC, NFD, NFKC, NFKD, Lowercase, Prepend or a Sequence of them;
// pre_tokenizer ByteLevel, or a Sequence (nested or not) of ByteLevel, Punctuation, Digits and
// Split that includes a ByteLevel (Falcon's); decoder ByteLevel;
// post_processor null or ByteLevel; no truncation or padding. SentencePiece-style (Mistral,
// Llama 2): normalizer as above (typically Prepend("▁") + Replace(" ", "▁")), pre_tokenizer
// null or Metaspace, model BPE with or without byte_fallback, decoder as PieceDecoderSpec
// (Sequence[Replace*, ByteFallback, Fuse, Strip] or Metaspace).
// The Metaspace pre-tokenizer of SentencePiece-style tokenizers: ' ' becomes `replacement`,
// which is prepended to the text (kFirst: only to a piece at the very start of the input), and
// with `split` each replacement starts a new word.
struct MetaspaceOptions {
  enum class Prepend { kAlways, kFirst, kNever };
  std::string replacement = "\xE2\x96\x81";  // "▁"
  Prepend prepend = Prepend::kAlways;
  bool split = true;
};

// A SentencePiece-style decoder, Sequence[Replace*, ByteFallback?, Fuse?, Strip?]: each token's
// literal replacements, then "<0xNN>" tokens as bytes (a run of them that is not valid UTF-8
// becomes one U+FFFD per token), then the joined text loses up to `strip_start` leading
// `strip_content` characters.
// A Metaspace decoder is the replacement -> ' ' and, unless its prepend_scheme is "never",
// the first token's replacement characters dropped instead (`drop_in_first`).
struct PieceDecoderSpec {
  std::vector<std::pair<std::string, std::string>> replacements;
  std::string drop_in_first;
  bool byte_fallback = false;
  std::string strip_content;
  int strip_start = 0;
};

struct TokenizerSpec {
  // false: SentencePiece-style BPE (no ByteLevel anywhere; vocabulary of characters).
  bool byte_level = true;
  std::optional<MetaspaceOptions> metaspace;  // SentencePiece-style; none: no pre-tokenizer
  PieceDecoderSpec piece_decoder;             // SentencePiece-style
  std::vector<NormalizerStep> normalizer;
  ByteLevelOptions pre_tokenizer;  // used when pre_tokenizer_steps is empty (a lone ByteLevel)
  std::vector<PreTokenizerStep> pre_tokenizer_steps;
  BpeSpec model;
  std::vector<AddedTokenSpec> added_tokens;
  // post_processor TemplateProcessing's "single" template: the special-token ids around the
  // text's ids when special tokens are added (Mistral's "<s>" before). Empty otherwise.
  std::vector<TokenId> template_prefix;
  std::vector<TokenId> template_suffix;
};

// InvalidArgument for malformed files, Unimplemented for valid files using a feature we lack.
absl::StatusOr<TokenizerSpec> ParseTokenizerJson(std::string_view json_text);

}  // namespace mamba::engine
