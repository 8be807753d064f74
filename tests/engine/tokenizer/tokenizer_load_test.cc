// Loading: malformed files and unsupported features fail with an error naming the problem;
// merges in pair form load identically to the string form.
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/tokenizer/tokenizer_test_util.h"

namespace mamba::engine::testing {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

// The tiny byte-level tokenizer of vectors.jsonl, as a mutable JSON object.
Json TinyJson() { return Json::parse(Vectors().tokenizer_json.at("tiny_unk")); }

absl::Status LoadStatus(const Json& json) { return Tokenizer::FromJson(json.dump()).status(); }

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& needle) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(needle)) << status;
}

TEST(TokenizerLoadTest, TinyTokenizerLoads) { EXPECT_TRUE(LoadStatus(TinyJson()).ok()); }

TEST(TokenizerLoadTest, BadJsonIsInvalidArgument) {
  for (const char* text : {"", "{", "not json", "[1, 2", "{\"model\": }"}) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(text);
    ExpectError(tok.status(), absl::StatusCode::kInvalidArgument, "malformed tokenizer.json");
  }
  ExpectError(Tokenizer::FromJson("[]").status(), absl::StatusCode::kInvalidArgument,
              "not an object");
  ExpectError(Tokenizer::FromJson("{\"model\": \"\xFF\"}").status(),
              absl::StatusCode::kInvalidArgument, "UTF-8");
}

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  ExpectError(Tokenizer::FromFile("/nonexistent/tokenizer.json").status(),
              absl::StatusCode::kNotFound, "/nonexistent/tokenizer.json");
}

struct Unsupported {
  const char* feature;  // what the message must name
  const char* pointer;  // JSON pointer of the member to replace
  const char* value;    // its new value, as JSON
};

TEST(TokenizerLoadTest, UnsupportedFeaturesAreNamed) {
  const Unsupported cases[] = {
      {"WordPiece", "/model/type", R"("WordPiece")"},
      {"Unigram", "/model/type", R"("Unigram")"},
      {"BertNormalizer", "/normalizer", R"({"type": "BertNormalizer"})"},
      {"Replace", "/normalizer",
       R"({"type": "Sequence", "normalizers": [{"type": "NFC"},
           {"type": "Replace", "pattern": {"Regex": " +"}, "content": " "}]})"},
      {"Whitespace", "/pre_tokenizer", R"({"type": "Whitespace"})"},
      {"WhitespaceSplit", "/pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"},
           {"type": "ByteLevel", "add_prefix_space": false}]})"},
      {"Metaspace", "/pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [{"type": "Sequence", "pretokenizers":
           [{"type": "Metaspace"}]}, {"type": "ByteLevel", "add_prefix_space": false}]})"},
      {"without ByteLevel", "/pre_tokenizer", R"({"type": "Digits"})"},
      {"Split regex with \\w", "/pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": false},
           {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"}]})"},
      {"without ByteLevel", "/pre_tokenizer",
       R"({"type": "Sequence", "pretokenizers": [{"type": "Punctuation"}]})"},
      {"no pre_tokenizer", "/pre_tokenizer", "null"},
      // A SentencePiece-style decoder with a ByteLevel pre-tokenizer.
      {"\"ByteLevel\" without a ByteLevel decoder", "/decoder", R"({"type": "Metaspace"})"},
      {"no decoder", "/decoder", "null"},
      // SentencePiece-style decoders: only Sequence[Replace*, ByteFallback, Fuse, Strip].
      {"Strip", "/decoder",
       R"({"type": "Sequence", "decoders": [{"type": "Strip", "content": " ", "start": 1,
           "stop": 0}, {"type": "Fuse"}]})"},
      {"stop > 0", "/decoder",
       R"({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Strip", "content": " ",
           "start": 1, "stop": 1}]})"},
      {"without a ByteLevel decoder", "/decoder", R"({"type": "Fuse"})"},
      {"Regex", "/decoder", R"({"type": "Replace", "pattern": {"Regex": "_"}, "content": " "})"},
      {"post_processor type \"Sequence\"", "/post_processor",
       R"({"type": "Sequence", "processors": []})"},
      {"only one Sequence A", "/post_processor",
       R"({"type": "TemplateProcessing", "single": [{"Sequence": {"id": "B", "type_id": 0}}],
           "special_tokens": {}})"},
      {"truncation", "/truncation", R"({"max_length": 512})"},
      {"padding", "/padding", R"({"strategy": "BatchLongest"})"},
      {"byte_fallback", "/model/byte_fallback", "true"},
      {"dropout", "/model/dropout", "0.1"},
      {"continuing_subword_prefix", "/model/continuing_subword_prefix", R"("##")"},
      {"end_of_word_suffix", "/model/end_of_word_suffix", R"("</w>")"},
  };
  for (const Unsupported& c : cases) {
    Json json = TinyJson();
    json[Json::json_pointer(c.pointer)] = Json::parse(c.value);
    ExpectError(LoadStatus(json), absl::StatusCode::kUnimplemented, c.feature);
  }
}

