#include "client/loadgen/workload.h"

#include <algorithm>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace mamba::client::loadgen {
namespace {

// Common English words; with the leading space most BPE vocabularies have each as one token.
constexpr const char* kWords[] = {
    "the",     "of",     "and",     "to",     "in",     "that",   "he",      "was",   "for",
    "it",      "with",   "as",      "his",    "on",     "be",     "at",      "by",    "had",
    "not",     "are",    "but",     "from",   "or",     "have",   "an",      "they",  "which",
    "one",     "you",    "were",    "her",    "all",    "she",    "there",   "would", "their",
    "we",      "him",    "been",    "has",    "when",   "who",    "will",    "more",  "no",
    "if",      "out",    "so",      "said",   "what",   "up",     "its",     "about", "into",
    "than",    "them",   "can",     "only",   "other",  "new",    "some",    "could", "time",
    "these",   "two",    "may",     "then",   "do",     "first",  "any",     "my",    "now",
    "such",    "like",   "our",     "over",   "man",    "me",     "even",    "most",  "made",
    "after",   "also",   "did",     "many",   "before", "must",   "through", "years", "where",
    "much",    "your",   "way",     "well",   "down",   "should", "because", "each",  "just",
    "those",   "people", "how",     "too",    "little", "state",  "good",    "very",  "make",
    "world",   "still",  "own",     "see",    "men",    "work",   "long",    "get",   "here",
    "between", "both",   "life",    "being",  "under",  "never",  "day",     "same",  "another",
    "know",    "while",  "last",    "might",  "us",     "great",  "old",     "year",  "off",
    "come",    "since",  "against", "go",     "came",   "right",  "used",    "take",  "three",
    "house",   "light",  "water",   "land",   "king",   "city",   "night",   "word",  "hand",
    "place",   "heart",  "earth",   "people", "father", "son",    "give",    "went",  "said",
    "unto",    "shall",  "thou",    "thy",    "lord",   "god",    "way",     "name"};

}  // namespace

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

int DrawLength(int len, double range_ratio, uint64_t stream) {
  if (len <= 0) return 0;
  const int lo = std::max(1, static_cast<int>(len * (1.0 - range_ratio)));
  const int hi = std::max(lo, static_cast<int>(len * (1.0 + range_ratio)));
  if (lo == hi) return lo;
  std::mt19937_64 rng(stream);
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

absl::StatusOr<std::unique_ptr<Workload>> Workload::Create(WorkloadOptions options,
                                                           Detokenizer detokenize) {
  if (options.turns < 1) return absl::InvalidArgumentError("--turns must be at least 1");
  if (options.dataset.empty()) {
    if (options.vocab_size < 2)
      return absl::InvalidArgumentError("the vocabulary size must be at least 2");
    if (options.input_len + options.shared_prefix_len < 1) {
      return absl::InvalidArgumentError("prompts need at least one token (--input-len)");
    }
  }
  if (options.output_len < 1) return absl::InvalidArgumentError("--output-len must be at least 1");
  if (options.range_ratio < 0 || options.range_ratio >= 1) {
    return absl::InvalidArgumentError("--range-ratio must be in [0, 1)");
  }
  if (options.num_prefixes < 1)
    return absl::InvalidArgumentError("--num-prefixes must be at least 1");
  std::unique_ptr<Workload> w(new Workload(std::move(options), std::move(detokenize)));
  if (!w->options_.dataset.empty()) {
    if (absl::Status s = w->LoadDataset(); !s.ok()) return s;
  }
  return w;
}

absl::Status Workload::LoadDataset() {
  std::ifstream in(options_.dataset);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open the dataset ", options_.dataset));
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const std::string where = absl::StrCat(options_.dataset, ":", number);
    if (!j.is_object())
      return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
    auto p = j.find("prompt");
    Entry e;
    if (p != j.end() && p->is_string()) {
      e.prompt = PromptInput::Text(p->get<std::string>());
      if (e.prompt.text.empty())
        return absl::InvalidArgumentError(absl::StrCat(where, ": empty prompt"));
    } else if (p != j.end() && p->is_array() && !p->empty()) {
      std::vector<int32_t> ids;
      for (const nlohmann::json& id : *p) {
        if (!id.is_number_integer())
          return absl::InvalidArgumentError(absl::StrCat(where, ": a token id is not an integer"));
        ids.push_back(id.get<int32_t>());
      }
      e.prompt = PromptInput::Ids(std::move(ids));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": needs \"prompt\" (text or token ids)"));
    }
    if (auto m = j.find("max_tokens"); m != j.end() && !m->is_null()) {
      if (!m->is_number_integer() || m->get<int64_t>() < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": \"max_tokens\" must be a positive integer"));
      }
      e.max_tokens = m->get<int>();
    }
    dataset_.push_back(std::move(e));
  }
  if (dataset_.empty())
    return absl::InvalidArgumentError(absl::StrCat("the dataset ", options_.dataset, " is empty"));
  return absl::OkStatus();
}

