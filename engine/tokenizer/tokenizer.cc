// The tokenizer pipeline, in Hugging Face's order: split out added tokens on the raw text,
// normalize the rest, split out `normalized` added tokens, pre-tokenize (GPT-2 pattern), then
// BPE on each word's bytes. Decode joins token bytes and repairs invalid UTF-8 lossily.
#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/added_vocabulary.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/pre_tokenizer_sequence.h"
#include "engine/tokenizer/tokenizer_json.h"
#include "engine/tokenizer/utf8.h"

namespace mamba::engine {
namespace {

// Reused buffers of the calling thread, so that encoding allocates only the result.
struct EncodeScratch {
  std::vector<TextPiece> raw_pieces;
  std::vector<TextPiece> normalized_pieces;
  std::vector<WordSpan> words;
  std::string normalized;
  std::string prefixed;
  std::vector<std::string> owned_words;  // SequencePreTokenizer's words
};

EncodeScratch& Scratch() {
  thread_local EncodeScratch scratch;
  return scratch;
}

absl::Status WithContext(const absl::Status& s, const std::string& context) {
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::filesystem::path& path,
                                                               const TokenizerOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path.string()));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = FromJson(contents.str(), options);
  if (!tokenizer.ok()) return WithContext(tokenizer.status(), path.string());
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                               const TokenizerOptions& options) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  if (absl::Status s = tokenizer->Init(json_text, options); !s.ok()) return s;
  return tokenizer;
}

absl::Status Tokenizer::Init(std::string_view json_text, const TokenizerOptions& options) {
  absl::StatusOr<TokenizerSpec> spec = ParseTokenizerJson(json_text);
  if (!spec.ok()) return spec.status();
  normalizer_ = std::make_unique<Normalizer>(std::move(spec->normalizer));
  byte_level_ = spec->byte_level;
  metaspace_ = spec->metaspace;
  strip_start_ = spec->piece_decoder.strip_start;
  strip_content_ = spec->piece_decoder.strip_content;
  drop_in_first_ = spec->piece_decoder.drop_in_first;
  template_prefix_ = spec->template_prefix;
  template_suffix_ = spec->template_suffix;
  if (byte_level_) {
    absl::StatusOr<std::unique_ptr<ByteLevelPreTokenizer>> pre =
        ByteLevelPreTokenizer::Create(spec->pre_tokenizer);
    if (!pre.ok()) return pre.status();
    pre_tokenizer_ = std::move(*pre);
  }
  if (!spec->pre_tokenizer_steps.empty()) {
    absl::StatusOr<std::unique_ptr<SequencePreTokenizer>> sequence =
        SequencePreTokenizer::Create(std::move(spec->pre_tokenizer_steps));
    if (!sequence.ok()) return sequence.status();
    sequence_ = std::move(*sequence);
  }
  absl::StatusOr<std::unique_ptr<BpeModel>> model =
      BpeModel::Create(spec->model, {.enable_cache = options.enable_word_cache,
                                     .linear_merge_max_symbols = options.linear_merge_max_symbols});
  if (!model.ok()) return model.status();
  model_ = std::move(*model);
  absl::StatusOr<std::unique_ptr<AddedVocabulary>> added =
      AddedVocabulary::Create(spec->added_tokens, *model_, *normalizer_);
  if (!added.ok()) return added.status();
  added_ = std::move(*added);
  if (absl::Status s = BuildTokenTable(spec->piece_decoder); !s.ok()) return s;
  for (const auto* ids : {&template_prefix_, &template_suffix_}) {
    for (const TokenId id : *ids) {
      if (!HasToken(id)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "malformed tokenizer.json: post_processor special token id ", id, " has no token"));
      }
    }
  }
  return absl::OkStatus();
}

