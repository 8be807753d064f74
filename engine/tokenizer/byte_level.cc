// Tables for the GPT-2 byte-level alphabet (bytes_to_unicode in OpenAI's encoder.py, which
// Hugging Face's ByteLevel pre-tokenizer and decoder reproduce).
#include "engine/tokenizer/byte_level.h"

#include "engine/tokenizer/utf8.h"

namespace mamba::engine::byte_level {
namespace {

struct Tables {
  std::array<char32_t, 256> byte_to_char{};
  // Every alphabet character is below U+0144, so the inverse is a small array.
  static constexpr char32_t kLimit = 0x144;
  std::array<int16_t, kLimit> char_to_byte{};

  Tables() {
    char_to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t c = printable(b) ? static_cast<char32_t>(b) : next++;
      byte_to_char[b] = c;
      char_to_byte[c] = static_cast<int16_t>(b);
    }
  }
};

const Tables& GetTables() {
  static const Tables tables;
  return tables;
}

}  // namespace

char32_t ByteToChar(uint8_t b) { return GetTables().byte_to_char[b]; }

std::optional<uint8_t> CharToByte(char32_t c) {
  const Tables& t = GetTables();
  if (c >= Tables::kLimit || t.char_to_byte[c] < 0) return std::nullopt;
  return static_cast<uint8_t>(t.char_to_byte[c]);
}

std::string EncodeBytes(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8::AppendCodePoint(ByteToChar(b), &out);
  return out;
}

std::string DecodeToken(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    const std::optional<uint8_t> b = CharToByte(utf8::DecodeValid(token, &pos));
    if (!b) return std::string(token);
    out.push_back(static_cast<char>(*b));
  }
  return out;
}

}  // namespace mamba::engine::byte_level
