// Added-token matching, following tokenizers/src/tokenizer/added_vocabulary.rs: an Aho-Corasick
// automaton in LeftmostLongest mode there, a byte trie walked from each candidate position
// here (added tokens are few and short, so the walk is cheap and the result identical).
#include "engine/tokenizer/added_vocabulary.h"

#include <utf8proc.h>

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/utf8.h"

namespace mamba::engine {
namespace {

// Rust regex \s: the Unicode White_Space property.
bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Rust regex \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
// Alphabetic is letters, letter numbers and Other_Alphabetic, whose members outside the marks
// are the circled / squared Latin letters listed here.
bool IsWordChar(char32_t c) {
  if (c < 0x80) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  }
  if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
      (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
      (c >= 0x1F170 && c <= 0x1F189)) {
    return true;
  }
  switch (utf8proc_category(static_cast<int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// Start of the run of white space that ends `text` (HF: `\s*$`).
size_t TrailingSpaceStart(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = 0;
    if (!IsWhiteSpace(utf8::DecodeLastValid(text, end, &start))) break;
    end = start;
  }
  return end;
}

// Length of the run of white space that starts `text` (HF: `^\s*`).
size_t LeadingSpaceLength(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!IsWhiteSpace(utf8::DecodeValid(text, &next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

// A byte trie over the patterns; finds the leftmost, then longest, match.
class AddedVocabulary::Matcher {
 public:
  Matcher() : nodes_(1), bigrams_(65536 / 64, 0) { root_.fill(-1); }

  bool empty() const { return nodes_.size() == 1; }

  // The first pattern added wins over an identical later one, as in aho-corasick.
  void Add(std::string_view pattern, int token_index) {
    if (pattern.empty()) return;
    if (pattern.size() >= 2) {
      const unsigned bigram = Bigram(pattern[0], pattern[1]);
      bigrams_[bigram / 64] |= uint64_t{1} << (bigram % 64);
    }
    int32_t node = ChildOrNew(0, static_cast<unsigned char>(pattern[0]));
    for (size_t i = 1; i < pattern.size(); ++i) {
      node = ChildOrNew(node, static_cast<unsigned char>(pattern[i]));
    }
    if (nodes_[node].token < 0) nodes_[node].token = token_index;
  }

  struct Match {
    size_t begin = 0;
    size_t end = 0;
    int token = -1;
  };

  // The leftmost-longest match starting at or after `from`; token < 0 when none.
  Match FindFrom(std::string_view text, size_t from) const {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    for (size_t pos = from; pos < text.size(); ++pos) {
      int32_t node = root_[p[pos]];
      if (node < 0) continue;
      // Most candidates fail on the second byte (" x" for the space-run tokens): test the
      // first two bytes against a bitmap before walking.
      if (nodes_[node].token < 0) {
        if (pos + 1 >= text.size()) continue;
        const unsigned bigram = Bigram(text[pos], text[pos + 1]);
        if (!((bigrams_[bigram / 64] >> (bigram % 64)) & 1)) continue;
      }
      Match best;
      for (size_t j = pos + 1;; ++j) {
        if (nodes_[node].token >= 0) best = {pos, j, nodes_[node].token};
        if (j >= text.size()) break;
        node = Child(node, p[j]);
        if (node < 0) break;
      }
      if (best.token >= 0) return best;
    }
    return {};
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int token = -1;
  };

  int32_t Child(int32_t node, unsigned char byte) const {
    if (node == 0) return root_[byte];
    for (const auto& [b, child] : nodes_[node].children) {
      if (b == byte) return child;
    }
    return -1;
  }
  int32_t ChildOrNew(int32_t node, unsigned char byte) {
    int32_t found = Child(node, byte);
    if (found >= 0) return found;
    found = static_cast<int32_t>(nodes_.size());
    nodes_.emplace_back();
    if (node == 0) {
      root_[byte] = found;
    } else {
      nodes_[node].children.emplace_back(byte, found);
    }
    return found;
  }

  static unsigned Bigram(char a, char b) {
    return static_cast<unsigned char>(a) << 8 | static_cast<unsigned char>(b);
  }

  std::vector<Node> nodes_;
  std::array<int32_t, 256> root_;  // children of the root, dense for a fast scan
  std::vector<uint64_t> bigrams_;  // first two bytes of the patterns, one bit each
};

AddedVocabulary::AddedVocabulary()
    : raw_(std::make_unique<Matcher>()), normalized_(std::make_unique<Matcher>()) {}
AddedVocabulary::~AddedVocabulary() = default;

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::Create(
    const std::vector<AddedTokenSpec>& tokens, const BpeModel& model,
    const Normalizer& normalizer) {
  std::unique_ptr<AddedVocabulary> vocab(new AddedVocabulary());
  // HF's AddedVocabulary::add_tokens: a token already known (added or in the model) keeps its
  // id; a new one gets the model's entry count, or one past the largest added id.
  absl::flat_hash_map<std::string, TokenId> added_ids;
  TokenId max_added = -1;
  const auto model_size = static_cast<TokenId>(model.size());
  for (const AddedTokenSpec& token : tokens) {
    if (token.content.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("added_tokens: token ", token.id, " has empty content"));
    }
    if (added_ids.contains(token.content)) {
      return absl::UnimplementedError(
          absl::StrCat("added_tokens: \"", token.content, "\" is listed twice; not supported"));
    }
    TokenId id;
    if (std::optional<TokenId> known = model.TokenToId(token.content)) {
      id = *known;
    } else if (max_added < 0) {
      id = model_size;
    } else {
      id = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
    }
    if (id != token.id) {
      return absl::InvalidArgumentError(
          absl::StrCat("added_tokens: \"", token.content, "\" has id ", token.id,
                       " in the file but Hugging Face tokenizers would assign id ", id));
    }
    added_ids.emplace(token.content, id);
    max_added = std::max(max_added, id);
    vocab->tokens_.push_back(token);
    std::string scratch;
    vocab->spellings_.emplace_back(token.normalized ? normalizer.Normalize(token.content, &scratch)
                                                    : std::string_view(token.content));
  }
  // HF builds its matchers from the special tokens first, then the others.
  for (bool special : {true, false}) {
    for (size_t i = 0; i < vocab->tokens_.size(); ++i) {
      const AddedTokenSpec& t = vocab->tokens_[i];
      if (t.special != special) continue;
      if (!t.normalized) {
        vocab->raw_->Add(t.content, static_cast<int>(i));
      } else {
        vocab->normalized_->Add(vocab->spellings_[i], static_cast<int>(i));
      }
    }
  }
  return vocab;
}

void AddedVocabulary::Split(const Matcher& matcher, std::string_view text,
                            std::vector<TextPiece>* out) const {
  out->clear();
  auto piece = [out](size_t begin, size_t end, TokenId id) {
    out->push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(end), id});
  };
  if (matcher.empty()) {
    if (!text.empty()) piece(0, text.size(), -1);
    return;
  }
  // HF's find_matches, step for step.
  size_t start_offset = 0;
  for (Matcher::Match m = matcher.FindFrom(text, 0); m.token >= 0;
       m = matcher.FindFrom(text, m.end)) {
    const AddedTokenSpec& token = tokens_[m.token];
    size_t start = m.begin;
    size_t stop = m.end;
    if (token.single_word) {
      size_t unused = 0;
      const bool start_space =
          start == 0 || !IsWordChar(utf8::DecodeLastValid(text, start, &unused));
      size_t next = stop;
      const bool stop_space = stop == text.size() || !IsWordChar(utf8::DecodeValid(text, &next));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(TrailingSpaceStart(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += LeadingSpaceLength(text.substr(stop));
    if (start_offset < start) piece(start_offset, start, -1);
    piece(start, stop, token.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) piece(start_offset, text.size(), -1);
}

void AddedVocabulary::SplitRaw(std::string_view text, std::vector<TextPiece>* pieces) const {
  Split(*raw_, text, pieces);
}

void AddedVocabulary::SplitNormalized(std::string_view text, std::vector<TextPiece>* pieces) const {
  Split(*normalized_, text, pieces);
}

}  // namespace mamba::engine
