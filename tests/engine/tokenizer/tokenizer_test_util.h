// Shared fixtures of the tokenizer tests: the NeoX tokenizer, the reference vectors written by
// data/make_vectors.js (ids and text from Hugging Face `tokenizers`), and helpers.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "engine/types.h"

namespace mamba::engine::testing {

// $MAMBA_SOURCE_DIR (set by ctest), else the current directory.
std::string SourceDir();
std::string NeoxJsonPath();
std::string ReadFileOrDie(const std::string& path);

// The GPT-NeoX-20B tokenizer, loaded once.
const Tokenizer& Neox();

struct Vector {
  std::string tokenizer;  // name of a tokenizer record
  std::string name;       // category or case name
  std::string text;
  std::vector<TokenId> ids;
  std::optional<std::vector<TokenId>> ids_special;  // HF's encode with add_special_tokens=True
  std::string decoded;
  std::string decoded_skip;
};

struct VectorFile {
  std::vector<Vector> cases;
  std::vector<Vector> decodes;  // "decode" records: ids and HF's text, no text to encode
  std::map<std::string, std::string> tokenizer_json;  // name -> tokenizer.json text
  // Per block of `vocab_block` ids: FNV-1a of HF's decode([id]) (+ "\0") over the block.
  int64_t vocab_size = 0;
  int vocab_block = 0;
  std::vector<uint32_t> vocab_fnv;
  std::vector<uint32_t> vocab_fnv_skip;
  std::vector<uint32_t> vocab_fnv_roundtrip;  // of encode(decode([id])) as "i1,i2,...;"
};

// data/vectors.jsonl, parsed once (generated texts rebuilt).
const VectorFile& Vectors();

// The tokenizer a vector refers to (built from its record once).
const Tokenizer& TokenizerNamed(const std::string& name);

// NFC by utf8proc's plain API (independent of the tokenizer's fast path).
std::string Nfc(std::string_view text);

uint32_t Fnv1a(uint32_t hash, std::string_view bytes);

// Short printable form of a text for failure messages.
std::string Printable(std::string_view text);

}  // namespace mamba::engine::testing