// Lays out, per id, the spelling (added tokens override the model's, as HF's id_to_token
// does), its byte-level-decoded bytes and whether decoding skips it as special.
absl::Status Tokenizer::BuildTokenTable(const PieceDecoderSpec& decoder) {
  std::vector<const std::string*> spelling;
  auto put = [&spelling](TokenId id, const std::string* text) {
    if (static_cast<size_t>(id) >= spelling.size()) spelling.resize(id + size_t{1}, nullptr);
    spelling[id] = text;
  };
  for (const auto& [token, id] : model_->vocab()) {
    if (spelling.size() > static_cast<size_t>(id) && spelling[id] != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: model.vocab id ",
                                                     id, " is used by both \"", *spelling[id],
                                                     "\" and \"", token, "\""));
    }
    put(id, &token);
  }
  // HF skips a token when its decode spelling is the content of a special token.
  absl::flat_hash_map<std::string_view, bool> special_contents;
  for (size_t i = 0; i < added_->tokens().size(); ++i) {
    const AddedTokenSpec& t = added_->tokens()[i];
    put(t.id, &added_->spelling(i));
    added_ids_.emplace(t.content, t.id);
    if (t.special) special_contents[t.content] = true;
  }
  token_text_offsets_.assign(1, 0);
  token_offsets_.assign(1, 0);
  flags_.assign(spelling.size(), 0);
  for (size_t id = 0; id < spelling.size(); ++id) {
    if (spelling[id] != nullptr) {
      token_text_ += *spelling[id];
      flags_[id] = kHasToken | (special_contents.contains(*spelling[id]) ? kSpecial : 0);
      if (byte_level_) {
        token_bytes_ += byte_level::DecodeToken(*spelling[id]);
      } else {
        std::string text = *spelling[id];
        for (const auto& [from, to] : decoder.replacements) {
          text = absl::StrReplaceAll(text, {{from, to}});
        }
        // HF's ByteFallback decoder: "<0x" + two hex digits + ">" is that byte.
        int byte = -1;
        if (decoder.byte_fallback && text.size() == 6 && text.starts_with("<0x") &&
            text.back() == '>' && std::isxdigit(static_cast<unsigned char>(text[3])) &&
            std::isxdigit(static_cast<unsigned char>(text[4]))) {
          byte = std::stoi(text.substr(3, 2), nullptr, 16);
        }
        if (byte >= 0) {
          token_bytes_ += static_cast<char>(byte);
          flags_[id] |= kByte;
        } else {
          token_bytes_ += text;
        }
      }
    }
    if (token_bytes_.size() > std::numeric_limits<uint32_t>::max() ||
        token_text_.size() > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError("tokenizer vocabulary is too large");
    }
    token_text_offsets_.push_back(static_cast<uint32_t>(token_text_.size()));
    token_offsets_.push_back(static_cast<uint32_t>(token_bytes_.size()));
  }
  return absl::OkStatus();
}

// HF's Metaspace pre-tokenizer: ' ' -> replacement, prepend it (kFirst: only at the start of
// the input), split before each replacement (MergedWithNext), then BPE on each word.
void Tokenizer::EncodeMetaspace(std::string_view piece, bool at_text_start,
                                std::vector<TokenId>* ids) const {
  const MetaspaceOptions& m = *metaspace_;
  std::string text;
  text.reserve(piece.size() + 8);
  for (const char c : piece) {
    if (c == ' ') {
      text += m.replacement;
    } else {
      text += c;
    }
  }
  const bool prepend = m.prepend == MetaspaceOptions::Prepend::kAlways ||
                       (m.prepend == MetaspaceOptions::Prepend::kFirst && at_text_start);
  if (prepend && !text.starts_with(m.replacement)) text.insert(0, m.replacement);
  if (!m.split) {
    model_->Tokenize(text, ids);
    return;
  }
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t next = rest.find(m.replacement, 1);
    if (next == std::string_view::npos) next = rest.size();
    model_->Tokenize(rest.substr(0, next), ids);
    rest.remove_prefix(next);
  }
}

