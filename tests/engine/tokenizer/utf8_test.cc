// UTF-8 validation and Rust-compatible lossy decoding; invalid input text is rejected by Encode
// with the byte offset.
#include "engine/tokenizer/utf8.h"

#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

using ::testing::HasSubstr;

std::string Lossy(std::string_view bytes) {
  std::string out;
  utf8::AppendLossy(bytes, &out);
  return out;
}

constexpr const char* kR = "\xEF\xBF\xBD";  // U+FFFD

TEST(Utf8Test, FindInvalid) {
  EXPECT_EQ(utf8::FindInvalid(""), utf8::kAllValid);
  EXPECT_EQ(utf8::FindInvalid("plain ascii"), utf8::kAllValid);
  EXPECT_EQ(utf8::FindInvalid("é中😀\xF4\x8F\xBF\xBF"), utf8::kAllValid);  // U+10FFFF is fine
  EXPECT_EQ(utf8::FindInvalid("ab\x80"), 2u);                             // stray continuation
  EXPECT_EQ(utf8::FindInvalid("\xC0\x80"), 0u);                           // overlong NUL
  EXPECT_EQ(utf8::FindInvalid("x\xE0\x80\x80"), 1u);                      // overlong
  EXPECT_EQ(utf8::FindInvalid("xy\xED\xA0\x80"), 2u);                     // surrogate U+D800
  EXPECT_EQ(utf8::FindInvalid("\xF4\x90\x80\x80"), 0u);                   // above U+10FFFF
  EXPECT_EQ(utf8::FindInvalid("abc\xF5"), 3u);
  EXPECT_EQ(utf8::FindInvalid("abcdefgh\xE4\xB8"), 8u);       // truncated at end
  EXPECT_EQ(utf8::FindInvalid("0123456789abcdef\xFF"), 16u);  // after a fast run
}

// Expected strings are what Rust's String::from_utf8_lossy returns.
TEST(Utf8Test, LossyMatchesRust) {
  EXPECT_EQ(Lossy("hello"), "hello");
  EXPECT_EQ(Lossy("a\x80z"), std::string("a") + kR + "z");
  EXPECT_EQ(Lossy("\xF0\x90\x80"), kR);  // incomplete: one U+FFFD
  EXPECT_EQ(Lossy("\xF0\x90\x80z"), std::string(kR) + "z");
  EXPECT_EQ(Lossy("\xE0\x80"), std::string(kR) + kR);           // E0 80 is not a prefix
  EXPECT_EQ(Lossy("\xED\xA0\x80"), std::string(kR) + kR + kR);  // surrogates: 3 replacements
  EXPECT_EQ(Lossy("\xC2"), kR);
  EXPECT_EQ(Lossy("\xC2\xC2\xA9"), std::string(kR) + "©");
  EXPECT_EQ(Lossy("\xFF\xFE"), std::string(kR) + kR);
  EXPECT_EQ(Lossy("\xF4\x90"), std::string(kR) + kR);  // F4 90 exceeds U+10FFFF
  EXPECT_EQ(Lossy("\xE4\xB8\xAD\xE4\xB8"), std::string("中") + kR);
}

TEST(Utf8Test, CompletePrefixKeepsOnlyAnUnfinishedCharacter) {
  std::string out;
  EXPECT_EQ(utf8::AppendLossyCompletePrefix("ab\xE4\xB8", &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(utf8::AppendLossyCompletePrefix("ab\xE4\x41", &out), 4u);  // can never complete
  EXPECT_EQ(out, std::string("ab") + kR + "A");
  out.clear();
  EXPECT_EQ(utf8::AppendLossyCompletePrefix("\xF0\x9F\x98", &out), 0u);
  EXPECT_EQ(out, "");
}

// Splitting bytes anywhere and decoding the pieces with the complete-prefix rule gives the
// same text as decoding them at once.
TEST(Utf8Test, PiecewiseLossyEqualsWholeLossy) {
  std::mt19937 rng(7);
  const std::string alphabet[] = {"a",    "\x80", "\xBF", "\xC2", "\xC3\xA9", "\xE4",
                                  "\xB8", "\xAD", "\xED", "\xA0", "\xF0",     "\x9F",
                                  "\x98", "\xF4", "\x90", "\xFF", "\xE0"};
  for (int trial = 0; trial < 20000; ++trial) {
    std::string bytes;
    for (int i = rng() % 12; i >= 0; --i) bytes += alphabet[rng() % std::size(alphabet)];
    std::string pieces;
    std::string pending;
    for (size_t i = 0; i < bytes.size();) {
      const size_t n = 1 + rng() % 3;
      pending += bytes.substr(i, n);
      i += n;
      pending.erase(0, utf8::AppendLossyCompletePrefix(pending, &pieces));
    }
    utf8::AppendLossy(pending, &pieces);
    ASSERT_EQ(pieces, Lossy(bytes)) << Printable(bytes);
  }
}

TEST(Utf8Test, EncodeRejectsInvalidUtf8WithTheByteOffset) {
  struct Case {
    std::string text;
    size_t offset;
  };
  for (const Case& c : {Case{"\xFF", 0}, Case{"hello \x80 world", 6}, Case{"caf\xC3", 3},
                        Case{"ok<|endoftext|>\xED\xA0\x80", 15}, Case{"日本\xE8\xAA", 6}}) {
    absl::StatusOr<std::vector<TokenId>> ids = Neox().Encode(c.text);
    ASSERT_FALSE(ids.ok()) << Printable(c.text);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(ids.status().message()),
                HasSubstr("byte offset " + std::to_string(c.offset)));
  }
  EXPECT_TRUE(Neox().Encode(std::string("nul\0inside", 10)).ok());  // NUL is valid UTF-8
}

}  // namespace
}  // namespace mamba::engine::testing
