// Streaming detokenization: emitted text is always valid UTF-8, holds back exactly the bytes of
// an unfinished character, and in total equals Decode of all ids.
#include "engine/tokenizer/incremental_detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// Streams `ids` and checks the invariants after every step; returns the full text.
std::string StreamAndCheck(const Tokenizer& tok, std::span<const TokenId> ids, bool skip) {
  IncrementalDetokenizer detok(tok, skip);
  std::string emitted;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string piece = detok.Add(ids[i]);
    EXPECT_EQ(utf8::FindInvalid(piece), utf8::kAllValid) << "emitted invalid UTF-8";
    EXPECT_LE(detok.pending().size(), 3u);
    emitted += piece;
    // What is out plus the held-back bytes, decoded lossily, is the decode of the prefix.
    std::string so_far = emitted;
    utf8::AppendLossy(detok.pending(), &so_far);
    EXPECT_EQ(so_far, *tok.Decode(ids.first(i + 1), skip)) << "after id #" << i;
  }
  emitted += detok.Flush();
  EXPECT_TRUE(detok.pending().empty());
  return emitted;
}

TEST(IncrementalDetokenizerTest, EveryVectorStreamsToItsDecode) {
  int streamed = 0;
  for (const Vector& v : Vectors().cases) {
    if (v.tokenizer != "neox" || v.ids.size() > 2000) continue;
    ++streamed;
    for (bool skip : {false, true}) {
      ASSERT_EQ(StreamAndCheck(Neox(), v.ids, skip), skip ? v.decoded_skip : v.decoded)
          << v.name << " " << Printable(v.text);
    }
  }
  EXPECT_GT(streamed, 700);
}

// SentencePiece-style tokenizers (byte_fallback, Strip): every encoded vector and every
// decode-only sequence streams to HF's text. A run of byte tokens is held back whole (HF turns
// an invalid run into one U+FFFD per token), so pending() may exceed 3 bytes here; after each
// step, what is out is a prefix of the final text.
TEST(IncrementalDetokenizerTest, ByteFallbackTokensStreamToHuggingFacesText) {
  int streamed = 0;
  for (const auto* list : {&Vectors().cases, &Vectors().decodes}) {
    for (const Vector& v : *list) {
      if (!v.tokenizer.starts_with("sp_")) continue;
      ++streamed;
      const Tokenizer& tok = TokenizerNamed(v.tokenizer);
      for (bool skip : {false, true}) {
        const std::string& want = skip ? v.decoded_skip : v.decoded;
        IncrementalDetokenizer detok(tok, skip);
        std::string emitted;
        for (TokenId id : v.ids) {
          const std::string piece = detok.Add(id);
          EXPECT_EQ(utf8::FindInvalid(piece), utf8::kAllValid);
          emitted += piece;
          ASSERT_TRUE(want.starts_with(emitted))
              << v.tokenizer << " " << ::testing::PrintToString(v.ids) << " emitted "
              << Printable(emitted) << " want " << Printable(want);
        }
        emitted += detok.Flush();
        EXPECT_TRUE(detok.pending().empty());
        ASSERT_EQ(emitted, want) << v.tokenizer << " " << ::testing::PrintToString(v.ids);
        // Reusable after Flush: the Strip of a leading space applies again.
        for (TokenId id : v.ids) emitted = detok.Add(id);
        detok.Flush();
      }
    }
  }
  EXPECT_GT(streamed, 1000);
}

TEST(IncrementalDetokenizerTest, ByteFallbackCharacterComesOutWhenItsRunEnds) {
  const Tokenizer& tok = TokenizerNamed("sp_legacy");
  const TokenId e4 = *tok.TokenToId("<0xE4>"), b8 = *tok.TokenToId("<0xB8>"),
                ad = *tok.TokenToId("<0xAD>"), a = *tok.TokenToId("a");
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.Add(e4), "");
  EXPECT_EQ(detok.Add(b8), "");
  EXPECT_EQ(detok.Add(ad), "");
  EXPECT_EQ(detok.pending(), "\xE4\xB8\xAD");
  EXPECT_EQ(detok.Add(a),
            "\xE4\xB8\xAD"
            "a");  // 中a
  EXPECT_EQ(detok.Add(e4), "");
  EXPECT_EQ(detok.Flush(), std::string(kReplacement));  // an incomplete run: one per token
}

