// The NFC fast path (normalize only around unstable characters) equals full NFC; the other
// normalizers behave as Hugging Face's.
#include "engine/tokenizer/normalizer.h"

#include <random>
#include <string>

#include "engine/tokenizer/utf8.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

std::string FastNfc(std::string_view text) {
  std::string out;
  normalization::AppendNfc(text, &out);
  return out;
}

std::string Cp(char32_t c) {
  std::string s;
  utf8::AppendCodePoint(c, &s);
  return s;
}

// HF's NFC modelled with plain utf8proc: characters HF does not know split the text, and each
// piece is normalized on its own.
std::string HfNfc(std::string_view text) {
  std::string out;
  size_t piece = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    if (normalization::IsInertForHf(utf8::DecodeValid(text, &pos))) {
      out += Nfc(text.substr(piece, start - piece));
      out += text.substr(start, pos - start);
      piece = pos;
    }
  }
  return out + Nfc(text.substr(piece));
}

// Every code point, after a starter and before combining marks, through both paths.
TEST(NormalizerTest, NfcFastPathEqualsFullNfcForEveryCodePoint) {
  int mismatches = 0;
  for (char32_t c = 1; c <= 0x10FFFF; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    std::string s = "a";
    s += Cp(c) + "\xCC\x81" + Cp(c) + "\xCC\xA3\xE1\x85\xA1" + Cp(c);
    const std::string want = HfNfc(s);
    if (FastNfc(s) != want && ++mismatches <= 5) {
      ADD_FAILURE() << "U+" << std::hex << static_cast<uint32_t>(c);
    }
    if (normalization::IsObviouslyNfc(s)) {
      ASSERT_EQ(s, want);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(NormalizerTest, NfcFastPathEqualsFullNfcOnRandomStrings) {
  const char32_t pool[] = {'a',    'e',     'A',    ' ',     0xE9,    0x301,   0x323,  0x308,
                           0x304,  0x1100,  0x1161, 0x11A8,  0xAC00,  0xAC01,  0x3099, 0x304B,
                           0x212B, 0x344,   0x958,  0xFB01,  0x1F600, 0x0B47,  0x0B3E, 0x0BC6,
                           0x0BD7, 0x1D15E, 0x0F73, 0x05B8,  0x0591,  0x4E2D,  0x0345, 0x1E0A,
                           0x1E0C, 0x1DF6,  0x1DFA, 0x11935, 0x11930, 0x1E4EC, 0x08D3};
  std::mt19937 rng(99);
  for (int trial = 0; trial < 50000; ++trial) {
    std::string s;
    for (int i = rng() % 10; i >= 0; --i) s += Cp(pool[rng() % std::size(pool)]);
    ASSERT_EQ(FastNfc(s), HfNfc(s)) << Printable(s);
    if (normalization::IsObviouslyNfc(s)) {
      ASSERT_EQ(s, HfNfc(s)) << Printable(s);
    }
  }
}

// What HF's (Unicode 9.0) NFC gives, checked with the npm package.
TEST(NormalizerTest, CharactersNewerThanUnicode9AreInert) {
  EXPECT_EQ(FastNfc("\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0"), "\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0");
  // a U+1DF6 U+0301 U+0323: U+1DF6 (ccc 232 since Unicode 10) is a starter for HF, so the marks
  // after it do not reach "a" (but still reorder among themselves).
  EXPECT_EQ(FastNfc("a\xE1\xB7\xB6\xCC\x81\xCC\xA3"), "a\xE1\xB7\xB6\xCC\xA3\xCC\x81");
  EXPECT_EQ(FastNfc("a\xCC\x81\xE1\xB7\xB6"), "\xC3\xA1\xE1\xB7\xB6");
}

TEST(NormalizerTest, SequenceAndSimpleNormalizers) {
  using Kind = NormalizerStep::Kind;
  std::string scratch;
  const Normalizer none;
  EXPECT_EQ(none.Normalize("Ab\xCC\x81", &scratch), "Ab\xCC\x81");

  const Normalizer lower({{Kind::kLowercase, "", ""}});
  EXPECT_EQ(lower.Normalize("ÀB İ ΣΑΣ", &scratch), "àb i\xCC\x87 σασ");  // no final sigma

  const Normalizer nfd_lower({{Kind::kNfd, "", ""}, {Kind::kLowercase, "", ""}});
  EXPECT_EQ(nfd_lower.Normalize("É", &scratch), "e\xCC\x81");

  const Normalizer nfkc({{Kind::kNfkc, "", ""}});
  EXPECT_EQ(nfkc.Normalize("ﬁ①Ａ", &scratch), "fi1A");

  const Normalizer prepend({{Kind::kPrepend, "\xE2\x96\x81", ""}, {Kind::kNfc, "", ""}});
  EXPECT_EQ(prepend.Normalize("e\xCC\x81", &scratch), "\xE2\x96\x81\xC3\xA9");

  // Replace of a literal: non-overlapping occurrences, left to right.
  const Normalizer replace({{Kind::kReplace, " ", "\xE2\x96\x81"}, {Kind::kReplace, "aa", "b"}});
  EXPECT_EQ(replace.Normalize("a  aaa", &scratch),
            "a\xE2\x96\x81\xE2\x96\x81"
            "ba");
  EXPECT_EQ(replace.Normalize("xyz", &scratch), "xyz");
  EXPECT_EQ(prepend.Normalize("", &scratch), "");  // HF prepends only to non-empty text
}

}  // namespace
}  // namespace mamba::engine::testing
