// A Hugging Face tokenizer.json (byte-level BPE, e.g. GPT-NeoX-20B for the Mamba checkpoints or
// Falcon's with its pre-tokenizer sequence; or SentencePiece-style BPE with byte fallback, as
// Mistral / Codestral ship it) with exact parity: Encode gives the ids HF `tokenizers` gives,
// Decode the text it gives.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer_json.h"
#include "engine/types.h"

namespace mamba::engine {

class AddedVocabulary;
class BpeModel;
class ByteLevelPreTokenizer;
class Normalizer;
class SequencePreTokenizer;

struct TokenizerOptions {
  bool enable_word_cache = true;      // per-thread cache of recently seen words
  int linear_merge_max_symbols = 16;  // words up to this many bytes merge by linear scan
};

// Immutable after loading; every method is thread-safe.
class Tokenizer {
 public:
  // Errors: NotFound (no file), InvalidArgument (malformed file), Unimplemented (a feature we
  // do not support, named in the message; we never tokenize such a file differently).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::filesystem::path& path,
                                                             const TokenizerOptions& options = {});
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text,
                                                             const TokenizerOptions& options = {});
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids HF gives for `encode(text, add_special_tokens=False)`; added tokens written in the
  // text (e.g. "<|endoftext|>") are recognised. Invalid UTF-8 is InvalidArgument naming the
  // byte offset: HF's APIs take Rust strings, so they can never see invalid UTF-8 at all.
  absl::StatusOr<std::vector<TokenId>> Encode(std::string_view text) const;

  // The ids HF gives for `encode(text, add_special_tokens=True)`: Encode's ids inside the
  // post_processor's TemplateProcessing "single" template (e.g. "<s>" first for Mistral);
  // the same as Encode for a tokenizer without one.
  absl::StatusOr<std::vector<TokenId>> EncodeWithSpecialTokens(std::string_view text) const;

  // Encode of each text, spread over up to `num_threads` threads (<= 1: the calling thread).
  // The first failing text's error is returned, naming its index.
  absl::StatusOr<std::vector<std::vector<TokenId>>> EncodeBatch(std::span<const std::string> texts,
                                                                int num_threads) const;

  // The text HF gives for `decode(ids, skip_special_tokens)`: bytes of all tokens joined, with
  // invalid UTF-8 replaced as by Rust's String::from_utf8_lossy. An id outside the vocabulary
  // is InvalidArgument naming it (HF silently drops it).
  absl::StatusOr<std::string> Decode(std::span<const TokenId> ids,
                                     bool skip_special_tokens = false) const;

  // Decode as HF does it: ids without a token (a model's embedding rows beyond the tokenizer's
  // vocabulary, or any other) add nothing. Range checks against the model are the caller's.
  std::string DecodeKnown(std::span<const TokenId> ids, bool skip_special_tokens = false) const;

  // Number of ids: one past the largest id of the model vocabulary and the added tokens.
  int64_t vocab_size() const { return static_cast<int64_t>(token_offsets_.size()) - 1; }

  // Id of a token as spelled in the vocabulary ("Ġthe", "<|endoftext|>").
  std::optional<TokenId> TokenToId(std::string_view token) const;
  // HF's id_to_token: the vocabulary spelling of an id, for an added token its content
  // (normalized, for a `normalized` one); nullopt for ids without a token.
  std::optional<std::string_view> IdToToken(TokenId id) const;
  // Special added tokens are the ones Decode(..., skip_special_tokens=true) leaves out.
  bool IsSpecial(TokenId id) const;
  // The bytes one token stands for after byte-level decoding (may be a partial UTF-8
  // character). Used by the incremental detokenizer and for per-token (logprob) text. For a
  // SentencePiece-style tokenizer: the token after the decoder's replacements ("▁the" -> " the"),
  // and for a byte-fallback token ("<0xE4>") its one byte.
  absl::StatusOr<std::string_view> TokenBytes(TokenId id) const;

  // SentencePiece-style decoding (byte_fallback, Strip), for the incremental detokenizer.
  bool is_byte_level() const { return byte_level_; }
  // Whether the decoder turns this token into one raw byte ("<0xNN>" with ByteFallback).
  bool IsByteFallbackToken(TokenId id) const { return HasToken(id) && (flags_[id] & kByte); }
  // The decoder's Strip: up to strip_start() leading strip_content() characters of the whole
  // decoded text are removed (0 / "" without one).
  int strip_start() const { return strip_start_; }
  std::string_view strip_content() const { return strip_content_; }
  // Removes up to `*left` leading strip characters from `text`, counting them down; `*left`
  // becomes 0 as soon as `text` holds anything else.
  void StripLeading(std::string* text, int* left) const;
  // A Metaspace decoder drops the replacement characters of the first decoded token (after
  // skipped special tokens) instead of turning them into spaces: that token's text.
  std::string FirstTokenText(TokenId id) const;

 private:
  Tokenizer();
  absl::Status Init(std::string_view json_text, const TokenizerOptions& options);
  absl::Status BuildTokenTable(const PieceDecoderSpec& decoder);
  absl::StatusOr<std::string> DecodePieces(std::span<const TokenId> ids,
                                           bool skip_special_tokens) const;
  absl::Status EncodeInto(std::string_view text, std::vector<TokenId>* ids) const;
  absl::Status EncodeNormalizedPiece(std::string_view piece, bool at_text_start,
                                     std::vector<TokenId>* ids) const;
  void EncodeMetaspace(std::string_view piece, bool at_text_start, std::vector<TokenId>* ids) const;
  bool HasToken(TokenId id) const {
    return id >= 0 && id < vocab_size() && (flags_[id] & kHasToken);
  }

  static constexpr uint8_t kHasToken = 1;
  static constexpr uint8_t kSpecial = 2;
  static constexpr uint8_t kByte = 4;  // SentencePiece byte-fallback token

  bool byte_level_ = true;
  std::optional<MetaspaceOptions> metaspace_;
  int strip_start_ = 0;
  std::string strip_content_;
  std::string drop_in_first_;  // Metaspace decoder: dropped from the first token
  std::vector<TokenId> template_prefix_;
  std::vector<TokenId> template_suffix_;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<ByteLevelPreTokenizer> pre_tokenizer_;
  std::unique_ptr<SequencePreTokenizer> sequence_;  // instead of pre_tokenizer_ when set
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocabulary> added_;
  absl::flat_hash_map<std::string, TokenId> added_ids_;  // added token content -> id
  // Per id: vocabulary spelling, decoded bytes (both in arenas) and flags.
  std::string token_text_;
  std::vector<uint32_t> token_text_offsets_;
  std::string token_bytes_;
  std::vector<uint32_t> token_offsets_;
  std::vector<uint8_t> flags_;
};

}  // namespace mamba::engine
