// GPT-2 pre-tokenization through PCRE2, with the character classes adjusted so that every code
// point falls in the same class as in Hugging Face's Oniguruma regex.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer/pre_tokenizer.h"

#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace mamba::engine {
namespace {

// Hugging Face's regex engine (Oniguruma) knows Unicode 16; PCRE2 10.42 knows Unicode 14. These
// are the letters and numbers of Unicode 15 and 16, which HF treats as \p{L} / \p{N} and
// PCRE2 10.42 does not (found by comparing every code point; tokenizer_differential_test.cc
// repeats that check). Newer PCRE2 versions already include them, which is harmless.
constexpr char32_t kExtraLetters[][2] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3},
    {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5},
    {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0},
    {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x1342F, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C},
    {0x18CFF, 0x18CFF}, {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1DF25, 0x1DF2A},
    {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB}, {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0},
    {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF}};
constexpr char32_t kExtraNumbers[][2] = {{0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9},
                                         {0x11F50, 0x11F59}, {0x16130, 0x16139}, {0x16D70, 0x16D79},
                                         {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1E4F0, 0x1E4F9},
                                         {0x1E5F1, 0x1E5FA}};

// Oniguruma's \s, the Unicode White_Space property. (PCRE2's \s with UCP adds U+180E.)
constexpr char kWhiteSpace[] =
    R"(\t\n\x{0B}\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

template <size_t N>
std::string ClassBody(std::string_view property, const char32_t (&extra)[N][2]) {
  std::string body(property);
  for (const auto& [lo, hi] : extra) {
    absl::StrAppend(&body, "\\x{", absl::Hex(lo), "}-\\x{", absl::Hex(hi), "}");
  }
  return body;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  (GPT-2's pattern)
std::string BuildGpt2Pattern() {
  const std::string letters = ClassBody("\\p{L}", kExtraLetters);
  const std::string numbers = ClassBody("\\p{N}", kExtraNumbers);
  return absl::StrCat("'s|'t|'re|'ve|'m|'ll|'d| ?[", letters, "]+| ?[", numbers, "]+| ?[^",
                      kWhiteSpace, letters, numbers, "]+|[", kWhiteSpace, "]+(?![^", kWhiteSpace,
                      "])|[", kWhiteSpace, "]+");
}

// Per-thread PCRE2 match state: match data and a JIT stack large enough for any input.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;

  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return std::string(reinterpret_cast<const char*>(buffer));
}

}  // namespace

struct ByteLevelPreTokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() { pcre2_code_free(code); }
};

std::string_view ByteLevelPreTokenizer::Pattern() {
  static const std::string* pattern = new std::string(BuildGpt2Pattern());
  return *pattern;
}

ByteLevelPreTokenizer::ByteLevelPreTokenizer(const ByteLevelOptions& options,
                                             std::unique_ptr<Regex> regex)
    : options_(options), regex_(std::move(regex)) {}

ByteLevelPreTokenizer::~ByteLevelPreTokenizer() = default;

absl::StatusOr<std::unique_ptr<ByteLevelPreTokenizer>> ByteLevelPreTokenizer::Create(
    const ByteLevelOptions& options) {
  auto regex = std::make_unique<Regex>();
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  const std::string_view pattern = Pattern();
  regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF, &error, &error_offset, nullptr);
  if (regex->code == nullptr) {
    return absl::InternalError(absl::StrCat("PCRE2 rejected the GPT-2 pattern at offset ",
                                            error_offset, ": ", Pcre2Message(error)));
  }
  // Without JIT (e.g. an executable-memory policy) pcre2_match still gives the same words.
  regex->jit = pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<ByteLevelPreTokenizer>(
      new ByteLevelPreTokenizer(options, std::move(regex)));
}

absl::Status ByteLevelPreTokenizer::SplitWithRegex(std::string_view text,
                                                   std::vector<WordSpan>* words) const {
  ThreadMatchState& state = MatchState();
  if (state.data == nullptr) return absl::ResourceExhaustedError("PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const PCRE2_SIZE length = text.size();
  PCRE2_SIZE offset = 0;
  while (offset < length) {
    // The text was validated once by the caller, hence PCRE2_NO_UTF_CHECK.
    const int rc = regex_->jit ? pcre2_jit_match(regex_->code, subject, length, offset,
                                                 PCRE2_NO_UTF_CHECK, state.data, state.context)
                               : pcre2_match(regex_->code, subject, length, offset,
                                             PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) return absl::InternalError(absl::StrCat("PCRE2 match: ", Pcre2Message(rc)));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const PCRE2_SIZE begin = ovector[0];
    const PCRE2_SIZE end = ovector[1];
    // HF splits with "Isolated" behaviour: text between matches is a word of its own. (The
    // pattern covers every character, so this does not happen in practice.)
    if (begin > offset) {
      words->push_back({static_cast<uint32_t>(offset), static_cast<uint32_t>(begin - offset)});
    }
    if (end == begin) {  // cannot happen with this pattern; never loop forever
      offset = begin + 1;
      while (offset < length && (subject[offset] & 0xC0) == 0x80) ++offset;
      continue;
    }
    words->push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(end - begin)});
    offset = end;
  }
  if (offset < length) {
    words->push_back({static_cast<uint32_t>(offset), static_cast<uint32_t>(length - offset)});
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string_view> ByteLevelPreTokenizer::Split(std::string_view piece,
                                                              std::string* scratch,
                                                              std::vector<WordSpan>* words) const {
  words->clear();
  std::string_view text = piece;
  if (options_.add_prefix_space && (piece.empty() || piece.front() != ' ')) {
    scratch->resize(piece.size() + 1);
    (*scratch)[0] = ' ';
    piece.copy(scratch->data() + 1, piece.size());
    text = *scratch;
  }
  if (!options_.use_regex) {
    if (!text.empty()) words->push_back({0, static_cast<uint32_t>(text.size())});
    return text;
  }
  if (absl::Status s = SplitWithRegex(text, words); !s.ok()) return s;
  return text;
}

}  // namespace mamba::engine
