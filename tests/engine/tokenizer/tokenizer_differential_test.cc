// Optional differential tests against the real Hugging Face library (npm package `tokenizers`)
// on random strings and on every Unicode code point (whole pipeline, and the Unicode tables of
// pre-tokenizer and normalizer one by one). Skipped unless
// MAMBA_TOKENIZERS_NODE_PATH names a node_modules folder holding `tokenizers` and `node` is on
// PATH, so CI never depends on it:
//   (cd /tmp/tokref && npm install tokenizers@0.23.2)
//   MAMBA_TOKENIZERS_NODE_PATH=/tmp/tokref/node_modules MAMBA_SOURCE_DIR=$PWD
//       build/bin/tokenizer_test --gtest_filter='TokenizerDifferential*'
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/utf8.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

using Json = nlohmann::json;

struct Reference {
  std::vector<TokenId> ids;
  std::string decoded;
};

// Runs data/encode_jsonl.js over `texts`; empty (with a test failure) if node fails.
std::vector<Reference> EncodeWithHuggingFace(const std::vector<std::string>& texts) {
  const std::string dir = ::testing::TempDir();
  const std::string in_path = dir + "/tokenizer_diff_in.jsonl";
  const std::string out_path = dir + "/tokenizer_diff_out.jsonl";
  {
    std::ofstream in(in_path, std::ios::binary);
    for (const std::string& t : texts) in << Json(t).dump() << "\n";
  }
  const std::string command =
      absl::StrCat("NODE_PATH='", std::getenv("MAMBA_TOKENIZERS_NODE_PATH"), "' node '",
                   SourceDir(), "/tests/engine/tokenizer/data/encode_jsonl.js' '", NeoxJsonPath(),
                   "' '", in_path, "' '", out_path, "'");
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << "failed: " << command;
    return {};
  }
  std::vector<Reference> refs;
  std::istringstream out(ReadFileOrDie(out_path));
  for (std::string line; std::getline(out, line);) {
    const Json j = Json::parse(line);
    refs.push_back({j[0].get<std::vector<TokenId>>(), j[1].get<std::string>()});
  }
  return refs;
}

void CompareWithHuggingFace(const std::vector<std::string>& texts) {
  const std::vector<Reference> refs = EncodeWithHuggingFace(texts);
  ASSERT_EQ(refs.size(), texts.size());
  int failures = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<TokenId>> ids = Neox().Encode(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    const bool same = *ids == refs[i].ids && *Neox().Decode(*ids) == refs[i].decoded;
    if (!same && ++failures <= 20) {
      ADD_FAILURE() << Printable(texts[i]) << "\n  got:  " << ::testing::PrintToString(*ids)
                    << "\n  want: " << ::testing::PrintToString(refs[i].ids);
    }
  }
  EXPECT_EQ(failures, 0) << "of " << texts.size();
}

bool Enabled() { return std::getenv("MAMBA_TOKENIZERS_NODE_PATH") != nullptr; }

std::string Cp(char32_t c) {
  std::string s;
  utf8::AppendCodePoint(c, &s);
  return s;
}

TEST(TokenizerDifferentialTest, RandomStrings) {
  if (!Enabled()) GTEST_SKIP() << "set MAMBA_TOKENIZERS_NODE_PATH to compare with HF";
  std::mt19937 rng(2024);
  // Mostly from interesting ranges, sometimes any scalar value.
  const std::pair<char32_t, char32_t> ranges[] = {
      {0x20, 0x7E},       {0x09, 0x0D},       {0x20, 0x20},      {0xA0, 0x17F},
      {0x300, 0x36F},     {0x370, 0x4FF},     {0x590, 0x6FF},    {0x900, 0x97F},
      {0xE00, 0xE7F},     {0x1100, 0x11FF},   {0x2000, 0x206F},  {0x3000, 0x30FF},
      {0x4E00, 0x4E80},   {0xAC00, 0xAC40},   {0xFE00, 0xFFFD},  {0x1F300, 0x1F64F},
      {0x1F900, 0x1F9FF}, {0x1D400, 0x1D4FF}, {0xE0000, 0xE007F}};
  std::vector<std::string> texts;
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    for (int n = 1 + rng() % 24; n > 0; --n) {
      char32_t c;
      if (rng() % 10 == 0) {
        do c = rng() % 0x110000;
        while (c >= 0xD800 && c <= 0xDFFF);
      } else {
        const auto& [lo, hi] = ranges[rng() % std::size(ranges)];
        c = lo + rng() % (hi - lo + 1);
      }
      s += rng() % 20 == 0 ? std::string(rng() % 2 ? "<|endoftext|>" : "'s") : Cp(c);
    }
    texts.push_back(std::move(s));
  }
  CompareWithHuggingFace(texts);
}

