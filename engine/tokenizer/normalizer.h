// Text normalizers of a tokenizer.json ("NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Prepend",
// "Replace" of a literal, and a "Sequence" of them), implemented with utf8proc.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mamba::engine {

struct NormalizerStep {
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kPrepend, kReplace };
  Kind kind = Kind::kNfc;
  std::string prepend;  // kPrepend: the text; kReplace: the (non-empty) literal to replace
  std::string content;  // kReplace: what replaces each non-overlapping occurrence
};

// Applies the steps in order. Stateless and thread-safe.
class Normalizer {
 public:
  Normalizer() = default;
  explicit Normalizer(std::vector<NormalizerStep> steps) : steps_(std::move(steps)) {}

  bool empty() const { return steps_.empty(); }

  // Normalizes valid UTF-8. Returns either `text` itself (when nothing changes, the common
  // case, without copying) or a view of `*scratch`.
  std::string_view Normalize(std::string_view text, std::string* scratch) const;

 private:
  std::vector<NormalizerStep> steps_;
};

namespace normalization {

// NFC of valid UTF-8 as Hugging Face computes it, appended to `out`. Only the short spans
// around characters that may change under NFC go through utf8proc; the rest is copied.
void AppendNfc(std::string_view text, std::string* out);

// Characters that Hugging Face's (Unicode 9.0) normalization data does not know but utf8proc
// gives normalization properties: NFC treats them as plain starters, as HF does.
bool IsInertForHf(char32_t cp);

// True when NFC leaves `text` unchanged, decided without normalizing in the common cases.
bool IsObviouslyNfc(std::string_view text);

}  // namespace normalization
}  // namespace mamba::engine
