// Reads a Hugging Face tokenizer.json into plain specs, rejecting (with an error that names the
// feature) everything we do not implement, so that a file never tokenizes differently here.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/pre_tokenizer_sequence.h"

namespace mamba::engine {

// What we support: model BPE (no dropout, no byte_fallback, no subword prefix/suffix);
// normalizer null, NFC, NFD, NFKC, NFKD, Lowercase, Prepend or a Sequence of them;
// pre_tokenizer ByteLevel, or a Sequence (nested or not) of ByteLevel, Punctuation, Digits and
// Split that includes a ByteLevel (Falcon's); decoder ByteLevel;
// post_processor null or ByteLevel; no truncation or padding.
struct TokenizerSpec {
  std::vector<NormalizerStep> normalizer;
  ByteLevelOptions pre_tokenizer;  // used when pre_tokenizer_steps is empty (a lone ByteLevel)
  std::vector<PreTokenizerStep> pre_tokenizer_steps;
  BpeSpec model;
  std::vector<AddedTokenSpec> added_tokens;
};

// InvalidArgument for malformed files, Unimplemented for valid files using a feature we lack.
absl::StatusOr<TokenizerSpec> ParseTokenizerJson(std::string_view json_text);

}  // namespace mamba::engine