// Every code point in contexts that exercise the split pattern (\p{L}, \p{N}, \s), NFC
// (composition with a following mark) and byte-level BPE.
TEST(TokenizerDifferentialTest, EveryCodePoint) {
  if (!Enabled()) GTEST_SKIP() << "set MAMBA_TOKENIZERS_NODE_PATH to compare with HF";
  std::vector<std::string> texts;
  std::string text;
  int in_text = 0;
  for (char32_t c = 1; c <= 0x10FFFF; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const std::string s = Cp(c);
    text += "x" + s + "'s " + s + "! " + s + "1" + s + s + " " + s + "\t" + s + "  a" + s +
            "\xCC\x81" + s + "\xCC\xA3" + s + "\n";
    if (++in_text == 16) {
      texts.push_back(std::move(text));
      text.clear();
      in_text = 0;
    }
  }
  if (!text.empty()) texts.push_back(text);
  CompareWithHuggingFace(texts);
}

// Mismatching code points, gathered into ranges and printed in the form of the tables in
// pre_tokenizer.cc and normalizer.cc.
class RangeReport {
 public:
  void Add(const std::string& what, char32_t c) {
    auto& ranges = ranges_[what];
    if (!ranges.empty() && ranges.back().second + 1 == c) {
      ranges.back().second = c;
    } else {
      ranges.push_back({c, c});
    }
  }
  void ExpectEmpty() const {
    for (const auto& [what, ranges] : ranges_) {
      std::string list;
      for (const auto& [lo, hi] : ranges) {
        absl::StrAppend(&list, "{0x", absl::Hex(lo, absl::kZeroPad4), ", 0x",
                        absl::Hex(hi, absl::kZeroPad4), "}, ");
      }
      ADD_FAILURE() << what << ": " << list;
    }
  }

 private:
  std::map<std::string, std::vector<std::pair<char32_t, char32_t>>> ranges_;
};

// Our split-pattern class of one code point, probed as hf_unicode_probe.js probes HF.
char OurClass(const ByteLevelPreTokenizer& pre, const std::string& c) {
  std::string scratch;
  std::vector<WordSpan> words;
  auto splits = [&](const std::string& text) {
    EXPECT_TRUE(pre.Split(text, &scratch, &words).ok());
    return words.size();
  };
  if (splits("x" + c) == 1) return 'L';
  if (splits("1" + c) == 1) return 'N';
  if (splits("!" + c) == 1) return 'O';
  return 'S';
}

// Compares the pieces of the pipeline that depend on Unicode data, code point by code point,
// and prints any difference as table entries.
TEST(TokenizerDifferentialTest, PerCodePointClassesAndNfc) {
  if (!Enabled()) GTEST_SKIP() << "set MAMBA_TOKENIZERS_NODE_PATH to compare with HF";
  const std::string out_path = ::testing::TempDir() + "/tokenizer_unicode_probe.txt";
  const std::string command = absl::StrCat(
      "NODE_PATH='", std::getenv("MAMBA_TOKENIZERS_NODE_PATH"), "' node '", SourceDir(),
      "/tests/engine/tokenizer/data/hf_unicode_probe.js' '", NeoxJsonPath(), "' '", out_path, "'");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  auto pre = ByteLevelPreTokenizer::Create({});
  ASSERT_TRUE(pre.ok());
  const Normalizer nfc({{NormalizerStep::Kind::kNfc, "", ""}});
  RangeReport report;
  std::ifstream in(out_path);
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const size_t space1 = line.find(' ');
    const char32_t c = std::stoul(line.substr(0, space1), nullptr, 16);
    const char hf_class = line[space1 + 1];
    const std::string hf_nfc = Json::parse(line.substr(space1 + 3)).get<std::string>();
    const std::string s = Cp(c);
    const char our_class = OurClass(**pre, s);
    if (our_class != hf_class) {
      report.Add(absl::StrCat("class ", std::string(1, our_class), " here but ",
                              std::string(1, hf_class), " in HF (kExtraLetters/kExtraNumbers)"),
                 c);
    }
    std::string scratch;
    const std::string probe =
        "a" + s + "\xCC\x81" + s + "\xCC\xA3" + s + "\xE1\x85\xA1" + s + "\xCC\x80";
    if (nfc.Normalize(probe, &scratch) != hf_nfc) report.Add("NFC differs (kInertForHf)", c);
  }
  EXPECT_EQ(lines, 0x110000 - 1 - 0x800);
  report.ExpectEmpty();
}

}  // namespace
}  // namespace mamba::engine::testing
