// BPE merging. Hugging Face's `Word::merge_all` pops (lowest rank, then leftmost position)
// from a heap and skips stale entries; because a symbol only ever grows to the right, a stale
// entry can never pass its staleness check, so the result is exactly "repeatedly merge the
// lowest-ranked adjacent pair, leftmost first". Short words do that with a linear scan over a
// few registers' worth of ids; long ones use the heap (never quadratic). A per-thread
// direct-mapped cache remembers words up to 48 bytes, without locks or allocation.
#include "engine/tokenizer/bpe_model.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cctype>
#include <cstring>
#include <limits>
#include <memory>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/utf8.h"

namespace mamba::engine {
namespace {

constexpr uint32_t kNoRank = std::numeric_limits<uint32_t>::max();

std::atomic<uint64_t> next_serial{1};  // 0 marks an empty cache slot

// One cache entry: a word of up to 48 bytes (zero-padded, so that it compares as six words)
// and its ids (at most 16), in two cache lines. Longer words are rare and not cached.
struct CacheSlot {
  uint64_t tag;  // serial of the model that wrote it
  uint8_t key_len;
  uint8_t num_ids;
  uint64_t key[6];
  TokenId ids[16];
};
static_assert(sizeof(CacheSlot) == 128);
constexpr size_t kCacheSlots = size_t{1} << 13;  // 1 MiB per thread
constexpr size_t kMaxCachedKey = sizeof(CacheSlot::key);
constexpr size_t kMaxCachedIds = std::size(CacheSlot{}.ids);

CacheSlot* ThreadCache() {
  thread_local std::unique_ptr<CacheSlot[]> slots(new CacheSlot[kCacheSlots]());
  return slots.get();
}

// A word of at most kMaxCachedKey bytes, zero-padded to whole words, and its hash.
struct CacheKey {
  uint64_t words[6] = {};
  size_t num_words = 0;
  uint64_t hash = 0;

  CacheKey(std::string_view word, uint64_t seed) {
    std::memcpy(words, word.data(), word.size());
    num_words = (word.size() + 7) / 8;
    uint64_t h = seed ^ (word.size() * 0x9E3779B97F4A7C15ULL);
    for (size_t i = 0; i < num_words; ++i) {
      h = (h ^ words[i]) * 0xBF58476D1CE4E5B9ULL;
      h ^= h >> 31;
    }
    hash = h * 0x94D049BB133111EBULL;
  }
  CacheSlot& Slot() const { return ThreadCache()[(hash >> 40) & (kCacheSlots - 1)]; }
};

}  // namespace

// Open-addressing hash table (pair of ids) -> (rank, merged id).
struct BpeModel::MergeTable {
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    TokenId new_id = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  explicit MergeTable(size_t count) {
    size_t capacity = 16;
    while (capacity < count * 2) capacity *= 2;
    slots.resize(capacity);
    shift = 64 - std::countr_zero(capacity);
  }
  static uint64_t Key(TokenId a, TokenId b) {
    return uint64_t{static_cast<uint32_t>(a)} << 32 | static_cast<uint32_t>(b);
  }
  size_t Index(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ULL) >> shift; }

  // A later merge of the same pair replaces an earlier one, as collecting into Rust's
  // HashMap does.
  void Insert(TokenId a, TokenId b, uint32_t rank, TokenId new_id) {
    const uint64_t key = Key(a, b);
    size_t i = Index(key);
    while (slots[i].key != kEmpty && slots[i].key != key) i = (i + 1) & (slots.size() - 1);
    slots[i] = {key, rank, new_id};
  }
  const Slot* Find(TokenId a, TokenId b) const {
    const uint64_t key = Key(a, b);
    for (size_t i = Index(key);; i = (i + 1) & (slots.size() - 1)) {
      if (slots[i].key == key) return &slots[i];
      if (slots[i].key == kEmpty) return nullptr;
    }
  }

  std::vector<Slot> slots;
  int shift = 0;
};

struct BpeModel::Symbol {
  TokenId id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes covered; 0 once merged into its left neighbour
};

