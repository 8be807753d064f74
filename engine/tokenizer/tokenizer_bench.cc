// mamba-tokenizer-bench: encoding throughput of the tokenizer in MB/s on one thread, of each
// input whole and cut into documents (and, with --threads, EncodeBatch of the documents), on
// generated texts and/or given files. With --write-inputs the generated texts are saved so
// that tests/engine/tokenizer/data/bench_npm.js times Hugging Face's library on the same bytes.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "engine/tokenizer/incremental_detokenizer.h"
#include "engine/tokenizer/tokenizer.h"

namespace {

using mamba::engine::TokenId;
using mamba::engine::Tokenizer;

struct Input {
  std::string name;
  std::string text;
};

// splitmix64: deterministic on every platform.
struct Rng {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
};

constexpr const char* kWords[] = {"the",
                                  "of",
                                  "and",
                                  "to",
                                  "a",
                                  "in",
                                  "is",
                                  "that",
                                  "for",
                                  "it",
                                  "as",
                                  "was",
                                  "with",
                                  "be",
                                  "by",
                                  "on",
                                  "not",
                                  "he",
                                  "this",
                                  "are",
                                  "or",
                                  "his",
                                  "from",
                                  "at",
                                  "which",
                                  "but",
                                  "have",
                                  "an",
                                  "had",
                                  "they",
                                  "you",
                                  "were",
                                  "their",
                                  "one",
                                  "all",
                                  "we",
                                  "can",
                                  "her",
                                  "has",
                                  "there",
                                  "been",
                                  "if",
                                  "more",
                                  "when",
                                  "will",
                                  "would",
                                  "who",
                                  "so",
                                  "no",
                                  "she",
                                  "other",
                                  "its",
                                  "may",
                                  "these",
                                  "what",
                                  "them",
                                  "than",
                                  "some",
                                  "him",
                                  "time",
                                  "into",
                                  "only",
                                  "do",
                                  "could",
                                  "new",
                                  "about",
                                  "two",
                                  "first",
                                  "then",
                                  "also",
                                  "any",
                                  "like",
                                  "our",
                                  "over",
                                  "such",
                                  "people",
                                  "years",
                                  "most",
                                  "state",
                                  "world",
                                  "model",
                                  "language",
                                  "sequence",
                                  "memory",
                                  "training",
                                  "inference",
                                  "server",
                                  "request",
                                  "token",
                                  "between",
                                  "through",
                                  "because",
                                  "however",
                                  "government",
                                  "information",
                                  "development",
                                  "understanding",
                                  "particularly",
                                  "significant",
                                  "distribution",
                                  "approximately",
                                  "experimental",
                                  "architecture",
                                  "selective",
                                  "efficient",
                                  "throughput",
                                  "latency",
                                  "hardware",
                                  "scan",
                                  "don't",
                                  "it's",
                                  "can't",
                                  "they're",
                                  "we've",
                                  "I'll",
                                  "she'd",
                                  "I'm",
                                  "London",
                                  "Paris",
                                  "Mamba",
                                  "Transformer",
                                  "GPU",
                                  "CPU",
                                  "January",
                                  "Monday",
                                  "Professor",
                                  "Dr.",
                                  "U.S."};

// English-like prose: Zipf-distributed words, sentences, punctuation, numbers, paragraphs.
std::string GenerateEnglish(size_t bytes, uint64_t seed) {
  Rng rng{seed};
  constexpr size_t kNumWords = std::size(kWords);
  std::vector<double> cdf(kNumWords);
  double total = 0;
  for (size_t i = 0; i < kNumWords; ++i) cdf[i] = total += 1.0 / (i + 1.0);
  std::string out;
  while (out.size() < bytes) {
    const size_t words = 5 + rng.Below(20);
    for (size_t w = 0; w < words; ++w) {
      const double u = rng.Uniform() * total;
      std::string word = kWords[std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin()];
      if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      if (rng.Below(40) == 0) word = std::to_string(rng.Below(100000));
      if (w > 0) out += ' ';
      out += word;
      if (w + 1 < words && rng.Below(12) == 0) out += ',';
    }
    out += ".?!"[rng.Below(10) < 8 ? 0 : 1 + rng.Below(2)];
    out += rng.Below(6) == 0 ? "\n\n" : " ";
  }
  return out;
}

// Whitespace runs of all kinds and lengths, emoji (ZWJ sequences, flags, skin tones), CJK,
// accents (composed and decomposed) and a little ASCII.
std::string GenerateWhitespaceEmoji(size_t bytes, uint64_t seed) {
  static const char* kPieces[] = {"😀",
                                  "🎉",
                                  "👩‍💻",
                                  "👨‍👩‍👧‍👦",
                                  "🇯🇵",
                                  "🇺🇸",
                                  "👍🏽",
                                  "❤️",
                                  "🔥",
                                  "🚀",
                                  "日本語",
                                  "中文字符",
                                  "한국어",
                                  "Ελληνικά",
                                  "русский",
                                  "العربية",
                                  "café",
                                  "cafe\u0301",
                                  "naïve",
                                  "x",
                                  "def f():",
                                  "{",
                                  "}",
                                  "=>",
                                  "€100",
                                  "½",
                                  "…"};
  static const char* kSpaces[] = {" ", "\t", "\n", "\r\n", "\u00a0", "\u3000"};
  Rng rng{seed};
  std::string out;
  while (out.size() < bytes) {
    if (rng.Below(2) == 0) {
      const size_t run = 1 + rng.Below(rng.Below(4) == 0 ? 40 : 6);
      const bool mixed = rng.Below(3) == 0;
      const char* space = kSpaces[rng.Below(std::size(kSpaces))];
      for (size_t i = 0; i < run; ++i) {
        out += mixed ? kSpaces[rng.Below(std::size(kSpaces))] : (i % 7 == 6 ? space : " ");
      }
    } else {
      const size_t n = 1 + rng.Below(4);
      for (size_t i = 0; i < n; ++i) out += kPieces[rng.Below(std::size(kPieces))];
    }
  }
  return out;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Best and median MB/s of repeated runs of `fn` over `bytes` bytes.
template <typename Fn>
std::pair<double, double> Measure(size_t bytes, double min_seconds, Fn&& fn) {
  std::vector<double> rates;
  const auto start = std::chrono::steady_clock::now();
  while (rates.size() < 3 || SecondsSince(start) < min_seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    rates.push_back(static_cast<double>(bytes) / 1e6 / SecondsSince(t0));
  }
  std::sort(rates.begin(), rates.end());
  return {rates.back(), rates[rates.size() / 2]};
}

// The text cut into documents of about `doc_bytes` bytes, at the next character boundary
// (bench_npm.js cuts the same way).
std::vector<std::string> SplitDocs(const std::string& text, size_t doc_bytes) {
  std::vector<std::string> docs;
  for (size_t i = 0; i < text.size();) {
    size_t j = std::min(text.size(), i + doc_bytes);
    while (j < text.size() && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80) ++j;
    docs.push_back(text.substr(i, j - i));
    i = j;
  }
  return docs;
}

struct RunOptions {
  std::string tokenizer_path;
  double min_seconds = 3.0;
  size_t doc_bytes = 4096;
  int threads = 1;
};

int Run(const RunOptions& options, const std::vector<Input>& inputs) {
  auto tok = Tokenizer::FromFile(options.tokenizer_path);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  std::printf("%-22s %9s %9s %11s %9s %11s %9s %11s %11s\n", "input", "bytes", "tokens",
              "whole MB/s", "(median)", "docs MB/s", "(median)", "decode MB/s", "stream MB/s");
  for (const Input& in : inputs) {
    auto ids = (*tok)->Encode(in.text);
    if (!ids.ok()) {
      std::fprintf(stderr, "%s: %s\n", in.name.c_str(), ids.status().ToString().c_str());
      return 1;
    }
    const std::vector<std::string> docs = SplitDocs(in.text, options.doc_bytes);
    auto [best, median] =
        Measure(in.text.size(), options.min_seconds, [&] { (void)(*tok)->Encode(in.text); });
    auto [docs_best, docs_median] = Measure(in.text.size(), options.min_seconds, [&] {
      for (const std::string& d : docs) (void)(*tok)->Encode(d);
    });
    auto [decode_best, unused] =
        Measure(in.text.size(), options.min_seconds / 4, [&] { (void)(*tok)->Decode(*ids); });
    // Streaming: one IncrementalDetokenizer::Add per id, as the serving loop does.
    auto [stream_best, unused2] = Measure(in.text.size(), options.min_seconds / 4, [&] {
      mamba::engine::IncrementalDetokenizer detok(**tok);
      size_t bytes = 0;
      for (TokenId id : *ids) bytes += detok.Add(id).size();
      bytes += detok.Flush().size();
      if (bytes == 0) std::abort();
    });
    std::printf("%-22s %9zu %9zu %11.1f %9.1f %11.1f %9.1f %11.1f %11.1f\n", in.name.c_str(),
                in.text.size(), ids->size(), best, median, docs_best, docs_median, decode_best,
                stream_best);
    if (options.threads > 1) {
      auto batch = (*tok)->EncodeBatch(docs, options.threads);
      if (!batch.ok()) {
        std::fprintf(stderr, "%s\n", batch.status().ToString().c_str());
        return 1;
      }
      auto [batch_best, batch_median] = Measure(in.text.size(), options.min_seconds, [&] {
        (void)(*tok)->EncodeBatch(docs, options.threads);
      });
      std::printf("%-22s %9s %9s %11s %9s %11.1f %9.1f   (EncodeBatch, %d threads)\n", "", "", "",
                  "", "", batch_best, batch_median, options.threads);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokenizer encoding throughput (single thread unless --threads)."};
  RunOptions options;
  options.tokenizer_path = "models/gpt-neox-20b/tokenizer.json";
  std::vector<std::string> files;
  std::string write_inputs;
  size_t generated_bytes = 4 << 20;
  app.add_option("--tokenizer", options.tokenizer_path, "tokenizer.json");
  app.add_option("--file", files, "extra input texts (UTF-8)");
  app.add_option("--generated-bytes", generated_bytes, "size of each generated text (0: none)");
  app.add_option("--write-inputs", write_inputs, "write the generated texts to this folder");
  app.add_option("--min-seconds", options.min_seconds, "time spent per measurement");
  app.add_option("--doc-bytes", options.doc_bytes, "document size of the 'docs' column");
  app.add_option("--threads", options.threads, "also time EncodeBatch of the documents");
  CLI11_PARSE(app, argc, argv);

  std::vector<Input> inputs;
  if (generated_bytes > 0) {
    inputs.push_back({"english.txt", GenerateEnglish(generated_bytes, 1)});
    inputs.push_back({"whitespace_emoji.txt", GenerateWhitespaceEmoji(generated_bytes, 2)});
  }
  if (!write_inputs.empty()) {
    std::filesystem::create_directories(write_inputs);
    for (const Input& in : inputs) {
      std::ofstream(std::filesystem::path(write_inputs) / in.name, std::ios::binary) << in.text;
    }
  }
  for (const std::string& f : files) {
    std::ifstream file(f, std::ios::binary);
    if (!file) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 1;
    }
    std::ostringstream text;
    text << file.rdbuf();
    inputs.push_back({std::filesystem::path(f).filename().string(), text.str()});
  }
  return Run(options, inputs);
}
