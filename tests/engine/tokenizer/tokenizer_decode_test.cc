// Decode: every vocabulary id against Hugging Face, round trips, special tokens, bad ids, and
// the token lookup API.
#include <functional>
#include <string>
#include <vector>

#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

using ::testing::HasSubstr;

// Hashes what `bytes_of(id)` gives for every vocabulary id, chained per block of
// vf.vocab_block ids as make_vectors.js does, and compares each block with `want`; a differing
// block is reported with every id's text (`shown`), at most three of them. Returns how many
// blocks differ.
int CountBlocksUnlikeHf(const std::vector<uint32_t>& want, const std::string& what,
                        const std::function<std::string(TokenId, std::string* shown)>& bytes_of) {
  const Tokenizer& tok = Neox();
  const VectorFile& vf = Vectors();
  int bad_blocks = 0;
  for (size_t block = 0; block < want.size(); ++block) {
    uint32_t hash = 2166136261u;
    std::string shown;
    for (int64_t id = block * vf.vocab_block;
         id < std::min<int64_t>(tok.vocab_size(), (block + 1) * vf.vocab_block); ++id) {
      shown += std::to_string(id);
      hash = Fnv1a(hash, bytes_of(static_cast<TokenId>(id), &shown));
      shown += " ";
    }
    if (hash != want[block] && ++bad_blocks <= 3) {
      ADD_FAILURE() << what << ": block " << block << " differs from HF: " << shown;
    }
  }
  return bad_blocks;
}

// Compares Decode({id}) of every id with HF's, block by block (hashes in vectors.jsonl).
TEST(TokenizerDecodeTest, EveryVocabularyIdDecodesLikeHuggingFace) {
  const Tokenizer& tok = Neox();
  const VectorFile& vf = Vectors();
  ASSERT_EQ(tok.vocab_size(), vf.vocab_size);
  for (bool skip : {false, true}) {
    auto decoded = [&](TokenId id, std::string* shown) {
      const TokenId one[] = {id};
      absl::StatusOr<std::string> text = tok.Decode(one, skip);
      EXPECT_TRUE(text.ok()) << text.status();
      // In two steps: GCC 12 warns on "=" + string&& (-Wrestrict, a false positive, PR105651).
      *shown += "=";
      *shown += Printable(text.value_or(""));
      return text.value_or("") + std::string(1, '\0');
    };
    EXPECT_EQ(CountBlocksUnlikeHf(skip ? vf.vocab_fnv_skip : vf.vocab_fnv,
                                  skip ? "decode, skipping special" : "decode", decoded),
              0);
  }
}

// The other half of the round trip, for every id: Encode(Decode([id])) equals what Hugging Face
// gives (usually [id]; not for ids BPE never produces alone, nor for partial characters, which
// decode to U+FFFD), block by block (hashes in vectors.jsonl).
TEST(TokenizerDecodeTest, EveryVocabularyIdReEncodesLikeHuggingFace) {
  const Tokenizer& tok = Neox();
  const VectorFile& vf = Vectors();
  ASSERT_EQ(vf.vocab_fnv_roundtrip.size(), vf.vocab_fnv.size());
  int identity = 0;
  auto reencoded = [&](TokenId id, std::string* shown) {
    const TokenId one[] = {id};
    absl::StatusOr<std::vector<TokenId>> again = tok.Encode(tok.Decode(one, false).value_or(""));
    EXPECT_TRUE(again.ok()) << id << ": " << again.status();
    std::string ids;
    for (TokenId t : again.value_or(std::vector<TokenId>{})) {
      if (!ids.empty()) ids += ',';
      ids += std::to_string(t);
    }
    ids += ";";
    if (again.ok() && again->size() == 1 && (*again)[0] == id) ++identity;
    *shown += "->" + ids;
    return ids;
  };
  EXPECT_EQ(CountBlocksUnlikeHf(vf.vocab_fnv_roundtrip, "encode(decode)", reencoded), 0);
  EXPECT_GT(identity, 45000);  // most ids come back as themselves
}

// Each id alone: Decode is the lossy form of its bytes, and partial characters show as U+FFFD.
TEST(TokenizerDecodeTest, EveryIdDecodesToItsLossyBytes) {
  const Tokenizer& tok = Neox();
  int partial = 0;
  for (TokenId id = 0; id < tok.vocab_size(); ++id) {
    absl::StatusOr<std::string_view> bytes = tok.TokenBytes(id);
    ASSERT_TRUE(bytes.ok());
    std::string want;
    utf8::AppendLossy(*bytes, &want);
    const TokenId one[] = {id};
    ASSERT_EQ(*tok.Decode(one), want) << id;
    if (utf8::FindInvalid(*bytes) != utf8::kAllValid) ++partial;
  }
  EXPECT_GT(partial, 100);  // byte tokens and pieces of multi-byte characters
}