BpeModel::~BpeModel() = default;

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const BpeSpec& spec,
                                                           const BpeOptions& options) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->options_ = options;
  model->serial_ = next_serial.fetch_add(1);
  model->fuse_unk_ = spec.fuse_unk;
  model->ignore_merges_ = spec.ignore_merges;
  model->vocab_.reserve(spec.vocab.size());
  for (const auto& [token, id] : spec.vocab) model->vocab_.emplace(token, id);

  model->byte_level_ = spec.byte_level;
  model->byte_fallback_ = spec.byte_fallback;
  model->byte_to_id_.fill(-1);
  model->fallback_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    if (spec.byte_level) {
      utf8::AppendCodePoint(byte_level::ByteToChar(static_cast<uint8_t>(b)), &ch);
    } else if (b < 0x80) {
      ch.assign(1, static_cast<char>(b));  // an ASCII character spells itself
    }
    if (auto it = model->vocab_.find(ch); !ch.empty() && it != model->vocab_.end()) {
      model->byte_to_id_[b] = it->second;
    }
    // HF looks the byte up as format!("<{:#04X}>", b): "<0x0A>".
    const std::string code = absl::StrCat("<0x", absl::Hex(b, absl::kZeroPad2), ">");
    std::string upper = code;
    for (size_t i = 3; i < 5; ++i) upper[i] = static_cast<char>(std::toupper(upper[i]));
    if (auto it = model->vocab_.find(upper); it != model->vocab_.end()) {
      model->fallback_ids_[b] = it->second;
    }
  }
  if (spec.unk_token) {
    auto it = model->vocab_.find(*spec.unk_token);
    if (it == model->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token \"", *spec.unk_token, "\" is not in the vocabulary"));
    }
    model->unk_id_ = it->second;
  }
  if (spec.ignore_merges) {
    for (const auto& [token, id] : spec.vocab) {
      if (!spec.byte_level) {
        model->byte_vocab_.emplace(token, id);
        continue;
      }
      std::string bytes = byte_level::DecodeToken(token);
      // Only tokens spelled entirely in the byte alphabet can be a word's bytes.
      if (byte_level::EncodeBytes(bytes) == token) model->byte_vocab_.emplace(bytes, id);
    }
  }

  model->merges_ = std::make_unique<MergeTable>(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [a, b] = spec.merges[rank];
    const std::string merged = a + b;
    for (const std::string* part : {&a, &b, &merged}) {
      if (!model->vocab_.contains(*part)) {
        return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "] (\"", a, "\", \"",
                                                       b, "\"): token \"", *part,
                                                       "\" is not in the vocabulary"));
      }
    }
    model->merges_->Insert(model->vocab_.at(a), model->vocab_.at(b), static_cast<uint32_t>(rank),
                           model->vocab_.at(merged));
  }
  return model;
}

std::optional<TokenId> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(absl::string_view(token.data(), token.size()));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

// HF's merge_word for a vocabulary of characters: a character that is a token is a symbol;
// otherwise, with byte_fallback, the "<0xNN>" tokens of its bytes if all exist (without first
// emitting a pending unk, as HF does); otherwise unk (fused if fuse_unk) or nothing.
void BpeModel::InitCharSymbols(std::string_view word, std::vector<Symbol>* symbols) const {
  symbols->clear();
  auto push = [symbols](TokenId id, uint32_t len) {
    const auto index = static_cast<int32_t>(symbols->size());
    symbols->push_back({id, index - 1, index + 1, len});
  };
  uint32_t unk_len = 0;
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    utf8::DecodeValid(word, &pos);
    const std::string_view ch = word.substr(begin, pos - begin);
    TokenId id = ch.size() == 1 ? byte_to_id_[static_cast<unsigned char>(ch[0])] : -1;
    if (ch.size() > 1) {
      if (auto it = vocab_.find(absl::string_view(ch.data(), ch.size())); it != vocab_.end()) {
        id = it->second;
      }
    }
    if (id >= 0) {
      if (unk_len > 0) push(*unk_id_, unk_len);
      unk_len = 0;
      push(id, static_cast<uint32_t>(ch.size()));
      continue;
    }
    if (byte_fallback_ && std::all_of(ch.begin(), ch.end(), [this](char b) {
          return fallback_ids_[static_cast<unsigned char>(b)] >= 0;
        })) {
      for (const char b : ch) push(fallback_ids_[static_cast<unsigned char>(b)], 1);
      continue;
    }
    if (unk_id_) {
      if (unk_len > 0 && !fuse_unk_) push(*unk_id_, std::exchange(unk_len, 0));
      unk_len += static_cast<uint32_t>(ch.size());
    }
  }
  if (unk_len > 0) push(*unk_id_, unk_len);
  if (!symbols->empty()) symbols->back().next = -1;
}

void BpeModel::InitSymbols(std::string_view word, std::vector<Symbol>* symbols) const {
  if (!byte_level_) return InitCharSymbols(word, symbols);
  symbols->clear();
  auto push = [symbols](TokenId id, uint32_t len) {
    const auto index = static_cast<int32_t>(symbols->size());
    symbols->push_back({id, index - 1, index + 1, len});
  };
  // Mirrors HF's merge_word: each byte is one character of the byte-level alphabet; an
  // unknown one becomes unk (fused with its unknown neighbours if fuse_unk) or is dropped.
  uint32_t unk_len = 0;
  for (unsigned char b : word) {
    const TokenId id = byte_to_id_[b];
    if (id >= 0) {
      if (unk_len > 0) push(*unk_id_, unk_len);
      unk_len = 0;
      push(id, 1);
    } else if (unk_id_) {
      if (unk_len > 0 && !fuse_unk_) push(*unk_id_, std::exchange(unk_len, 0));
      ++unk_len;
    }
  }
  if (unk_len > 0) push(*unk_id_, unk_len);
  if (!symbols->empty()) symbols->back().next = -1;
}

