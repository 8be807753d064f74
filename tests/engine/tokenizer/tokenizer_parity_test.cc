// Exact parity with Hugging Face `tokenizers`: every reference vector (data/vectors.jsonl) must
// encode to the same ids and decode to the same text, in every internal configuration.
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

using ::testing::ElementsAre;

TEST(TokenizerParityTest, HasEnoughVectors) {
  std::map<std::string, int> per_tokenizer;
  for (const Vector& v : Vectors().cases) ++per_tokenizer[v.tokenizer];
  EXPECT_GE(per_tokenizer["neox"], 700);
  EXPECT_GE(per_tokenizer.size(), 10u);
  bool has_long = false;
  for (const Vector& v : Vectors().cases) has_long |= v.text.size() >= 100000;
  EXPECT_TRUE(has_long) << "the ~100 KB document is missing";
}

TEST(TokenizerParityTest, KnownIds) {
  const Tokenizer& tok = Neox();
  EXPECT_EQ(tok.vocab_size(), 50277);
  EXPECT_THAT(*tok.Encode("  Hello"), ElementsAre(50276, 12092));
  EXPECT_THAT(*tok.Encode("Hello world<|endoftext|>"), ElementsAre(12092, 1533, 0));
  EXPECT_THAT(*tok.Encode(""), ElementsAre());
}

