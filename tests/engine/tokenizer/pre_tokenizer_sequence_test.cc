// The general pre-tokenizer pipeline: HF's character classes and the words Falcon's sequence
// gives (the ids themselves are checked against HF in tokenizer_parity_test.cc).
#include "engine/tokenizer/pre_tokenizer_sequence.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

using ::testing::ElementsAre;

TEST(HfCharsTest, PunctuationIsHuggingFaces) {
  for (char32_t c :
       {U'!', U'.', U'$', U'+', U'^', U'`', U'~', U'¡', U'«', U'—', U'…', U'、', U'\x166D'})
    EXPECT_TRUE(hf_chars::IsPunctuation(c)) << static_cast<uint32_t>(c);
  // U+2E43.. are P* since Unicode 10+, newer than HF's table; '©' is a symbol.
  for (char32_t c : {U'a', U'1', U' ', U'©', U'\x2E43', U'\x2E52', U'\x061D', U'😀'})
    EXPECT_FALSE(hf_chars::IsPunctuation(c)) << static_cast<uint32_t>(c);
}

TEST(HfCharsTest, NumericIsRustsIsNumeric) {
  for (char32_t c : {U'0', U'9', U'²', U'½', U'Ⅻ', U'①', U'٣', U'１', U'\x10D40', U'\x1E5F1'})
    EXPECT_TRUE(hf_chars::IsNumeric(c)) << static_cast<uint32_t>(c);
  for (char32_t c : {U'a', U'.', U'-', U'¿', U'\x10FFFF'})
    EXPECT_FALSE(hf_chars::IsNumeric(c)) << static_cast<uint32_t>(c);
}

std::vector<PreTokenizerStep> Falcon() {
  using Kind = PreTokenizerStep::Kind;
  std::vector<PreTokenizerStep> steps(4);
  steps[0].kind = Kind::kPunctuation;
  steps[0].behavior = SplitBehavior::kContiguous;
  steps[1].kind = Kind::kByteLevel;
  steps[2].kind = Kind::kDigits;
  steps[3].kind = Kind::kSplitRegex;
  steps[3].pattern = "[0-9][0-9][0-9]";
  return steps;
}

std::vector<std::string> Words(const SequencePreTokenizer& pre, std::string_view text) {
  std::vector<std::string> words;
  EXPECT_TRUE(pre.Split(text, &words).ok());
  return words;
}

TEST(SequencePreTokenizerTest, FalconSplits) {
  auto pre = SequencePreTokenizer::Create(Falcon());
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_THAT(Words(**pre, "Hello, world!!"), ElementsAre("Hello", ",", " world", "!!"));
  EXPECT_THAT(Words(**pre, "x1234567 y"), ElementsAre("x", "123", "456", "7", " y"));
  // After ByteLevel, the 0xBC byte of "ü" is the character '¼', which is numeric.
  EXPECT_THAT(Words(**pre, "über"), ElementsAre("\xC3", "\xBC", "ber"));
  EXPECT_THAT(Words(**pre, ""), ElementsAre());
}

TEST(SequencePreTokenizerTest, NeedsByteLevel) {
  std::vector<PreTokenizerStep> steps(1);
  steps[0].kind = PreTokenizerStep::Kind::kDigits;
  auto pre = SequencePreTokenizer::Create(steps);
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace mamba::engine
