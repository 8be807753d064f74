// The GPT-2 "byte-level" alphabet: every byte is shown as a printable Unicode character so that
// BPE vocabularies can be stored as JSON strings ("Ġthe" is the bytes " the").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mamba::engine::byte_level {

// The character that stands for byte b: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ')
// stand for themselves, the other 68 bytes map in order to U+0100.. (so ' ' is 'Ġ' U+0120).
char32_t ByteToChar(uint8_t b);

// The inverse of ByteToChar, or nullopt for characters outside the 256-character alphabet.
std::optional<uint8_t> CharToByte(char32_t c);

// The UTF-8 text of `bytes` in the byte-level alphabet ("Ġthe" for " the").
std::string EncodeBytes(std::string_view bytes);

// Hugging Face's ByteLevel decoder applied to one token: if every character of the (valid
// UTF-8) token is in the alphabet, the bytes it stands for; otherwise the token's own UTF-8
// bytes unchanged (that is how added tokens such as "<|endoftext|>" or a run of plain spaces
// decode).
std::string DecodeToken(std::string_view token);

}  // namespace mamba::engine::byte_level