TEST(TokenizerDecodeTest, DecodeOfEncodeIsNfcOfText) {
  int checked = 0;
  for (const Vector& v : Vectors().cases) {
    if (v.tokenizer != "neox") continue;
    absl::StatusOr<std::vector<TokenId>> ids = Neox().Encode(v.text);
    ASSERT_TRUE(ids.ok());
    absl::StatusOr<std::string> text = Neox().Decode(*ids);
    ASSERT_TRUE(text.ok());
    // NFC applies between added tokens, so a mark right after "<|endoftext|>" stays alone.
    if (v.text.find("<|") != std::string::npos) {
      EXPECT_EQ(*text, v.decoded);
      continue;
    }
    EXPECT_EQ(*text, Nfc(v.text)) << v.name << " " << Printable(v.text);
    ++checked;
  }
  EXPECT_GT(checked, 500);
}

TEST(TokenizerDecodeTest, SkipsSpecialTokensOnlyWhenAsked) {
  const Tokenizer& tok = Neox();
  const std::vector<TokenId> ids = {0, 12092, 1, 50276, 1533, 0};
  EXPECT_EQ(*tok.Decode(ids), "<|endoftext|>Hello<|padding|>   world<|endoftext|>");
  EXPECT_EQ(*tok.Decode(ids, true), "Hello   world");
  EXPECT_TRUE(tok.IsSpecial(0));
  EXPECT_TRUE(tok.IsSpecial(1));
  EXPECT_FALSE(tok.IsSpecial(50254));  // space runs are added but not special
  EXPECT_FALSE(tok.IsSpecial(12092));
  EXPECT_FALSE(tok.IsSpecial(-1));
  EXPECT_FALSE(tok.IsSpecial(50277));
}

TEST(TokenizerDecodeTest, OutOfRangeIdIsAnErrorNamingIt) {
  const Tokenizer& tok = Neox();
  for (TokenId bad : {50277, 50279, -1, 1 << 30}) {
    const TokenId ids[] = {12092, bad};
    absl::StatusOr<std::string> text = tok.Decode(ids);
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(text.status().message()), HasSubstr(std::to_string(bad)));
    EXPECT_FALSE(tok.TokenBytes(bad).ok());
    EXPECT_FALSE(tok.IdToToken(bad).has_value());
  }
  EXPECT_EQ(*tok.Decode(std::vector<TokenId>{}), "");
}

TEST(TokenizerDecodeTest, LossyDecodeOfSplitCharacters) {
  const Tokenizer& tok = Neox();
  const std::vector<TokenId> ids = *tok.Encode("😀");  // four byte tokens
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(*tok.Decode(ids), "😀");
  // Only the first byte(s): one U+FFFD for the incomplete character, as Rust's lossy decode.
  EXPECT_EQ(*tok.Decode(std::span(ids).first(1)), "\xEF\xBF\xBD");
  // The rest alone: stray continuation bytes, one U+FFFD each.
  const std::string tail = *tok.Decode(std::span(ids).subspan(1));
  EXPECT_EQ(tail.find_first_not_of("\xEF\xBF\xBD"), std::string::npos);
}

TEST(TokenizerDecodeTest, TokenLookup) {
  const Tokenizer& tok = Neox();
  EXPECT_EQ(tok.TokenToId("<|endoftext|>"), 0);
  EXPECT_EQ(tok.TokenToId("<|padding|>"), 1);
  EXPECT_EQ(tok.TokenToId("Hello"), 12092);
  EXPECT_EQ(tok.TokenToId("\xC4\xA0world"), 1533);  // "Ġworld"
  EXPECT_EQ(tok.TokenToId("  "), 50276);
  EXPECT_EQ(tok.TokenToId("no such token"), std::nullopt);
  EXPECT_EQ(tok.IdToToken(1533), "\xC4\xA0world");
  EXPECT_EQ(tok.IdToToken(50254), std::string(24, ' '));
  EXPECT_EQ(*tok.TokenBytes(1533), " world");
  EXPECT_EQ(*tok.TokenBytes(0), "<|endoftext|>");
  for (TokenId id = 0; id < tok.vocab_size(); ++id) {
    ASSERT_EQ(tok.TokenToId(*tok.IdToToken(id)), id);
  }
}

}  // namespace
}  // namespace mamba::engine::testing
