// tokenizer.json parsing with nlohmann::json. Its exceptions (parse and type errors) are
// caught here and never leave this file.
#include "engine/tokenizer/tokenizer_json.h"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/tokenizer/utf8.h"

namespace mamba::engine {
namespace {

using Json = nlohmann::json;

absl::Status Unsupported(const std::string& what) {
  return absl::UnimplementedError(
      absl::StrCat("tokenizer.json uses ", what, ", which is not supported"));
}

absl::Status Malformed(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: ", what));
}

// The "type" member of a component object.
absl::StatusOr<std::string> TypeOf(const Json& j, const std::string& where) {
  if (!j.is_object()) return Malformed(absl::StrCat(where, " is not an object"));
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) {
    return Malformed(absl::StrCat(where, " has no \"type\""));
  }
  return it->get<std::string>();
}

// An optional boolean member; `fallback` when absent or null.
absl::StatusOr<bool> BoolMember(const Json& j, const char* key, bool fallback,
                                const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Malformed(absl::StrCat(where, ".", key, " is not a boolean"));
  return it->get<bool>();
}

absl::Status ParseNormalizer(const Json& j, const std::string& where,
                             std::vector<NormalizerStep>* steps) {
  if (j.is_null()) return absl::OkStatus();
  absl::StatusOr<std::string> type = TypeOf(j, where);
  if (!type.ok()) return type.status();
  using Kind = NormalizerStep::Kind;
  if (*type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) return Malformed(absl::StrCat(where, ".normalizers"));
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s =
          ParseNormalizer((*it)[i], absl::StrCat(where, ".normalizers[", i, "]"), steps);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (*type == "Prepend") {
    auto it = j.find("prepend");
    if (it == j.end() || !it->is_string()) return Malformed(absl::StrCat(where, ".prepend"));
    steps->push_back({Kind::kPrepend, it->get<std::string>(), ""});
    return absl::OkStatus();
  }
  if (*type == "Replace") {
    // {"type": "Replace", "pattern": {"String": "a"}, "content": "b"}; Regex patterns are not
    // implemented.
    auto pattern = j.find("pattern");
    auto content = j.find("content");
    if (pattern == j.end() || !pattern->is_object() || content == j.end() ||
        !content->is_string()) {
      return Malformed(absl::StrCat(where, " (Replace) needs a pattern and a string content"));
    }
    auto literal = pattern->find("String");
    if (literal == pattern->end() || !literal->is_string()) {
      return Unsupported(absl::StrCat("normalizer Replace with pattern ", pattern->dump(), " (",
                                      where, "; only String patterns are implemented)"));
    }
    if (literal->get<std::string>().empty()) {
      return Unsupported(absl::StrCat("normalizer Replace of an empty String (", where, ")"));
    }
    steps->push_back({Kind::kReplace, literal->get<std::string>(), content->get<std::string>()});
    return absl::OkStatus();
  }
  static const std::pair<const char*, Kind> kSimple[] = {{"NFC", Kind::kNfc},
                                                         {"NFD", Kind::kNfd},
                                                         {"NFKC", Kind::kNfkc},
                                                         {"NFKD", Kind::kNfkd},
                                                         {"Lowercase", Kind::kLowercase}};
  for (const auto& [name, kind] : kSimple) {
    if (*type == name) {
      steps->push_back({kind, "", ""});
      return absl::OkStatus();
    }
  }
  return Unsupported(absl::StrCat("normalizer type \"", *type, "\" (", where, ")"));
}

absl::Status ParseByteLevel(const Json& j, const std::string& where, ByteLevelOptions* options) {
  if (!j.contains("add_prefix_space")) {
    return Malformed(absl::StrCat(where, " (ByteLevel) has no add_prefix_space"));
  }
  absl::StatusOr<bool> prefix = BoolMember(j, "add_prefix_space", false, where);
  absl::StatusOr<bool> regex = BoolMember(j, "use_regex", true, where);
  if (!prefix.ok()) return prefix.status();
  if (!regex.ok()) return regex.status();
  options->add_prefix_space = *prefix;
  options->use_regex = *regex;
  return absl::OkStatus();
}

// HF's SplitDelimiterBehavior, serialized by name.
absl::StatusOr<SplitBehavior> ParseBehavior(const Json& j, const std::string& where,
                                            bool required) {
  auto it = j.find("behavior");
  if (it == j.end() || it->is_null()) {
    if (required) return Malformed(absl::StrCat(where, " has no behavior"));
    return SplitBehavior::kIsolated;
  }
  static const std::pair<const char*, SplitBehavior> kNames[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  if (it->is_string()) {
    for (const auto& [name, behavior] : kNames) {
      if (it->get<std::string>() == name) return behavior;
    }
  }
  return Malformed(absl::StrCat(where, ".behavior ", it->dump(), " is not a split behavior"));
}

// One pre-tokenizer (a Sequence is flattened: its steps run in order on every piece, which is
// what nesting means too).
absl::Status ParsePreTokenizerStep(const Json& j, const std::string& where,
                                   std::vector<PreTokenizerStep>* steps) {
  absl::StatusOr<std::string> type = TypeOf(j, where);
  if (!type.ok()) return type.status();
  using Kind = PreTokenizerStep::Kind;
  PreTokenizerStep step;
  if (*type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) return Malformed(absl::StrCat(where, ".pretokenizers"));
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s =
          ParsePreTokenizerStep((*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]"), steps);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  } else if (*type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
    if (absl::Status s = ParseByteLevel(j, where, &step.byte_level); !s.ok()) return s;
  } else if (*type == "Punctuation") {
    step.kind = Kind::kPunctuation;
    absl::StatusOr<SplitBehavior> behavior = ParseBehavior(j, where, /*required=*/false);
    if (!behavior.ok()) return behavior.status();
    step.behavior = *behavior;
  } else if (*type == "Digits") {
    step.kind = Kind::kDigits;
    absl::StatusOr<bool> individual = BoolMember(j, "individual_digits", false, where);
    if (!individual.ok()) return individual.status();
    step.individual_digits = *individual;
  } else if (*type == "Split") {
    auto pattern = j.find("pattern");
    if (pattern == j.end() || !pattern->is_object() || pattern->size() != 1) {
      return Malformed(absl::StrCat(where, ".pattern is not {\"String\": ..} or {\"Regex\": ..}"));
    }
    if (auto it = pattern->find("String"); it != pattern->end() && it->is_string()) {
      step.kind = Kind::kSplitString;
      step.pattern = it->get<std::string>();
    } else if (auto it = pattern->find("Regex"); it != pattern->end() && it->is_string()) {
      step.kind = Kind::kSplitRegex;
      step.pattern = it->get<std::string>();
    } else {
      return Malformed(absl::StrCat(where, ".pattern is not {\"String\": ..} or {\"Regex\": ..}"));
    }
    absl::StatusOr<SplitBehavior> behavior = ParseBehavior(j, where, /*required=*/true);
    if (!behavior.ok()) return behavior.status();
    step.behavior = *behavior;
    absl::StatusOr<bool> invert = BoolMember(j, "invert", false, where);
    if (!invert.ok()) return invert.status();
    step.invert = *invert;
  } else {
    return Unsupported(absl::StrCat("pre_tokenizer type \"", *type, "\" (", where, ")"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

// A lone ByteLevel (also inside a one-element Sequence) fills `options` and takes the fast
// path; anything else becomes `steps` for SequencePreTokenizer.
absl::Status ParsePreTokenizer(const Json& j, ByteLevelOptions* options,
                               std::vector<PreTokenizerStep>* steps) {
  if (j.is_null()) return Unsupported("no pre_tokenizer (byte-level BPE needs ByteLevel)");
  std::vector<PreTokenizerStep> parsed;
  if (absl::Status s = ParsePreTokenizerStep(j, "pre_tokenizer", &parsed); !s.ok()) return s;
  if (parsed.size() == 1 && parsed[0].kind == PreTokenizerStep::Kind::kByteLevel) {
    *options = parsed[0].byte_level;
    return absl::OkStatus();
  }
  if (std::none_of(parsed.begin(), parsed.end(), [](const PreTokenizerStep& s) {
        return s.kind == PreTokenizerStep::Kind::kByteLevel;
      })) {
    return Unsupported("a pre_tokenizer without ByteLevel (the BPE model here is byte-level)");
  }
  *steps = std::move(parsed);
  return absl::OkStatus();
}

absl::Status ParseMetaspaceOptions(const Json& j, const std::string& where, MetaspaceOptions* out);

// A String pattern member {"String": "..."}; Unimplemented for {"Regex": ..}.
absl::StatusOr<std::string> StringPattern(const Json& j, const std::string& where) {
  auto pattern = j.find("pattern");
  if (pattern == j.end() || !pattern->is_object())
    return Malformed(absl::StrCat(where, ".pattern"));
  auto literal = pattern->find("String");
  if (literal == pattern->end() || !literal->is_string()) {
    return Unsupported(absl::StrCat(where, " with pattern ", pattern->dump(),
                                    " (only String patterns are implemented)"));
  }
  return literal->get<std::string>();
}

// TemplateProcessing's "single" template: [{"SpecialToken": {"id": "<s>"}}, {"Sequence":
// {"id": "A"}}, ...], the special tokens' ids from "special_tokens". (Encode never adds them:
// it is HF's encode with add_special_tokens=False; EncodeWithSpecialTokens does.)
absl::Status ParseTemplate(const Json& post, TokenizerSpec* spec) {
  auto single = post.find("single");
  auto specials = post.find("special_tokens");
  if (single == post.end() || !single->is_array() || specials == post.end() ||
      !specials->is_object()) {
    return Malformed("post_processor (TemplateProcessing) needs single and special_tokens");
  }
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const Json& item = (*single)[i];
    const std::string where = absl::StrCat("post_processor.single[", i, "]");
    if (!item.is_object() || item.size() != 1) return Malformed(where);
    if (auto seq = item.find("Sequence"); seq != item.end()) {
      if (!seq->is_object() || seq->value("id", "") != "A" || seen_sequence) {
        return Unsupported(absl::StrCat(where, " ", item.dump(), " (only one Sequence A)"));
      }
      seen_sequence = true;
      continue;
    }
    auto special = item.find("SpecialToken");
    if (special == item.end() || !special->is_object() || !special->contains("id") ||
        !(*special)["id"].is_string()) {
      return Malformed(where);
    }
    const std::string name = (*special)["id"].get<std::string>();
    auto entry = specials->find(name);
    if (entry == specials->end() || !entry->is_object() || !entry->contains("ids") ||
        !(*entry)["ids"].is_array()) {
      return Malformed(absl::StrCat(where, ": special token \"", name,
                                    "\" is not in post_processor.special_tokens"));
    }
    for (const Json& id : (*entry)["ids"]) {
      if (!id.is_number_unsigned() || id.get<uint64_t>() > std::numeric_limits<TokenId>::max()) {
        return Malformed(absl::StrCat("post_processor.special_tokens[\"", name, "\"].ids"));
      }
      (seen_sequence ? spec->template_suffix : spec->template_prefix)
          .push_back(static_cast<TokenId>(id.get<uint64_t>()));
    }
  }
  if (!seen_sequence) return Malformed("post_processor.single has no Sequence A");
  return absl::OkStatus();
}

// SentencePiece-style decoders: Sequence[Replace*, ByteFallback?, Fuse?, Strip?] (Mistral's
// and Llama 2's order), or any prefix of it.
absl::Status ParsePieceDecoder(const Json& decoder, PieceDecoderSpec* spec) {
  std::vector<const Json*> steps;
  absl::StatusOr<std::string> type = TypeOf(decoder, "decoder");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    auto it = decoder.find("decoders");
    if (it == decoder.end() || !it->is_array()) return Malformed("decoder.decoders");
    for (const Json& d : *it) steps.push_back(&d);
  } else {
    steps.push_back(&decoder);
  }
  int stage = 0;  // 0: Replace, 1: after ByteFallback, 2: after Fuse, 3: after Strip
  std::vector<std::string> names;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Json& d = *steps[i];
    const std::string where = absl::StrCat("decoder.decoders[", i, "]");
    absl::StatusOr<std::string> t = TypeOf(d, where);
    if (!t.ok()) return t.status();
    names.push_back(*t);
    int next_stage = -1;
    if (*t == "Replace" && stage == 0) {
      absl::StatusOr<std::string> pattern = StringPattern(d, "decoder Replace");
      if (!pattern.ok()) return pattern.status();
      auto content = d.find("content");
      if (content == d.end() || !content->is_string()) return Malformed(where + ".content");
      if (pattern->empty()) return Unsupported("decoder Replace of an empty String");
      spec->replacements.emplace_back(*pattern, content->get<std::string>());
      next_stage = 0;
    } else if (*t == "ByteFallback" && stage == 0) {
      spec->byte_fallback = true;
      next_stage = 1;
    } else if (*t == "Fuse" && stage <= 1) {
      next_stage = 2;
    } else if (*t == "Strip" && stage == 2) {
      auto content = d.find("content");
      auto start = d.find("start");
      auto stop = d.find("stop");
      if (content == d.end() || !content->is_string() || start == d.end() ||
          !start->is_number_unsigned() || stop == d.end() || !stop->is_number_unsigned()) {
        return Malformed(where + " (Strip) needs content, start and stop");
      }
      if (stop->get<uint64_t>() != 0) return Unsupported("decoder Strip with stop > 0");
      spec->strip_content = content->get<std::string>();
      spec->strip_start = static_cast<int>(std::min<uint64_t>(start->get<uint64_t>(), 1 << 20));
      size_t pos = 0;
      if (!spec->strip_content.empty()) utf8::DecodeValid(spec->strip_content, &pos);
      if (pos != spec->strip_content.size() || pos == 0) {
        return Malformed(where + ".content is not one character");
      }
      next_stage = 3;
    }
    if (next_stage < 0) {
      return Unsupported(absl::StrCat("decoder [", absl::StrJoin(names, ", "),
                                      "...] (implemented: ByteLevel, or SentencePiece-style "
                                      "Sequence[Replace*, ByteFallback, Fuse, Strip])"));
    }
    stage = next_stage;
  }
  return absl::OkStatus();
}

// Decoder and post-processor. A ByteLevel decoder makes a byte-level tokenizer; any other we
// implement a SentencePiece-style one.
absl::Status ParseDecoderAndPostProcessor(const Json& root, TokenizerSpec* spec) {
  const Json decoder = root.value("decoder", Json());
  if (decoder.is_null()) return Unsupported("no decoder (HF would join tokens with spaces)");
  absl::StatusOr<std::string> type = TypeOf(decoder, "decoder");
  if (!type.ok()) return type.status();
  spec->byte_level = *type == "ByteLevel";
  if (*type == "Metaspace") {
    MetaspaceOptions options;
    if (absl::Status s = ParseMetaspaceOptions(decoder, "decoder", &options); !s.ok()) return s;
    spec->piece_decoder.replacements.emplace_back(options.replacement, " ");
    if (options.prepend != MetaspaceOptions::Prepend::kNever) {
      spec->piece_decoder.drop_in_first = options.replacement;
    }
  } else if (!spec->byte_level) {
    if (*type != "Sequence" && *type != "Replace" && *type != "ByteFallback" && *type != "Fuse") {
      return Unsupported(absl::StrCat("decoder type \"", *type, "\""));
    }
    if (absl::Status s = ParsePieceDecoder(decoder, &spec->piece_decoder); !s.ok()) return s;
  }
  const Json post = root.value("post_processor", Json());
  if (post.is_null()) return absl::OkStatus();
  type = TypeOf(post, "post_processor");
  if (!type.ok()) return type.status();
  if (*type == "TemplateProcessing") return ParseTemplate(post, spec);
  if (*type != "ByteLevel" || !spec->byte_level) {
    return Unsupported(absl::StrCat("post_processor type \"", *type, "\""));
  }
  return absl::OkStatus();
}

// The pre-tokenizer of a SentencePiece-style tokenizer: none, or Metaspace.
absl::Status ParseMetaspace(const Json& j, TokenizerSpec* spec) {
  if (j.is_null()) return absl::OkStatus();
  absl::StatusOr<std::string> type = TypeOf(j, "pre_tokenizer");
  if (!type.ok()) return type.status();
  if (*type != "Metaspace") {
    return Unsupported(absl::StrCat("pre_tokenizer type \"", *type,
                                    "\" without a ByteLevel decoder (SentencePiece-style "
                                    "tokenizers may use only Metaspace)"));
  }
  MetaspaceOptions options;
  if (absl::Status s = ParseMetaspaceOptions(j, "pre_tokenizer", &options); !s.ok()) return s;
  spec->metaspace = options;
  return absl::OkStatus();
}

absl::Status ParseMetaspaceOptions(const Json& j, const std::string& where, MetaspaceOptions* out) {
  MetaspaceOptions options;
  if (auto it = j.find("replacement"); it != j.end()) {
    if (!it->is_string()) return Malformed(where + ".replacement");
    options.replacement = it->get<std::string>();
    size_t pos = 0;
    if (!options.replacement.empty()) utf8::DecodeValid(options.replacement, &pos);
    if (pos == 0 || pos != options.replacement.size()) {
      return Malformed(where + ".replacement is not one character");
    }
  }
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    const std::string scheme = it->is_string() ? it->get<std::string>() : "";
    if (scheme == "always") {
      options.prepend = MetaspaceOptions::Prepend::kAlways;
    } else if (scheme == "first") {
      options.prepend = MetaspaceOptions::Prepend::kFirst;
    } else if (scheme == "never") {
      options.prepend = MetaspaceOptions::Prepend::kNever;
    } else {
      return Malformed(absl::StrCat(where, ".prepend_scheme ", it->dump()));
    }
  } else {
    // Older files: add_prefix_space (default true) means "always".
    absl::StatusOr<bool> prefix = BoolMember(j, "add_prefix_space", true, where);
    if (!prefix.ok()) return prefix.status();
    options.prepend =
        *prefix ? MetaspaceOptions::Prepend::kAlways : MetaspaceOptions::Prepend::kNever;
  }
  absl::StatusOr<bool> split = BoolMember(j, "split", true, where);
  if (!split.ok()) return split.status();
  options.split = *split;
  *out = options;
  return absl::OkStatus();
}

absl::Status ParseMerges(const Json& merges, BpeSpec* spec) {
  if (!merges.is_array()) return Malformed("model.merges is not an array");
  spec->merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    if (m.is_string()) {
      // HF's convert_merges_to_hashmap: skip "#version" lines, then exactly "a b".
      const std::string& line = m.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      if (parts.size() != 2) return Malformed(absl::StrCat("model.merges[", i, "] \"", line, "\""));
      spec->merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Malformed(absl::StrCat("model.merges[", i, "] is neither \"a b\" nor [\"a\", \"b\"]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseVocab(const Json& vocab, BpeSpec* spec) {
  if (!vocab.is_object()) return Malformed("model.vocab is not an object");
  spec->vocab.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<TokenId>::max()) {
      return Malformed(absl::StrCat("model.vocab[\"", token, "\"] is not a valid id"));
    }
    spec->vocab.emplace_back(token, static_cast<TokenId>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status ParseModel(const Json& model, BpeSpec* spec) {
  if (!model.is_object()) return Malformed("model is not an object");
  const std::string type = model.value("type", std::string(model.contains("merges") ? "BPE" : ""));
  if (type != "BPE") return Unsupported(absl::StrCat("model type \"", type, "\""));
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      return Unsupported("model.dropout (BPE dropout)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() &&
        !(it->is_string() && it->get<std::string>().empty())) {
      return Unsupported(absl::StrCat("model.", key));
    }
  }
  absl::StatusOr<bool> byte_fallback = BoolMember(model, "byte_fallback", false, "model");
  absl::StatusOr<bool> fuse_unk = BoolMember(model, "fuse_unk", false, "model");
  absl::StatusOr<bool> ignore_merges = BoolMember(model, "ignore_merges", false, "model");
  for (const auto* s : {&byte_fallback, &fuse_unk, &ignore_merges}) {
    if (!s->ok()) return s->status();
  }
  if (*byte_fallback && spec->byte_level) {
    return Unsupported("model.byte_fallback with a ByteLevel decoder");
  }
  spec->byte_fallback = *byte_fallback;
  spec->fuse_unk = *fuse_unk;
  spec->ignore_merges = *ignore_merges;
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) return Malformed("model.unk_token is not a string");
    spec->unk_token = it->get<std::string>();
  }
  auto vocab = model.find("vocab");
  auto merges = model.find("merges");
  if (vocab == model.end() || merges == model.end()) return Malformed("model lacks vocab/merges");
  if (absl::Status s = ParseVocab(*vocab, spec); !s.ok()) return s;
  return ParseMerges(*merges, spec);
}

absl::Status ParseAddedTokens(const Json& tokens, std::vector<AddedTokenSpec>* out) {
  if (tokens.is_null()) return absl::OkStatus();
  if (!tokens.is_array()) return Malformed("added_tokens is not an array");
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Json& t = tokens[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string()) {
      return Malformed(absl::StrCat(where, " needs an integer id and a string content"));
    }
    AddedTokenSpec spec;
    spec.id = static_cast<TokenId>(t["id"].get<int64_t>());
    spec.content = t["content"].get<std::string>();
    absl::StatusOr<bool> special = BoolMember(t, "special", false, where);
    if (!special.ok()) return special.status();
    spec.special = *special;
    absl::StatusOr<bool> flags[] = {
        BoolMember(t, "single_word", false, where), BoolMember(t, "lstrip", false, where),
        BoolMember(t, "rstrip", false, where), BoolMember(t, "normalized", !spec.special, where)};
    for (const auto& f : flags) {
      if (!f.ok()) return f.status();
    }
    spec.single_word = *flags[0];
    spec.lstrip = *flags[1];
    spec.rstrip = *flags[2];
    spec.normalized = *flags[3];
    out->push_back(std::move(spec));
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenizerSpec> ParseRoot(const Json& root) {
  if (!root.is_object()) return Malformed("the top level is not an object");
  for (const char* key : {"truncation", "padding"}) {
    if (root.contains(key) && !root[key].is_null()) return Unsupported(key);
  }
  TokenizerSpec spec;
  if (absl::Status s =
          ParseNormalizer(root.value("normalizer", Json()), "normalizer", &spec.normalizer);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseDecoderAndPostProcessor(root, &spec); !s.ok()) return s;
  if (spec.byte_level) {
    if (absl::Status s = ParsePreTokenizer(root.value("pre_tokenizer", Json()), &spec.pre_tokenizer,
                                           &spec.pre_tokenizer_steps);
        !s.ok()) {
      return s;
    }
  } else if (absl::Status s = ParseMetaspace(root.value("pre_tokenizer", Json()), &spec); !s.ok()) {
    return s;
  }
  if (!root.contains("model")) return Malformed("no model");
  spec.model.byte_level = spec.byte_level;
  if (absl::Status s = ParseModel(root["model"], &spec.model); !s.ok()) return s;
  if (absl::Status s = ParseAddedTokens(root.value("added_tokens", Json()), &spec.added_tokens);
      !s.ok()) {
    return s;
  }
  return spec;
}

}  // namespace

absl::StatusOr<TokenizerSpec> ParseTokenizerJson(std::string_view json_text) {
  // serde_json (HF) rejects invalid UTF-8; nlohmann would pass it through into token strings.
  if (absl::Status s = utf8::Validate(json_text); !s.ok()) {
    return Malformed(std::string(s.message()));
  }
  try {
    const Json root = Json::parse(json_text.begin(), json_text.end());
    return ParseRoot(root);
  } catch (const Json::exception& e) {
    return Malformed(e.what());
  }
}

}  // namespace mamba::engine
