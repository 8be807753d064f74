// The BPE model of a byte-level tokenizer: turns the bytes of one pre-tokenized word into token
// ids by applying merges in rank order, exactly as Hugging Face's `BPE::merge_word` does.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/types.h"

namespace mamba::engine {

struct BpeSpec {
  std::vector<std::pair<std::string, TokenId>> vocab;       // token (byte-level text) -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool ignore_merges = false;  // a word that is itself a token skips the merges
  // false: SentencePiece-style BPE, whose vocabulary spells text itself (e.g. "▁the"): a word's
  // initial symbols are its characters, and with byte_fallback a character without a token
  // becomes the tokens "<0xNN>" of its bytes.
  bool byte_level = true;
  bool byte_fallback = false;
};

struct BpeOptions {
  bool enable_cache = true;  // per-thread cache of recently seen words
  // Words with at most this many initial symbols merge by a linear scan (fast for short
  // words); longer ones use a heap, O(n log n). Both give identical results.
  int linear_merge_max_symbols = 16;
};

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const BpeSpec& spec,
                                                          const BpeOptions& options);
  ~BpeModel();
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one word given as raw bytes (for a byte-level model the mapping is
  // implied: byte b is the vocabulary character ByteToChar(b)). Thread-safe.
  void Tokenize(std::string_view word, std::vector<TokenId>* ids) const;

  std::optional<TokenId> TokenToId(std::string_view token) const;
  const absl::flat_hash_map<std::string, TokenId>& vocab() const { return vocab_; }
  // Number of vocabulary entries (what HF's get_vocab_size(false) reports).
  int64_t size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  struct MergeTable;
  struct Symbol;
  BpeModel() = default;

  // Builds the initial symbols of `word` (unknown bytes become unk or are dropped).
  void InitSymbols(std::string_view word, std::vector<Symbol>* symbols) const;
  void InitCharSymbols(std::string_view word, std::vector<Symbol>* symbols) const;
  void MergeLinear(std::vector<Symbol>* symbols) const;
  void MergeHeap(std::vector<Symbol>* symbols) const;
  void MergeWord(std::string_view word, std::vector<TokenId>* ids) const;
  bool CacheLookup(std::string_view word, std::vector<TokenId>* ids) const;
  void CacheStore(std::string_view word, const TokenId* ids, size_t n) const;

  absl::flat_hash_map<std::string, TokenId> vocab_;
  // Words that are themselves tokens, keyed by raw bytes (only with ignore_merges).
  absl::flat_hash_map<std::string, TokenId> byte_vocab_;
  std::array<TokenId, 256> byte_to_id_{};  // -1 where the byte's character is not a token
  std::unique_ptr<MergeTable> merges_;
  std::optional<TokenId> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool byte_level_ = true;
  std::array<TokenId, 256> fallback_ids_{};  // "<0xNN>" tokens (-1: none), with byte_fallback
  bool byte_fallback_ = false;
  BpeOptions options_;
  uint64_t serial_ = 0;  // distinguishes this model's entries in the per-thread caches
};

}  // namespace mamba::engine