TEST(TokenizerLoadTest, MalformedPreTokenizersAreInvalidArgument) {
  const std::pair<const char*, const char*> cases[] = {
      {"pattern", R"({"type": "Split", "behavior": "Isolated"})"},
      {"pattern", R"({"type": "Split", "pattern": {"Glob": "*"}, "behavior": "Isolated"})"},
      {"has no behavior", R"({"type": "Split", "pattern": {"String": " "}})"},
      {"not a split behavior", R"({"type": "Punctuation", "behavior": "Sideways"})"},
      {"does not compile",
       R"({"type": "Split", "pattern": {"Regex": "[0-9"}, "behavior": "Isolated"})"},
      {"individual_digits", R"({"type": "Digits", "individual_digits": "yes"})"},
      {"add_prefix_space", R"({"type": "ByteLevel"})"},
  };
  for (const auto& [what, value] : cases) {
    Json json = TinyJson();
    json["pre_tokenizer"] = Json::parse(absl::StrCat(
        R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": false}, )",
        value, "]}"));
    ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, what);
  }
}

TEST(TokenizerLoadTest, MalformedTemplatesAreInvalidArgument) {
  const std::pair<const char*, const char*> cases[] = {
      {"needs single", R"({"type": "TemplateProcessing"})"},
      {"no Sequence A", R"({"type": "TemplateProcessing", "single": [], "special_tokens": {}})"},
      {"not in post_processor.special_tokens",
       R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}},
           {"Sequence": {"id": "A"}}], "special_tokens": {}})"},
      {"has no token",
       R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}},
           {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [99999]}}})"},
  };
  for (const auto& [what, value] : cases) {
    Json json = TinyJson();
    json["post_processor"] = Json::parse(value);
    ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, what);
  }
}

TEST(TokenizerLoadTest, MalformedModelsAreInvalidArgument) {
  using P = Json::json_pointer;
  Json json = TinyJson();
  json[P("/model/merges")].push_back("a zz");
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "\"zz\"");

  json = TinyJson();
  json[P("/model/merges")].push_back("a b c");
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "model.merges[");

  json = TinyJson();
  json[P("/model/merges")].push_back(Json::array({"a"}));
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "model.merges[");

  json = TinyJson();
  json[P("/model/vocab/zz")] = 1;  // id 1 is "a" already
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "id 1");

  json = TinyJson();
  json[P("/model/unk_token")] = "<nope>";
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "<nope>");

  json = TinyJson();
  json[P("/model/vocab/a")] = -3;
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "model.vocab");
}

TEST(TokenizerLoadTest, AddedTokenIdsMustBeTheOnesHuggingFaceAssigns) {
  Json json = TinyJson();
  const int64_t size = static_cast<int64_t>(json["model"]["vocab"].size());
  json["added_tokens"].push_back(
      {{"id", size + 5}, {"content", "<new>"}, {"special", true}, {"normalized", false}});
  ExpectError(LoadStatus(json), absl::StatusCode::kInvalidArgument, "would assign id");
  json["added_tokens"].back()["id"] = size;
  EXPECT_TRUE(LoadStatus(json).ok());
}

TEST(TokenizerLoadTest, VersionMarkerInStringMergesIsSkipped) {
  Json json = TinyJson();
  auto tok_plain = Tokenizer::FromJson(json.dump());
  json["model"]["merges"].insert(json["model"]["merges"].begin(), "#version: 0.2");
  auto tok_marked = Tokenizer::FromJson(json.dump());
  ASSERT_TRUE(tok_plain.ok() && tok_marked.ok());
  for (const char* text : {"the theme", "abcd", "xbcdx"}) {
    EXPECT_EQ(*(*tok_plain)->Encode(text), *(*tok_marked)->Encode(text)) << text;
  }
}

// The same NeoX merges written as ["a", "b"] pairs give the same ids on every text.
TEST(TokenizerLoadTest, PairMergesLoadIdenticallyToStringMerges) {
  const Tokenizer& pairs = TokenizerNamed("pair_merges");
  EXPECT_EQ(pairs.vocab_size(), Neox().vocab_size());
  int compared = 0;
  for (const Vector& v : Vectors().cases) {
    if (v.tokenizer != "neox") continue;
    ASSERT_EQ(*pairs.Encode(v.text), *Neox().Encode(v.text)) << Printable(v.text);
    ++compared;
  }
  EXPECT_GT(compared, 700);
}

}  // namespace
}  // namespace mamba::engine::testing
