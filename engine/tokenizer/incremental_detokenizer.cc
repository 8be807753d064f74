// Byte-level decoding is a plain concatenation of token bytes followed by lossy UTF-8 repair,
// and the repair never looks back: so emitting everything up to a trailing incomplete
// character, and keeping that character's bytes, reproduces Decode piece by piece.
#include "engine/tokenizer/incremental_detokenizer.h"

#include "engine/tokenizer/utf8.h"

namespace mamba::engine {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tokenizer_(&tok), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::Add(TokenId id) {
  if (skip_special_tokens_ && tokenizer_->IsSpecial(id)) return {};
  absl::StatusOr<std::string_view> bytes = tokenizer_->TokenBytes(id);
  if (!bytes.ok()) return {};
  std::string text;
  if (pending_.empty()) {
    // Common case: decode straight from the token's bytes, keep only an incomplete tail.
    const size_t used = utf8::AppendLossyCompletePrefix(*bytes, &text);
    pending_.assign(bytes->substr(used));
    return text;
  }
  pending_.append(*bytes);
  const size_t used = utf8::AppendLossyCompletePrefix(pending_, &text);
  pending_.erase(0, used);
  return text;
}

std::string IncrementalDetokenizer::Flush() {
  std::string text;
  utf8::AppendLossy(pending_, &text);
  pending_.clear();
  return text;
}

}  // namespace mamba::engine