absl::Status Tokenizer::EncodeNormalizedPiece(std::string_view piece, bool at_text_start,
                                              std::vector<TokenId>* ids) const {
  EncodeScratch& scratch = Scratch();
  added_->SplitNormalized(piece, &scratch.normalized_pieces);
  for (const TextPiece& p : scratch.normalized_pieces) {
    if (p.id >= 0) {
      ids->push_back(p.id);
      continue;
    }
    if (p.end <= p.begin) continue;  // HF drops empty splits
    if (!byte_level_) {
      const std::string_view text = piece.substr(p.begin, p.end - p.begin);
      if (metaspace_) {
        EncodeMetaspace(text, at_text_start && p.begin == 0, ids);
      } else {
        model_->Tokenize(text, ids);
      }
      continue;
    }
    if (sequence_ != nullptr) {
      absl::Status s =
          sequence_->Split(piece.substr(p.begin, p.end - p.begin), &scratch.owned_words);
      if (!s.ok()) return s;
      for (const std::string& w : scratch.owned_words) model_->Tokenize(w, ids);
      continue;
    }
    absl::StatusOr<std::string_view> text = pre_tokenizer_->Split(
        piece.substr(p.begin, p.end - p.begin), &scratch.prefixed, &scratch.words);
    if (!text.ok()) return text.status();
    for (const WordSpan& w : scratch.words) model_->Tokenize(text->substr(w.begin, w.length), ids);
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::EncodeInto(std::string_view text, std::vector<TokenId>* ids) const {
  EncodeScratch& scratch = Scratch();
  added_->SplitRaw(text, &scratch.raw_pieces);
  // EncodeNormalizedPiece uses the other scratch buffers, never raw_pieces or normalized.
  for (const TextPiece& p : scratch.raw_pieces) {
    if (p.id >= 0) {
      ids->push_back(p.id);
      continue;
    }
    if (p.end <= p.begin) continue;
    const std::string_view normalized =
        normalizer_->Normalize(text.substr(p.begin, p.end - p.begin), &scratch.normalized);
    if (absl::Status s = EncodeNormalizedPiece(normalized, p.begin == 0, ids); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenId>> Tokenizer::Encode(std::string_view text) const {
  if (absl::Status s = utf8::Validate(text); !s.ok()) return s;
  if (text.size() >= std::numeric_limits<uint32_t>::max() / 2) {
    return absl::InvalidArgumentError(absl::StrCat("text of ", text.size(), " bytes is too long"));
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 4 + 8);
  absl::Status status = EncodeInto(text, &ids);
  // Do not keep a copy of a huge text alive on this thread.
  if (std::string& normalized = Scratch().normalized; normalized.capacity() > (size_t{1} << 20)) {
    std::string().swap(normalized);
  }
  if (!status.ok()) return status;
  return ids;
}

absl::StatusOr<std::vector<TokenId>> Tokenizer::EncodeWithSpecialTokens(
    std::string_view text) const {
  absl::StatusOr<std::vector<TokenId>> ids = Encode(text);
  if (!ids.ok() || (template_prefix_.empty() && template_suffix_.empty())) return ids;
  ids->insert(ids->begin(), template_prefix_.begin(), template_prefix_.end());
  ids->insert(ids->end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

absl::StatusOr<std::vector<std::vector<TokenId>>> Tokenizer::EncodeBatch(
    std::span<const std::string> texts, int num_threads) const {
  std::vector<std::vector<TokenId>> results(texts.size());
  std::vector<absl::Status> statuses(texts.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < texts.size(); i = next.fetch_add(1)) {
      absl::StatusOr<std::vector<TokenId>> ids = Encode(texts[i]);
      if (ids.ok()) {
        results[i] = std::move(*ids);
      } else {
        statuses[i] = ids.status();
      }
    }
  };
  const size_t threads = std::min<size_t>(std::max(num_threads, 1), texts.size());
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::jthread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
  }  // the jthreads join here
  for (size_t i = 0; i < texts.size(); ++i) {
    if (!statuses[i].ok()) return WithContext(statuses[i], absl::StrCat("texts[", i, "]"));
  }
  return results;
}

// SentencePiece-style: HF's ByteFallback decodes a run of byte tokens as UTF-8 if it is valid
// and else as one U+FFFD per token; then the decoder's Strip.
absl::StatusOr<std::string> Tokenizer::DecodePieces(std::span<const TokenId> ids,
                                                    bool skip_special_tokens) const {
  std::string text;
  std::string run;
  bool first = true;
  auto flush_run = [&] {
    if (utf8::FindInvalid(run) == utf8::kAllValid) {
      text += run;
    } else {
      for (size_t i = 0; i < run.size(); ++i) text += "\xEF\xBF\xBD";
    }
    run.clear();
  };
  for (const TokenId id : ids) {
    if (!HasToken(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is not in the vocabulary (ids are 0..", vocab_size() - 1, ")"));
    }
    if (skip_special_tokens && (flags_[id] & kSpecial)) continue;
    if (flags_[id] & kByte) {
      run += token_bytes_[token_offsets_[id]];
      first = false;
      continue;
    }
    flush_run();
    if (first && !drop_in_first_.empty()) {
      text += FirstTokenText(id);
    } else {
      text.append(token_bytes_, token_offsets_[id], token_offsets_[id + 1] - token_offsets_[id]);
    }
    first = false;
  }
  flush_run();
  int left = strip_start_;
  StripLeading(&text, &left);
  return text;  // valid UTF-8: tokens are JSON strings, byte runs are checked
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const TokenId> ids,
                                              bool skip_special_tokens) const {
  if (!byte_level_) return DecodePieces(ids, skip_special_tokens);
  std::string bytes;
  for (const TokenId id : ids) {
    if (!HasToken(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is not in the vocabulary (ids are 0..", vocab_size() - 1, ")"));
    }
    if (skip_special_tokens && (flags_[id] & kSpecial)) continue;
    bytes.append(token_bytes_, token_offsets_[id], token_offsets_[id + 1] - token_offsets_[id]);
  }
  if (utf8::FindInvalid(bytes) == utf8::kAllValid) return bytes;
  std::string text;
  text.reserve(bytes.size() + 8);
  utf8::AppendLossy(bytes, &text);
  return text;
}

std::string Tokenizer::DecodeKnown(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::vector<TokenId> known;
  known.reserve(ids.size());
  for (const TokenId id : ids) {
    if (HasToken(id)) known.push_back(id);
  }
  return Decode(known, skip_special_tokens).value_or(std::string());
}

std::optional<TokenId> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_ids_.find(absl::string_view(token.data(), token.size()));
      it != added_ids_.end()) {
    return it->second;
  }
  return model_->TokenToId(token);
}

std::optional<std::string_view> Tokenizer::IdToToken(TokenId id) const {
  if (!HasToken(id)) return std::nullopt;
  return std::string_view(token_text_)
      .substr(token_text_offsets_[id], token_text_offsets_[id + 1] - token_text_offsets_[id]);
}

void Tokenizer::StripLeading(std::string* text, int* left) const {
  size_t cut = 0;
  while (*left > 0 && !strip_content_.empty() &&
         std::string_view(*text).substr(cut).starts_with(strip_content_)) {
    cut += strip_content_.size();
    --*left;
  }
  text->erase(0, cut);
  if (!text->empty()) *left = 0;
}

std::string Tokenizer::FirstTokenText(TokenId id) const {
  if (drop_in_first_.empty() || !HasToken(id)) return std::string(TokenBytes(id).value_or(""));
  const std::string_view token = *IdToToken(id);
  return absl::StrReplaceAll(absl::string_view(token.data(), token.size()), {{drop_in_first_, ""}});
}

bool Tokenizer::IsSpecial(TokenId id) const { return HasToken(id) && (flags_[id] & kSpecial); }

absl::StatusOr<std::string_view> Tokenizer::TokenBytes(TokenId id) const {
  if (!HasToken(id)) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
  }
  return std::string_view(token_bytes_)
      .substr(token_offsets_[id], token_offsets_[id + 1] - token_offsets_[id]);
}

}  // namespace mamba::engine
