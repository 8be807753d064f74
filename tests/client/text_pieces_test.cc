// `mamba-client score` tokenizes long documents in pieces split at safe line starts: the pieces
// cover the text, respect the size limit where a split exists, and the GPT-NeoX tokenizer encodes
// them to exactly the tokens of the whole text.
#include "client/text_pieces.h"

#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace mamba::client {
namespace {

TEST(TextPiecesTest, SafeSplits) {
  EXPECT_TRUE(IsSafeSplit("ab\ncd", 3));
  EXPECT_FALSE(IsSafeSplit("ab\ncd", 2));    // not after a newline
  EXPECT_FALSE(IsSafeSplit("ab \ncd", 4));   // a run of two whitespace characters
  EXPECT_FALSE(IsSafeSplit("ab\n\ncd", 4));  // the same
  EXPECT_FALSE(IsSafeSplit("ab\n cd", 3));   // the next line starts with a space
  EXPECT_FALSE(IsSafeSplit("ab\n", 3));      // the end
  EXPECT_FALSE(IsSafeSplit("\ncd", 1));      // nothing before the newline
  EXPECT_TRUE(IsSafeSplit("a.\n'sd", 3));
}

TEST(TextPiecesTest, PiecesCoverTheTextWithinTheLimit) {
  EXPECT_TRUE(SplitAtSafeLineStarts("", 10).empty());
  const std::string text = "one\ntwo\nthree\nfour five six seven\neight\n";
  for (size_t max = 1; max <= text.size() + 1; ++max) {
    const std::vector<std::string_view> pieces = SplitAtSafeLineStarts(text, max);
    std::string joined;
    size_t at = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      ASSERT_FALSE(pieces[i].empty());
      joined += pieces[i];
      at += pieces[i].size();
      if (i + 1 < pieces.size()) {
        EXPECT_TRUE(IsSafeSplit(text, at)) << "max " << max << " at " << at;
      }
    }
    EXPECT_EQ(joined, text);
    if (max >= 19) {  // the longest line, "four five six seven\n", is 20 bytes
      for (std::string_view p : pieces) {
        EXPECT_LE(p.size(), std::max<size_t>(max, 20));
      }
    }
    if (max >= text.size()) {
      EXPECT_EQ(pieces.size(), 1u);
    }
  }
  // No safe split at all: one piece.
  EXPECT_EQ(SplitAtSafeLineStarts("a b c d e f g h", 3).size(), 1u);
}

// Lines of every kind a pre-tokenizer treats differently at their start: words, contractions,
// digits, punctuation, leading spaces and tabs, blank lines, CRLF, runs of spaces before a
// newline, multi-byte letters and symbols.
std::string MixedText(uint32_t seed, int lines) {
  static const char* kStarts[] = {
      "And", "'s",     "'ll be", "12 345",           "(",  "\"Quote\"", " lead", "\t",
      "",    "é café", "中文",   "\xF0\x9F\x98\x80", "--", "x  ",       "\r",    "<|endoftext|>"};
  static const char* kBodies[] = {" it came to pass,", " unto him.", "", "  ", " 42", ";:", "ß"};
  std::mt19937 rng(seed);
  std::string s;
  for (int i = 0; i < lines; ++i) {
    s += kStarts[rng() % std::size(kStarts)];
    s += kBodies[rng() % std::size(kBodies)];
    s += (rng() % 5 == 0) ? " \n" : "\n";
  }
  return s;
}

TEST(TextPiecesTest, TheNeoxTokenizerEncodesThePiecesAsTheWhole) {
  auto tok = engine::Tokenizer::FromFile(::mamba::testing::SourceDir() /
                                         "models/gpt-neox-20b/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    const std::string text = MixedText(seed, 60);
    const std::vector<engine::TokenId> whole = (*tok)->Encode(text).value();
    for (size_t max : {7u, 40u, 200u}) {
      std::vector<engine::TokenId> joined;
      const std::vector<std::string_view> pieces = SplitAtSafeLineStarts(text, max);
      for (std::string_view p : pieces) {
        const std::vector<engine::TokenId> t = (*tok)->Encode(std::string(p)).value();
        joined.insert(joined.end(), t.begin(), t.end());
      }
      EXPECT_GT(pieces.size(), 1u);
      EXPECT_EQ(joined, whole) << "seed " << seed << " max " << max;
    }
  }
}

// TokenizeInPieces with the NeoX tokenizer: several calls, the whole text's tokens. With a
// tokenizer that adds a BOS to every call (as SentencePiece templates do) the check at the first
// split fails and the text goes whole in one call; an error of the tokenizer comes back as is.
TEST(TextPiecesTest, TokenizeInPiecesChecksEverySplit) {
  auto tok = engine::Tokenizer::FromFile(::mamba::testing::SourceDir() /
                                         "models/gpt-neox-20b/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = MixedText(7, 80);
  const std::vector<engine::TokenId> whole = (*tok)->Encode(text).value();
  std::vector<std::string> calls;
  auto neox = [&](std::string_view s) -> absl::StatusOr<std::vector<int32_t>> {
    calls.emplace_back(s);
    return (*tok)->Encode(std::string(s));
  };
  auto got = TokenizeInPieces(text, 100, neox);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, whole);
  EXPECT_GT(calls.size(), 4u);
  for (const std::string& c : calls) EXPECT_LT(c.size(), text.size());

  calls.clear();
  auto with_bos = [&](std::string_view s) -> absl::StatusOr<std::vector<int32_t>> {
    calls.emplace_back(s);
    absl::StatusOr<std::vector<int32_t>> e = (*tok)->Encode(std::string(s));
    if (!e.ok()) return e.status();
    e->insert(e->begin(), -1);
    return e;
  };
  got = TokenizeInPieces(text, 100, with_bos);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_FALSE(got->empty());
  EXPECT_EQ((*got)[0], -1);
  EXPECT_EQ(std::vector<int32_t>(got->begin() + 1, got->end()), whole);
  EXPECT_EQ(calls.back(), text);  // the last call: the whole text
  EXPECT_EQ(calls.size(), 4u);    // the first split's three checks, then the text

  // Short texts go in one call; errors pass through.
  calls.clear();
  const absl::StatusOr<std::vector<int32_t>> short_text =
      TokenizeInPieces("In the beginning", 100, neox);
  ASSERT_TRUE(short_text.ok()) << short_text.status();
  EXPECT_EQ(*short_text, (*tok)->Encode("In the beginning").value());
  EXPECT_EQ(calls.size(), 1u);
  auto failing = [](std::string_view) -> absl::StatusOr<std::vector<int32_t>> {
    return absl::UnavailableError("server gone");
  };
  EXPECT_EQ(TokenizeInPieces(text, 100, failing).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace mamba::client
