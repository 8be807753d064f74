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

}  // namespace
}  // namespace mamba::client
