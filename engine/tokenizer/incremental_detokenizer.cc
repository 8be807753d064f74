// Byte-level decoding is a plain concatenation of token bytes followed by lossy UTF-8 repair,
// and the repair never looks back: so emitting everything up to a trailing incomplete
// character, and keeping that character's bytes, reproduces Decode piece by piece.
#include "engine/tokenizer/incremental_detokenizer.h"

#include <utility>

#include "engine/tokenizer/utf8.h"

namespace mamba::engine {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tokenizer_(&tok), skip_special_tokens_(skip_special_tokens), strip_left_(tok.strip_start()) {}

// SentencePiece-style: text tokens are whole characters and final at once; byte-fallback
// tokens wait until their run ends (HF's ByteFallback judges a run as a whole), and the
// decoder's Strip removes leading characters of the first text.
std::string IncrementalDetokenizer::FlushRun() {
  std::string text;
  if (utf8::FindInvalid(pending_) == utf8::kAllValid) {
    text = pending_;
  } else {
    for (size_t i = 0; i < pending_.size(); ++i) text += "\xEF\xBF\xBD";
  }
  pending_.clear();
  return text;
}

std::string IncrementalDetokenizer::AddPiece(TokenId id) {
  absl::StatusOr<std::string_view> bytes = tokenizer_->TokenBytes(id);
  if (!bytes.ok()) return {};
  const bool first = std::exchange(first_token_, false);
  if (tokenizer_->IsByteFallbackToken(id)) {
    pending_.append(*bytes);
    return {};
  }
  std::string text = FlushRun();
  if (first) {
    text += tokenizer_->FirstTokenText(id);
  } else {
    text.append(*bytes);
  }
  tokenizer_->StripLeading(&text, &strip_left_);
  return text;
}

std::string IncrementalDetokenizer::Add(TokenId id) {
  if (skip_special_tokens_ && tokenizer_->IsSpecial(id)) return {};
  if (!tokenizer_->is_byte_level()) return AddPiece(id);
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
  if (!tokenizer_->is_byte_level()) {
    std::string text = FlushRun();
    tokenizer_->StripLeading(&text, &strip_left_);
    strip_left_ = tokenizer_->strip_start();
    first_token_ = true;
    return text;
  }
  std::string text;
  utf8::AppendLossy(pending_, &text);
  pending_.clear();
  return text;
}

}  // namespace mamba::engine