std::vector<int32_t> Workload::RandomIds(uint64_t stream, int count) const {
  std::mt19937_64 rng(stream);
  std::uniform_int_distribution<int64_t> dist(0, options_.vocab_size - 1);
  std::vector<int32_t> ids;
  ids.reserve(count);
  while (static_cast<int>(ids.size()) < count) {
    const int32_t id = static_cast<int32_t>(dist(rng));
    if (std::find(options_.avoid_ids.begin(), options_.avoid_ids.end(), id) !=
        options_.avoid_ids.end())
      continue;
    ids.push_back(id);
  }
  return ids;
}

std::string Workload::Words(const std::vector<int32_t>& ids) const {
  constexpr size_t kCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string text;
  for (int32_t id : ids)
    absl::StrAppend(&text, " ", kWords[Mix(static_cast<uint64_t>(id)) % kCount]);
  return text;
}

absl::StatusOr<PromptInput> Workload::Input(std::vector<int32_t> ids) {
  if (!options_.text_prompts) return PromptInput::Ids(std::move(ids));
  if (!detokenize_) return PromptInput::Text(Words(ids));
  absl::StatusOr<std::string> text = detokenize_(ids);
  if (!text.ok()) return text.status();
  return PromptInput::Text(*std::move(text));
}

absl::StatusOr<Conversation> Workload::Make(int64_t index) {
  Conversation c;
  c.index = index;
  const WorkloadOptions& o = options_;
  for (int k = 0; k < o.turns; ++k) {
    const int64_t request = index * o.turns + k;
    const uint64_t stream = Mix(o.seed ^ Mix(static_cast<uint64_t>(request) + 1));
    Turn turn;
    if (!dataset_.empty()) {
      const Entry& e =
          dataset_[static_cast<size_t>(request % static_cast<int64_t>(dataset_.size()))];
      turn.max_tokens = e.max_tokens.value_or(o.output_len);
      if (e.prompt.use_ids) {
        turn.planned_tokens = static_cast<int64_t>(e.prompt.ids.size());
        absl::StatusOr<PromptInput> in = Input(e.prompt.ids);
        if (!in.ok()) return in.status();
        turn.input = *std::move(in);
      } else {
        turn.input = e.prompt;
      }
    } else {
      const int n_in = DrawLength(o.input_len, o.range_ratio, Mix(stream ^ 1));
      turn.max_tokens = DrawLength(o.output_len, o.range_ratio, Mix(stream ^ 2));
      std::vector<int32_t> ids;
      if (k == 0 && o.shared_prefix_len > 0) {
        const uint64_t prefix = static_cast<uint64_t>(index % o.num_prefixes);
        ids = RandomIds(Mix(o.seed ^ 0x5eedf00dull ^ Mix(prefix)), o.shared_prefix_len);
      }
      std::vector<int32_t> own = RandomIds(Mix(stream ^ 3), n_in);
      ids.insert(ids.end(), own.begin(), own.end());
      turn.planned_tokens = static_cast<int64_t>(ids.size());
      absl::StatusOr<PromptInput> in = Input(std::move(ids));
      if (!in.ok()) return in.status();
      turn.input = *std::move(in);
    }
    c.turns.push_back(std::move(turn));
  }
  return c;
}

}  // namespace mamba::client::loadgen
