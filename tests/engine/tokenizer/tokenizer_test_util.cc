// Loading of the reference vectors; see data/make_vectors.js for the record format.
#include "tests/engine/tokenizer/tokenizer_test_util.h"

#include <utf8proc.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace mamba::engine::testing {
namespace {

using Json = nlohmann::json;

std::string RebuildGenerated(const Json& g) {
  const auto& pieces = g.at("pieces");
  const int count = g.at("count").get<int>();
  const int stride = g.at("stride").get<int>();
  std::string text;
  for (int i = 0; i < count; ++i) {
    text += pieces.at((static_cast<size_t>(i) * stride) % pieces.size()).get<std::string>();
    text += std::to_string(i);
    text += i % 8 == 7 ? "\n" : " ";
  }
  return text;
}

std::string RemoveAll(std::string text, std::string_view what) {
  for (size_t pos; (pos = text.find(what)) != std::string::npos;) text.erase(pos, what.size());
  return text;
}

// The NeoX tokenizer.json with `patch` applied as make_vectors.js applies it.
std::string PatchedNeox(const Json& record) {
  static const Json neox = Json::parse(ReadFileOrDie(NeoxJsonPath()));
  Json json = neox;
  for (const auto& [key, value] : record.at("patch").items()) json[key] = value;
  if (record.value("merges_as_pairs", false)) {
    Json pairs = Json::array();
    for (const Json& m : json["model"]["merges"]) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      pairs.push_back(Json::array({s.substr(0, space), s.substr(space + 1)}));
    }
    json["model"]["merges"] = std::move(pairs);
  }
  return json.dump();
}

VectorFile LoadVectors() {
  VectorFile file;
  std::istringstream in(ReadFileOrDie(SourceDir() + "/tests/engine/tokenizer/data/vectors.jsonl"));
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const Json record = Json::parse(line);
    const std::string kind = record.at("kind");
    if (kind == "tokenizer") {
      file.tokenizer_json[record.at("name")] =
          record.contains("json") ? record.at("json").dump() : PatchedNeox(record);
    } else if (kind == "vocab_decode") {
      file.vocab_size = record.at("vocab_size");
      file.vocab_block = record.at("block");
      file.vocab_fnv = record.at("fnv").get<std::vector<uint32_t>>();
      file.vocab_fnv_skip = record.at("fnv_skip").get<std::vector<uint32_t>>();
      file.vocab_fnv_roundtrip = record.at("fnv_roundtrip").get<std::vector<uint32_t>>();
    } else if (kind == "decode") {
      Vector v;
      v.tokenizer = record.at("tokenizer");
      v.name = "decode";
      v.ids = record.at("ids").get<std::vector<TokenId>>();
      v.decoded = record.at("decoded");
      v.decoded_skip = record.at("decoded_skip");
      file.decodes.push_back(std::move(v));
    } else {
      Vector v;
      v.tokenizer = record.at("tokenizer");
      v.name = record.at("name");
      v.ids = record.at("ids").get<std::vector<TokenId>>();
      if (record.contains("ids_special")) {
        v.ids_special = record.at("ids_special").get<std::vector<TokenId>>();
      }
      if (record.contains("generator")) {
        v.text = RebuildGenerated(record.at("generator"));
        v.decoded = v.text;
        v.decoded_skip = RemoveAll(v.text, "<|endoftext|>");
      } else {
        v.text = record.at("text");
        v.decoded = record.at("decoded");
        v.decoded_skip = record.at("decoded_skip");
      }
      file.cases.push_back(std::move(v));
    }
  }
  return file;
}

}  // namespace

std::string SourceDir() {
  const char* dir = std::getenv("MAMBA_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

std::string NeoxJsonPath() { return SourceDir() + "/models/gpt-neox-20b/tokenizer.json"; }

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path << " (set MAMBA_SOURCE_DIR to the repository root)";
    std::abort();
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const Tokenizer& Neox() {
  static const Tokenizer* tok = [] {
    auto t = Tokenizer::FromFile(NeoxJsonPath());
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      std::abort();
    }
    return t->release();
  }();
  return *tok;
}

const VectorFile& Vectors() {
  static const VectorFile* file = new VectorFile(LoadVectors());
  return *file;
}

const Tokenizer& TokenizerNamed(const std::string& name) {
  if (name == "neox") return Neox();
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>>* built =
      new std::map<std::string, std::unique_ptr<Tokenizer>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*built)[name];
  if (slot == nullptr) {
    auto t = Tokenizer::FromJson(Vectors().tokenizer_json.at(name));
    if (!t.ok()) {
      ADD_FAILURE() << name << ": " << t.status();
      std::abort();
    }
    slot = std::move(*t);
  }
  return *slot;
}

std::string Nfc(std::string_view text) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &out,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return "<utf8proc error>";
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

uint32_t Fnv1a(uint32_t hash, std::string_view bytes) {
  for (unsigned char b : bytes) {
    hash ^= b;
    hash *= 16777619u;
  }
  return hash;
}

std::string Printable(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 160)) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += absl::StrCat("\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > 160) out += absl::StrCat("... (", text.size(), " bytes)");
  return "\"" + out + "\"";
}

}  // namespace mamba::engine::testing
