// libFuzzer target: the tokenizer on arbitrary input. Even bytes: encode the input as text
// (invalid UTF-8 must be an error, valid text must round-trip to its NFC form's decode).
// Odd first byte: the rest is a sequence of 16-bit ids to decode, and to stream through the
// incremental detokenizer and a stop-string matcher; the streamed text must equal Decode.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/stop_matcher.h"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"

namespace {

const mamba::engine::Tokenizer& Tok() {
  static const auto* tok = [] {
    const char* dir = std::getenv("MAMBA_SOURCE_DIR");
    std::string path = std::string(dir ? dir : ".") + "/models/gpt-neox-20b/tokenizer.json";
    auto t = mamba::engine::Tokenizer::FromFile(path);
    if (!t.ok()) std::abort();
    return t->release();
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mamba::engine;
  if (size == 0) return 0;
  const Tokenizer& tok = Tok();
  if ((data[0] & 1) == 0) {
    std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    auto ids = tok.Encode(text);
    if (ids.ok()) {
      auto back = tok.Decode(*ids);
      if (!back.ok()) std::abort();  // every id Encode makes must decode
    }
    return 0;
  }
  std::vector<TokenId> ids;
  for (size_t i = 1; i + 1 < size; i += 2) {
    ids.push_back(static_cast<TokenId>((data[i] | data[i + 1] << 8) % (tok.vocab_size() + 8)));
  }
  auto whole = tok.Decode(ids);
  bool in_range = true;
  for (TokenId id : ids) in_range &= id < tok.vocab_size();
  if (whole.ok() != in_range) std::abort();
  if (!in_range) return 0;
  IncrementalDetokenizer detok(tok);
  StopMatcher stops({"\n\n", "the", "\xe2\x80\x9c"});
  std::string streamed, plain;
  for (TokenId id : ids) {
    const std::string piece = detok.Add(id);
    plain += piece;
    streamed += stops.Push(piece);
  }
  const std::string tail = detok.Flush();
  plain += tail;
  streamed += stops.Push(tail);
  if (!stops.matched()) streamed += stops.Flush();
  if (plain != *whole) std::abort();
  // The stop-cut stream is a prefix of the full text, and ends right before the match.
  if (whole->compare(0, streamed.size(), streamed) != 0) std::abort();
  if (stops.matched() &&
      whole->compare(streamed.size(), stops.matched_stop().size(), stops.matched_stop()) != 0) {
    std::abort();
  }
  return 0;
}