TEST(IncrementalDetokenizerTest, LongDocumentStreams) {
  for (const Vector& v : Vectors().cases) {
    if (v.text.size() < 100000) continue;
    IncrementalDetokenizer detok(Neox());
    std::string text;
    for (TokenId id : v.ids) text += detok.Add(id);
    text += detok.Flush();
    EXPECT_EQ(text, v.decoded);
  }
}

// Random ids, biased toward tokens that are pieces of multi-byte characters.
TEST(IncrementalDetokenizerTest, RandomIdSequencesConcatenateToDecode) {
  const Tokenizer& tok = Neox();
  std::vector<TokenId> partial;  // tokens whose bytes are not valid UTF-8 on their own
  for (TokenId id = 0; id < tok.vocab_size(); ++id) {
    if (utf8::FindInvalid(*tok.TokenBytes(id)) != utf8::kAllValid) partial.push_back(id);
  }
  ASSERT_FALSE(partial.empty());
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<TokenId> ids(1 + rng() % 40);
    for (TokenId& id : ids) {
      id = rng() % 3 == 0 ? static_cast<TokenId>(rng() % tok.vocab_size())
                          : partial[rng() % partial.size()];
    }
    const bool skip = trial % 2 == 1;
    ASSERT_EQ(StreamAndCheck(tok, ids, skip), *tok.Decode(ids, skip)) << "trial " << trial;
  }
}

TEST(IncrementalDetokenizerTest, HoldsBackASplitCharacter) {
  const Tokenizer& tok = Neox();
  const std::vector<TokenId> ids = *tok.Encode("a😀");
  ASSERT_GE(ids.size(), 3u);  // "a" + at least two tokens for the 4 bytes of the emoji
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.Add(ids[0]), "a");
  std::string out;
  for (size_t i = 1; i + 1 < ids.size(); ++i) {
    out += detok.Add(ids[i]);
    EXPECT_FALSE(detok.pending().empty());
  }
  EXPECT_EQ(out, "");
  EXPECT_EQ(std::string(detok.pending()), std::string("😀").substr(0, detok.pending().size()));
  EXPECT_EQ(detok.Add(ids.back()), "😀");
  EXPECT_TRUE(detok.pending().empty());
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, FlushRepairsAnUnfinishedCharacterAndResets) {
  const Tokenizer& tok = Neox();
  const std::vector<TokenId> ids = *tok.Encode("😀");
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.Add(ids[0]), "");
  EXPECT_EQ(detok.Flush(), kReplacement);
  EXPECT_EQ(detok.Add(12092), "Hello");  // usable again
}

TEST(IncrementalDetokenizerTest, InvalidBytesAreFinalAtOnce) {
  const Tokenizer& tok = Neox();
  // A lone continuation byte can never become valid: it is emitted as U+FFFD right away.
  std::optional<TokenId> cont;
  for (TokenId id = 0; id < tok.vocab_size() && !cont; ++id) {
    if (*tok.TokenBytes(id) == "\x80") cont = id;
  }
  ASSERT_TRUE(cont.has_value());
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.Add(*cont), kReplacement);
  EXPECT_TRUE(detok.pending().empty());
}

TEST(IncrementalDetokenizerTest, SpecialTokensAndUnknownIds) {
  const Tokenizer& tok = Neox();
  IncrementalDetokenizer keep(tok);
  IncrementalDetokenizer skip(tok, /*skip_special_tokens=*/true);
  EXPECT_EQ(keep.Add(0), "<|endoftext|>");
  EXPECT_EQ(skip.Add(0), "");
  EXPECT_EQ(skip.Add(50276), "  ");  // added but not special
  // Ids of the embedding's padding rows have no token: they add nothing, as in HF's decode.
  EXPECT_EQ(keep.Add(50279), "");
  EXPECT_EQ(keep.Add(-5), "");
}

}  // namespace
}  // namespace mamba::engine::testing