// Encodes every vector with `tok_for` and reports the first few mismatches.
template <typename TokFor>
void ExpectAllEncode(TokFor tok_for, const std::string& label) {
  int failures = 0;
  for (const Vector& v : Vectors().cases) {
    absl::StatusOr<std::vector<TokenId>> ids = tok_for(v).Encode(v.text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    if (*ids != v.ids && ++failures <= 10) {
      ADD_FAILURE() << label << " [" << v.tokenizer << "/" << v.name << "] " << Printable(v.text)
                    << "\n  got:  " << ::testing::PrintToString(*ids)
                    << "\n  want: " << ::testing::PrintToString(v.ids);
    }
  }
  EXPECT_EQ(failures, 0) << label;
}

TEST(TokenizerParityTest, EncodeMatchesHuggingFace) {
  ExpectAllEncode([](const Vector& v) -> const Tokenizer& { return TokenizerNamed(v.tokenizer); },
                  "default");
}

TEST(TokenizerParityTest, DecodeMatchesHuggingFace) {
  int failures = 0;
  for (const Vector& v : Vectors().cases) {
    const Tokenizer& tok = TokenizerNamed(v.tokenizer);
    absl::StatusOr<std::string> text = tok.Decode(v.ids);
    absl::StatusOr<std::string> skip = tok.Decode(v.ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(text.ok() && skip.ok()) << text.status() << skip.status();
    if ((*text != v.decoded || *skip != v.decoded_skip) && ++failures <= 10) {
      ADD_FAILURE() << "[" << v.tokenizer << "/" << v.name << "] " << Printable(v.text)
                    << "\n  decode got " << Printable(*text) << " want " << Printable(v.decoded)
                    << "\n  skip got " << Printable(*skip) << " want " << Printable(v.decoded_skip);
    }
  }
  EXPECT_EQ(failures, 0);
}

// SentencePiece-style decoding of id sequences no encoding gives: byte-fallback runs that are
// (not) valid UTF-8, special tokens inside runs, the Strip of a leading space.
TEST(TokenizerParityTest, DecodeOnlyVectorsMatchHuggingFace) {
  EXPECT_GE(Vectors().decodes.size(), 400u);
  int failures = 0;
  for (const Vector& v : Vectors().decodes) {
    const Tokenizer& tok = TokenizerNamed(v.tokenizer);
    absl::StatusOr<std::string> text = tok.Decode(v.ids);
    absl::StatusOr<std::string> skip = tok.Decode(v.ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(text.ok() && skip.ok()) << text.status() << skip.status();
    if ((*text != v.decoded || *skip != v.decoded_skip) && ++failures <= 10) {
      ADD_FAILURE() << "[" << v.tokenizer << "] " << ::testing::PrintToString(v.ids)
                    << "\n  decode got " << Printable(*text) << " want " << Printable(v.decoded)
                    << "\n  skip got " << Printable(*skip) << " want " << Printable(v.decoded_skip);
    }
  }
  EXPECT_EQ(failures, 0);
}

// A TemplateProcessing post_processor: EncodeWithSpecialTokens is HF's encode with
// add_special_tokens=True; Encode (add_special_tokens=False) is unaffected by it.
TEST(TokenizerParityTest, EncodeWithSpecialTokensMatchesHuggingFace) {
  int checked = 0;
  for (const Vector& v : Vectors().cases) {
    if (!v.ids_special) continue;
    ++checked;
    absl::StatusOr<std::vector<TokenId>> ids =
        TokenizerNamed(v.tokenizer).EncodeWithSpecialTokens(v.text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, *v.ids_special) << v.tokenizer << " " << Printable(v.text);
  }
  EXPECT_GE(checked, 300);
  EXPECT_EQ(*Neox().EncodeWithSpecialTokens("Hello world"), *Neox().Encode("Hello world"));
}

// The word cache and the two merge algorithms must never change a result.
TEST(TokenizerParityTest, EveryInternalConfigurationMatches) {
  const std::string json = ReadFileOrDie(NeoxJsonPath());
  for (const TokenizerOptions& options :
       {TokenizerOptions{.enable_word_cache = false, .linear_merge_max_symbols = 0},
        TokenizerOptions{.enable_word_cache = false, .linear_merge_max_symbols = 64},
        TokenizerOptions{.enable_word_cache = true, .linear_merge_max_symbols = 1}}) {
    auto tok = Tokenizer::FromJson(json, options);
    ASSERT_TRUE(tok.ok()) << tok.status();
    const std::string label = absl::StrCat("cache=", options.enable_word_cache,
                                           " linear_max=", options.linear_merge_max_symbols);
    // Twice, so that the second pass runs from a warm cache.
    for (int pass = 0; pass < 2; ++pass) {
      int failures = 0;
      for (const Vector& v : Vectors().cases) {
        if (v.tokenizer != "neox") continue;
        absl::StatusOr<std::vector<TokenId>> ids = (*tok)->Encode(v.text);
        ASSERT_TRUE(ids.ok()) << ids.status();
        if (*ids != v.ids && ++failures <= 5) {
          ADD_FAILURE() << label << " [" << v.name << "] " << Printable(v.text);
        }
      }
      EXPECT_EQ(failures, 0) << label;
    }
  }
}

TEST(TokenizerParityTest, EncodeBatchMatchesEncode) {
  std::vector<std::string> texts;
  std::vector<std::vector<TokenId>> want;
  for (const Vector& v : Vectors().cases) {
    if (v.tokenizer != "neox") continue;
    texts.push_back(v.text);
    want.push_back(v.ids);
  }
  for (int threads : {0, 1, 2, 4, 16}) {
    absl::StatusOr<std::vector<std::vector<TokenId>>> got = Neox().EncodeBatch(texts, threads);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(*got == want) << "threads=" << threads;
  }
  EXPECT_TRUE(Neox().EncodeBatch({}, 4)->empty());
}

TEST(TokenizerParityTest, EncodeBatchReportsTheFailingText) {
  const std::vector<std::string> texts = {"fine", "also fine", "bad \xFF byte"};
  absl::StatusOr<std::vector<std::vector<TokenId>>> got = Neox().EncodeBatch(texts, 2);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(got.status().message()), ::testing::HasSubstr("texts[2]"));
  EXPECT_THAT(std::string(got.status().message()), ::testing::HasSubstr("byte offset 4"));
}

// Many threads encoding at once share the tokenizer (per-thread caches and scratch).
TEST(TokenizerParityTest, ConcurrentEncodeIsConsistent) {
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &failures] {
      const auto& cases = Vectors().cases;
      for (size_t i = t; i < cases.size(); i += 2) {
        if (cases[i].tokenizer != "neox") continue;
        if (*Neox().Encode(cases[i].text) != cases[i].ids) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(failures, ElementsAre(0, 0, 0, 0));
}

}  // namespace
}  // namespace mamba::engine::testing