void BpeModel::MergeLinear(std::vector<Symbol>* symbols) const {
  // Compact arrays: ids[i] and the rank / result of merging ids[i] with ids[i + 1].
  const size_t n0 = symbols->size();
  TokenId ids[64];
  uint32_t ranks[64];
  TokenId merged[64];
  for (size_t i = 0; i < n0; ++i) ids[i] = (*symbols)[i].id;
  auto rate = [&](size_t i) {
    const MergeTable::Slot* m = merges_->Find(ids[i], ids[i + 1]);
    ranks[i] = m ? m->rank : kNoRank;
    merged[i] = m ? m->new_id : 0;
  };
  size_t n = n0;
  for (size_t i = 0; i + 1 < n; ++i) rate(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == kNoRank) break;
    ids[best] = merged[best];
    --n;
    for (size_t i = best + 1; i < n; ++i) {
      ids[i] = ids[i + 1];
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    if (best > 0) rate(best - 1);
    if (best + 1 < n) rate(best);
  }
  symbols->resize(n);
  for (size_t i = 0; i < n; ++i) (*symbols)[i] = {ids[i], 0, 0, 1};
}

void BpeModel::MergeHeap(std::vector<Symbol>* symbols) const {
  struct Entry {
    uint32_t rank;
    int32_t pos;
    TokenId new_id;
  };
  // std heaps are max-heaps: "greater" puts the lowest (rank, pos) on top.
  auto after = [](const Entry& x, const Entry& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  thread_local std::vector<Entry> heap;
  heap.clear();
  std::vector<Symbol>& s = *symbols;
  auto push_pair = [&](int32_t left) {
    if (left < 0 || s[left].next < 0) return;
    if (const MergeTable::Slot* m = merges_->Find(s[left].id, s[s[left].next].id)) {
      heap.push_back({m->rank, left, m->new_id});
      std::push_heap(heap.begin(), heap.end(), after);
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(s.size()); ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), after);
    const Entry top = heap.back();
    heap.pop_back();
    Symbol& left = s[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const MergeTable::Slot* m = merges_->Find(left.id, s[left.next].id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale entry
    Symbol& right = s[left.next];
    left.id = top.new_id;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) s[right.next].prev = top.pos;
    push_pair(left.prev);
    push_pair(top.pos);
  }
  std::erase_if(s, [](const Symbol& sym) { return sym.len == 0; });
}

void BpeModel::MergeWord(std::string_view word, std::vector<TokenId>* ids) const {
  thread_local std::vector<Symbol> symbols;
  InitSymbols(word, &symbols);
  const size_t linear_max = std::min<size_t>(64, std::max(0, options_.linear_merge_max_symbols));
  if (symbols.size() <= linear_max) {
    MergeLinear(&symbols);
  } else {
    MergeHeap(&symbols);
  }
  for (const Symbol& sym : symbols) ids->push_back(sym.id);
}

bool BpeModel::CacheLookup(std::string_view word, std::vector<TokenId>* ids) const {
  const CacheKey key(word, serial_);
  const CacheSlot& slot = key.Slot();
  if (slot.tag != serial_ || slot.key_len != word.size()) return false;
  for (size_t i = 0; i < key.num_words; ++i) {
    if (slot.key[i] != key.words[i]) return false;
  }
  ids->insert(ids->end(), slot.ids, slot.ids + slot.num_ids);
  return true;
}

void BpeModel::CacheStore(std::string_view word, const TokenId* ids, size_t n) const {
  if (n > kMaxCachedIds) return;
  const CacheKey key(word, serial_);
  CacheSlot& slot = key.Slot();
  slot.tag = serial_;
  slot.key_len = static_cast<uint8_t>(word.size());
  slot.num_ids = static_cast<uint8_t>(n);
  std::copy(key.words, key.words + 6, slot.key);
  std::copy(ids, ids + n, slot.ids);
}

void BpeModel::Tokenize(std::string_view word, std::vector<TokenId>* ids) const {
  if (word.empty()) return;
  if (word.size() == 1 && byte_to_id_[static_cast<unsigned char>(word[0])] >= 0) {
    ids->push_back(byte_to_id_[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    if (auto it = byte_vocab_.find(absl::string_view(word.data(), word.size()));
        it != byte_vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = options_.enable_cache && word.size() <= kMaxCachedKey;
  if (cacheable && CacheLookup(word, ids)) return;
  const size_t before = ids->size();
  MergeWord(word, ids);
  if (cacheable) CacheStore(word, ids->data() + before, ids->size() - before);
}

}  // namespace mamba::engine
