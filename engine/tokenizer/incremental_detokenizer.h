// Streaming detokenization: text for one generated id at a time, never a broken character, and
// in total exactly what Tokenizer::Decode gives for all the ids at once.
#pragma once

#include <string>
#include <string_view>

#include "engine/tokenizer/tokenizer.h"
#include "engine/types.h"

namespace mamba::engine {

// Holds back the bytes of a UTF-8 character until it is complete. Bytes that can never become
// valid (e.g. a continuation byte with no lead) are final at once and come out as U+FFFD,
// exactly where Decode puts them. Invariant, for any ids:
//   Add(ids[0]) + ... + Add(ids[n-1]) + Flush() == Decode(ids, skip_special_tokens)
// Not thread-safe (one per stream); the Tokenizer must outlive it.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens = false);

  // Newly final text (possibly empty). An id without a token adds nothing: a sampler can pick
  // the padding rows of an embedding (50277..50279 for the Mamba models), and HF's decode
  // drops such ids too.
  std::string Add(TokenId id);

  // Whatever is held back, lossy-decoded like Decode (an incomplete character becomes one
  // U+FFFD); afterwards pending() is empty and the detokenizer can be reused.
  std::string Flush();

  // Bytes held back because they may be the start of a character (at most 3 for a byte-level
  // tokenizer; for a SentencePiece-style one the whole current run of byte-fallback tokens,
  // since HF decodes a run that is not valid UTF-8 as one U+FFFD per token, so no part of a
  // run is final before it ends). Stop-string matching on the emitted text must treat these
  // as "text may still follow".
  std::string_view pending() const { return pending_; }

 private:
  std::string AddPiece(TokenId id);
  std::string FlushRun();

  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
  int strip_left_ = 0;       // SentencePiece-style: leading Strip characters still to remove
  bool first_token_ = true;  // SentencePiece-style: no token decoded yet (Metaspace decoder)
};

}  // namespace mamba::engine
