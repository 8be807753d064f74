// Per-request sampling. Nothing sorts the vocabulary: top-k is a bounded heap; top-p keeps the
// tokens above a provable threshold, finds the bucket of the nucleus boundary with a histogram
// of mass, and sorts only that bucket. The full-row passes (max, exp, sums) are written so that
// GCC vectorizes them without -ffast-math.
#include "engine/sampling.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/request_validation.h"
#include "engine/sampling_exp.h"

namespace mamba::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Below this 1/temperature overflows and exp((l - max) / T) turns into NaN; such temperatures
// pick the argmax anyway (vLLM uses the same cut-off).
constexpr float kMinTemperature = 1e-5f;
// The row is processed in blocks of kBlock with kLanes independent accumulators: the lanes
// make the loops vectorizable (float sums may not be reordered otherwise) and the per-block
// sums let a draw skip whole blocks.
constexpr size_t kLanes = 8;
constexpr size_t kBlock = 64;
// Nucleus search: ranges up to this size are simply sorted.
constexpr size_t kSortMax = 64;
// Nucleus search histogram: a positive float's bits order like its value, so bits >> 20 (the
// exponent and 3 mantissa bits, ~9% wide) buckets a prob in (0, 1] monotonically.
constexpr int kMassBucketShift = 20;
constexpr size_t kNumMassBuckets = (0x3F800000u >> kMassBucketShift) + 1;
// Above this share of the vocabulary top-k selects with nth_element instead of a heap.
constexpr size_t kHeapTopKMaxFraction = 8;

// InvalidArgument naming the field (a value out of its range is a bad argument whatever the
// server's state; see engine/request_validation.h).
template <typename T>
absl::Status OutOfRange(absl::string_view field, absl::string_view rule, T value) {
  return InvalidField(field, absl::StrCat(field, " must be ", rule, ", got ", value));
}

bool InRange(float x, float lo, float hi) { return x >= lo && x <= hi; }  // false for NaN

// Total order used everywhere candidates are ranked: larger value first, ties -> lower id. It
// makes every kept set (top-k, nucleus, top log-probs) well defined among equal values.
template <typename C>
bool Before(const C& a, const C& b) {
  return a.p > b.p || (a.p == b.p && a.id < b.id);
}

float MaxLogit(std::span<const float> logits) {
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, kNegInf);
  size_t i = 0;
  for (; i + kLanes <= logits.size(); i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) {
      lanes[j] = lanes[j] < logits[i + j] ? logits[i + j] : lanes[j];  // skips NaN
    }
  }
  float m = kNegInf;
  for (float x : lanes) m = m < x ? x : m;
  for (; i < logits.size(); ++i) m = m < logits[i] ? logits[i] : m;
  return m;
}

// The max, then its first occurrence: ties -> lowest id; NaN is never picked.
TokenId Argmax(std::span<const float> logits) {
  const float m = MaxLogit(logits);
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] == m) return static_cast<TokenId>(i);
  }
  return 0;  // nothing but NaN
}

// p = exp((x - max_logit) * inv_temperature) over [begin, end), summed in kLanes lanes. Writes
// p back unless T is const (the caller's row is scratch; the raw row for log-probs is not).
template <typename T>
double ExpRange(T* begin, T* end, float max_logit, float inv_temperature) {
  float lanes[kLanes] = {};
  T* x = begin;
  for (; x + kLanes <= end; x += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) {
      const float p = ExpNonPositive((x[j] - max_logit) * inv_temperature);
      if constexpr (!std::is_const_v<T>) x[j] = p;
      lanes[j] += p;
    }
  }
  double sum = 0.0;
  for (float l : lanes) sum += l;
  for (; x < end; ++x) {
    const float p = ExpNonPositive((*x - max_logit) * inv_temperature);
    if constexpr (!std::is_const_v<T>) *x = p;
    sum += p;
  }
  return sum;
}

// Turns the row into unnormalized probs in place, records each block's mass, returns the total
// (the sum of the block masses in order, which DrawFromRow repeats exactly).
double ExpInPlace(std::span<float> logits, float max_logit, float inv_temperature,
                  std::vector<double>& block_mass) {
  block_mass.resize((logits.size() + kBlock - 1) / kBlock);
  double total = 0.0;
  for (size_t b = 0; b < block_mass.size(); ++b) {
    float* begin = logits.data() + b * kBlock;
    float* end = logits.data() + std::min(logits.size(), (b + 1) * kBlock);
    block_mass[b] = ExpRange(begin, end, max_logit, inv_temperature);
    total += block_mass[b];
  }
  return total;
}

// log(sum(exp(logits))) with max-subtraction; the row is left as it is.
double LogSumExp(std::span<const float> logits) {
  const float m = MaxLogit(logits);
  if (!std::isfinite(m)) return m;
  return m + std::log(ExpRange(logits.data(), logits.data() + logits.size(), m, 1.0f));
}

// Inverse-CDF draw over unnormalized probs: whole blocks first, then inside one block. Zeros
// are never picked.
TokenId DrawFromRow(std::span<const float> probs, std::span<const double> block_mass, double total,
                    double u) {
  const double target = u * total;
  double cumulative = 0.0;
  size_t b = 0;
  for (; b + 1 < block_mass.size() && cumulative + block_mass[b] <= target; ++b) {
    cumulative += block_mass[b];
  }
  const size_t end = std::min(probs.size(), (b + 1) * kBlock);
  for (size_t i = b * kBlock; i < end; ++i) {
    cumulative += probs[i];
    if (probs[i] > 0.0f && cumulative > target) return static_cast<TokenId>(i);
  }
  // Only through rounding (lane sums vs. this scan): the last token that can be drawn.
  for (size_t i = end; i-- > 0;) {
    if (probs[i] > 0.0f) return static_cast<TokenId>(i);
  }
  return 0;
}

// Keeps the n best (Before order) finite entries of `values` as a heap with the worst on top.
// Once the heap is full, a block whose max does not beat the worst kept entry is skipped (ties
// lose to the lower ids already kept), so this is about one vectorized max per entry.
template <typename C>
void TopN(std::span<const float> values, size_t n, std::vector<C>& heap) {
  heap.clear();
  if (n == 0) return;
  for (size_t start = 0; start < values.size(); start += kBlock) {
    const auto block = values.subspan(start, std::min(kBlock, values.size() - start));
    if (heap.size() == n && !(MaxLogit(block) > heap.front().p)) continue;
    for (size_t i = 0; i < block.size(); ++i) {
      const C c{block[i], static_cast<TokenId>(start + i)};
      if (!(c.p > kNegInf)) continue;
      if (heap.size() < n) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end(), Before<C>);
      } else if (Before(c, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), Before<C>);
        heap.back() = c;
        std::push_heap(heap.begin(), heap.end(), Before<C>);
      }
    }
  }
}

}  // namespace

absl::Status SamplingParams::Validate(int64_t vocab_size) const {
  if (!(temperature >= 0.0f) || std::isinf(temperature)) {
    return OutOfRange("temperature", "a finite number >= 0", temperature);
  }
  if (top_k < 0) return OutOfRange("top_k", ">= 0", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) return OutOfRange("top_p", "in (0, 1]", top_p);
  if (!InRange(min_p, 0.0f, 1.0f)) return OutOfRange("min_p", "in [0, 1]", min_p);
  if (!(repetition_penalty > 0.0f) || std::isinf(repetition_penalty)) {
    return OutOfRange("repetition_penalty", "a finite number > 0", repetition_penalty);
  }
  if (!InRange(presence_penalty, -2.0f, 2.0f)) {
    return OutOfRange("presence_penalty", "in [-2, 2]", presence_penalty);
  }
  if (!InRange(frequency_penalty, -2.0f, 2.0f)) {
    return OutOfRange("frequency_penalty", "in [-2, 2]", frequency_penalty);
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return OutOfRange("top_logprobs", absl::StrCat("in [0, ", kMaxTopLogprobs, "]"), top_logprobs);
  }
  if (max_new_tokens < 1) return OutOfRange("max_new_tokens", ">= 1", max_new_tokens);
  if (min_new_tokens < 0 || min_new_tokens > max_new_tokens) {
    return OutOfRange("min_new_tokens", absl::StrCat("in [0, max_new_tokens=", max_new_tokens, "]"),
                      min_new_tokens);
  }
  if (logit_bias.size() > kMaxLogitBias) {
    return InvalidField("logit_bias", absl::StrCat("logit_bias has ", logit_bias.size(),
                                                   " entries; at most ", kMaxLogitBias));
  }
  for (size_t i = 0; i < logit_bias.size(); ++i) {
    const LogitBias& b = logit_bias[i];
    if (b.id < 0 || b.id >= vocab_size) {
      return OutOfRange("logit_bias", absl::StrCat("keyed by token ids in [0, ", vocab_size, ")"),
                        b.id);
    }
    if (!InRange(b.bias, -kMaxAbsLogitBias, kMaxAbsLogitBias)) {
      return OutOfRange("logit_bias", absl::StrCat("in [-100, 100] (token ", b.id, ")"), b.bias);
    }
    for (size_t j = 0; j < i; ++j) {
      if (logit_bias[j].id == b.id) {
        return InvalidField("logit_bias", absl::StrCat("token ", b.id, " is biased twice"));
      }
    }
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0 || stop_token_ids[i] >= vocab_size) {
      return WithField(
          OutOfRange(absl::StrCat("stop_token_ids[", i, "]"),
                     absl::StrCat("in [0, vocab_size=", vocab_size, ")"), stop_token_ids[i]),
          "stop_token_ids");
    }
  }
  return absl::OkStatus();
}

Sampler::Sampler(SamplingParams params, std::vector<TokenId> eos_token_ids,
                 std::span<const TokenId> prompt, uint64_t fallback_seed)
    : params_(std::move(params)),
      eos_token_ids_(std::move(eos_token_ids)),
      rng_(params_.seed.value_or(fallback_seed)) {
  const bool repetition = params_.repetition_penalty != 1.0f;
  track_occurrences_ =
      repetition || params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if (!track_occurrences_) return;
  // Sized once for the prompt plus a bounded share of the output, so recording rarely grows it.
  occurrences_.reserve((repetition ? prompt.size() : 0) +
                       static_cast<size_t>(std::min(params_.max_new_tokens, 4096)));
  if (!repetition) return;  // presence/frequency look at generated tokens only
  for (TokenId id : prompt) occurrences_.push_back({id, 0});
  std::sort(occurrences_.begin(), occurrences_.end(),
            [](const Occurrence& a, const Occurrence& b) { return a.id < b.id; });
  occurrences_.erase(
      std::unique(occurrences_.begin(), occurrences_.end(),
                  [](const Occurrence& a, const Occurrence& b) { return a.id == b.id; }),
      occurrences_.end());
}

void Sampler::ProcessLogits(std::span<float> logits) const {
  const auto vocab = static_cast<TokenId>(logits.size());
  const float rep = params_.repetition_penalty;
  const float presence = params_.presence_penalty;
  const float frequency = params_.frequency_penalty;
  for (const LogitBias& b : params_.logit_bias) {
    if (b.id >= 0 && b.id < vocab) logits[b.id] += b.bias;
  }
  for (const Occurrence& o : occurrences_) {
    if (o.id < 0 || o.id >= vocab) continue;  // ids from a different vocabulary: nothing to do
    float& x = logits[o.id];
    // HF divides positive logits and multiplies negative ones so both become less likely.
    if (rep != 1.0f) x = x < 0.0f ? x * rep : x / rep;
    if (o.generated > 0) x -= frequency * static_cast<float>(o.generated) + presence;
  }
  if (num_generated_ >= params_.min_new_tokens) return;
  auto mask = [&](TokenId id) {
    if (id >= 0 && id < vocab) logits[id] = kNegInf;
  };
  if (!params_.ignore_eos) std::for_each(eos_token_ids_.begin(), eos_token_ids_.end(), mask);
  std::for_each(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), mask);
}

SampledToken Sampler::Sample(std::span<float> logits) {
  assert(!logits.empty());
  SampledToken out{};
  double log_normalizer = 0.0;
  if (params_.logprobs || params_.top_logprobs > 0) {
    log_normalizer = LogSumExp(logits);
    if (params_.logprobs) raw_logits_.assign(logits.begin(), logits.end());
  }
  if (params_.top_logprobs > 0) {
    TopN(std::span<const float>(logits), static_cast<size_t>(params_.top_logprobs), candidates_);
    std::sort_heap(candidates_.begin(), candidates_.end(), Before<Candidate>);  // best first
    out.top.reserve(candidates_.size());
    for (const Candidate& c : candidates_) {
      out.top.push_back({c.id, static_cast<float>(c.p - log_normalizer)});
    }
  }
  ProcessLogits(logits);
  out.id = params_.temperature < kMinTemperature ? Argmax(logits) : DrawRandom(logits);
  if (params_.logprobs) out.logprob = static_cast<float>(raw_logits_[out.id] - log_normalizer);
  Record(out.id);
  return out;
}

SampledToken LogProbOf(std::span<const float> logits, TokenId id, int32_t top) {
  struct Candidate {
    float p;
    TokenId id;
  };
  SampledToken out;
  out.id = id;
  const double log_normalizer = LogSumExp(logits);
  const float own = logits[static_cast<size_t>(id)];
  out.logprob = static_cast<float>(own - log_normalizer);
  out.rank = 1 + static_cast<int32_t>(std::count_if(logits.begin(), logits.end(),
                                                    [own](float x) { return x > own; }));
  if (top > 0) {
    std::vector<Candidate> heap;
    TopN(logits, static_cast<size_t>(top), heap);
    std::sort_heap(heap.begin(), heap.end(), Before<Candidate>);
    out.top.reserve(heap.size());
    for (const Candidate& c : heap)
      out.top.push_back({c.id, static_cast<float>(c.p - log_normalizer)});
  }
  return out;
}

std::optional<DrawRule> Sampler::Offload() {
  if (track_occurrences_ || !params_.logit_bias.empty()) return std::nullopt;
  const bool masks =
      (!params_.ignore_eos && !eos_token_ids_.empty()) || !params_.stop_token_ids.empty();
  if (num_generated_ < params_.min_new_tokens && masks) return std::nullopt;
  DrawRule rule;
  rule.temperature = params_.temperature;
  rule.top_k = params_.top_k;
  rule.top_p = params_.top_p;
  rule.min_p = params_.min_p;
  rule.logprobs = params_.logprobs;
  rule.top_logprobs = params_.top_logprobs;
  if (params_.temperature >= kMinTemperature) rule.uniform = NextUniform();  // as DrawRandom
  return rule;
}

namespace {

// DrawByRule's pick: rank the candidates (Before on the logit), cut the ranking at top-k, top-p
// and min-p, then walk the kept tokens in id order. Without top-k only tokens that can be kept
// are ranked, so a draw costs O(vocab) plus a sort of the likely ones.
TokenId PickByRule(std::span<const float> logits, const DrawRule& rule) {
  if (rule.temperature < kMinTemperature) return Argmax(logits);
  const float max_logit = MaxLogit(logits);
  if (!(max_logit > kNegInf) || std::isinf(max_logit)) return Argmax(logits);
  const float inv_temperature = 1.0f / rule.temperature;
  struct Ranked {
    float p;  // exp((logit - max) / T)
    TokenId id;
    float logit;
  };
  const auto by_rank = [](const Ranked& a, const Ranked& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  const bool top_k = rule.top_k > 0 && static_cast<size_t>(rule.top_k) < logits.size();
  const bool top_p = rule.top_p<1.0f, min_p = rule.min_p> 0.0f;
  std::vector<Ranked> ranked;
  double mass = 0.0;  // what top-p is measured against: the top-k set, or every token
  if (top_k) {
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] > kNegInf) ranked.push_back({0.0f, static_cast<TokenId>(i), logits[i]});
    }
    const auto k = static_cast<size_t>(rule.top_k);
    if (ranked.size() > k) {
      std::nth_element(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(k),
                       ranked.end(), by_rank);
      ranked.resize(k);
    }
    std::sort(ranked.begin(), ranked.end(), by_rank);
    for (Ranked& r : ranked) {
      r.p = ExpNonPositive((r.logit - max_logit) * inv_temperature);
      mass += r.p;
    }
  } else {
    for (size_t i = 0; i < logits.size(); ++i) {
      if (logits[i] > kNegInf) mass += ExpNonPositive((logits[i] - max_logit) * inv_temperature);
    }
    // Tokens below (1 - top_p) * mass / vocab hold less than (1 - top_p) of the mass together,
    // so the nucleus lies above that; min-p drops what lies below min_p.
    double threshold = min_p ? rule.min_p : 0.0;
    if (top_p) threshold = std::max(threshold, (1.0 - rule.top_p) * mass / logits.size());
    for (size_t i = 0; i < logits.size(); ++i) {
      if (!(logits[i] > kNegInf)) continue;
      const float p = ExpNonPositive((logits[i] - max_logit) * inv_temperature);
      if (p >= threshold) ranked.push_back({p, static_cast<TokenId>(i), logits[i]});
    }
    if (top_p || min_p) std::sort(ranked.begin(), ranked.end(), by_rank);
  }
  size_t keep = ranked.size();
  if (top_p) {
    const double target = rule.top_p * mass;
    double cumulative = 0.0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += ranked[i].p;
      if (cumulative >= target) {
        keep = i + 1;
        break;
      }
    }
  }
  if (min_p) {
    while (keep > 1 && ranked[keep - 1].p < rule.min_p) --keep;  // the max's p is 1
  }
  ranked.resize(keep);
  if (top_k || top_p || min_p) {
    std::sort(ranked.begin(), ranked.end(),
              [](const Ranked& a, const Ranked& b) { return a.id < b.id; });
  }
  double kept = 0.0;
  for (const Ranked& r : ranked) kept += r.p;
  const double target = rule.uniform * kept;
  double cumulative = 0.0;
  for (const Ranked& r : ranked) {
    cumulative += r.p;
    if (cumulative > target) return r.id;
  }
  return ranked.back().id;  // only reached through rounding
}

}  // namespace

SampledToken DrawByRule(std::span<const float> logits, const DrawRule& rule) {
  const TokenId id = PickByRule(logits, rule);
  if (!rule.logprobs && rule.top_logprobs <= 0) {
    SampledToken out;
    out.id = id;
    return out;
  }
  SampledToken out = LogProbOf(logits, id, rule.top_logprobs);
  out.rank = 0;  // as Sample reports a generated token
  if (!rule.logprobs) out.logprob = 0.0f;
  return out;
}

TokenId Sampler::DrawRandom(std::span<float> logits) {
  const double u = NextUniform();  // first, so that every path consumes exactly one draw
  const float max_logit = MaxLogit(logits);
  if (!(max_logit > kNegInf) || std::isinf(max_logit)) return Argmax(logits);  // nothing to draw
  const float inv_temperature = 1.0f / params_.temperature;
  const bool top_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < logits.size();
  const bool top_p = params_.top_p < 1.0f;
  const bool min_p = params_.min_p > 0.0f;
  double mass = 0.0;  // of the distribution top-p is measured against: the top-k set or the row
  if (top_k) {
    mass = CollectTopK(logits, max_logit, inv_temperature);
  } else {
    mass = ExpInPlace(logits, max_logit, inv_temperature, block_mass_);
    if (!top_p && !min_p) return DrawFromRow(logits, block_mass_, mass, u);
    // Tokens below (1 - top_p) * mass / vocab hold less than (1 - top_p) of the mass together,
    // so the rest reaches top_p and contains the nucleus. The final set is the shorter of two
    // prefixes of the ranking (nucleus, min-p set), so filtering by the larger threshold loses
    // nothing: when the min-p set is shorter the nucleus search runs off its end and keeps it.
    double threshold = min_p ? params_.min_p : 0.0;
    if (top_p) {
      threshold = std::max(threshold, (1.0 - params_.top_p) * mass / logits.size());
    }
    CollectAtLeast(logits, threshold);
  }
  if (top_p) candidates_.resize(NucleusSize(params_.top_p * mass));
  if (min_p) ApplyMinP();
  return DrawFromCandidates(u);
}

// candidates_ = the top_k best tokens with p = exp((logit - max) / T); returns their mass.
double Sampler::CollectTopK(std::span<const float> logits, float max_logit, float inv_temperature) {
  const auto k = static_cast<size_t>(params_.top_k);
  if (k * kHeapTopKMaxFraction <= logits.size()) {
    TopN(logits, k, candidates_);
  } else {
    CollectAtLeast(logits, -std::numeric_limits<double>::max());  // every finite logit
    if (candidates_.size() > k) {
      std::nth_element(candidates_.begin(), candidates_.begin() + k, candidates_.end(),
                       Before<Candidate>);
      candidates_.resize(k);
    }
  }
  double mass = 0.0;
  for (Candidate& c : candidates_) {
    c.p = ExpNonPositive((c.p - max_logit) * inv_temperature);
    mass += c.p;
  }
  return mass;
}

// candidates_ = every entry >= threshold (and above -inf), in id order.
void Sampler::CollectAtLeast(std::span<const float> values, double threshold) {
  candidates_.clear();
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > kNegInf && values[i] >= threshold) {
      candidates_.push_back({values[i], static_cast<TokenId>(i)});
    }
  }
}

// Length of the smallest ranked prefix of candidates_ whose mass reaches target (at least 1);
// that prefix ends up first, in no particular order. One pass builds a histogram of mass over
// value buckets, which names the bucket holding the boundary: the buckets above it are wholly
// in, and only the boundary bucket is searched further.
size_t Sampler::NucleusSize(double target_mass) {
  const size_t n = candidates_.size();
  if (n <= kSortMax) return BoundaryWithin(0, n, target_mass);
  auto bucket = [](const Candidate& c) {
    return static_cast<size_t>(std::bit_cast<uint32_t>(c.p) >> kMassBucketShift);
  };
  std::array<double, kNumMassBuckets> mass{};
  for (const Candidate& c : candidates_) mass[bucket(c)] += c.p;
  size_t boundary = kNumMassBuckets - 1;
  double above = 0.0;
  for (; boundary > 0 && above + mass[boundary] < target_mass; --boundary) {
    above += mass[boundary];
  }
  const auto begin = candidates_.begin();
  const auto in_end = std::partition(begin, candidates_.end(),
                                     [&](const Candidate& c) { return bucket(c) > boundary; });
  const auto boundary_end = std::partition(
      in_end, candidates_.end(), [&](const Candidate& c) { return bucket(c) == boundary; });
  return BoundaryWithin(in_end - begin, boundary_end - begin, target_mass - above);
}

// candidates_[lo, hi) hold exactly the tokens of ranks lo..hi-1 and the ranks before lo hold
// target - need. Returns the boundary: split at the middle rank with nth_element and keep the
// half that holds it (needed only when many tokens share a bucket), then sort and scan.
size_t Sampler::BoundaryWithin(size_t lo, size_t hi, double need) {
  const auto begin = candidates_.begin();
  while (hi - lo > kSortMax) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(begin + lo, begin + mid, begin + hi, Before<Candidate>);
    double left = 0.0;
    for (size_t i = lo; i < mid; ++i) left += candidates_[i].p;
    if (left >= need) {
      hi = mid;
    } else {
      need -= left;
      lo = mid;
    }
  }
  std::sort(begin + lo, begin + hi, Before<Candidate>);
  double cumulative = 0.0;
  for (size_t i = lo; i < hi; ++i) {
    cumulative += candidates_[i].p;
    if (cumulative >= need) return i + 1;
  }
  return hi;  // rounding kept the target out of reach: keep the whole range
}

// Drops p < min_p * max_p; max_p is exactly 1 because p = exp(logit - max) and the max survives
// top-k and top-p. remove_if keeps the order, so the draw stays deterministic.
void Sampler::ApplyMinP() {
  const float threshold = params_.min_p;
  candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                   [threshold](const Candidate& c) { return c.p < threshold; }),
                    candidates_.end());
}

TokenId Sampler::DrawFromCandidates(double u) const {
  assert(!candidates_.empty());  // the max (p == 1) passes every filter
  double mass = 0.0;
  for (const Candidate& c : candidates_) mass += c.p;
  const double target = u * mass;
  double cumulative = 0.0;
  for (const Candidate& c : candidates_) {
    cumulative += c.p;
    if (cumulative > target) return c.id;
  }
  return candidates_.back().id;  // only reached through rounding
}

void Sampler::Record(TokenId id) {
  ++num_generated_;
  if (!track_occurrences_) return;
  auto it = std::lower_bound(occurrences_.begin(), occurrences_.end(), id,
                             [](const Occurrence& o, TokenId v) { return o.id < v; });
  if (it != occurrences_.end() && it->id == id) {
    ++it->generated;
  } else {
    occurrences_.insert(it, {id, 1});
  }
}

bool Sampler::IsEos(TokenId id) const {
  return std::find(eos_token_ids_.begin(), eos_token_ids_.end(), id) != eos_token_ids_.end();
}

bool Sampler::IsStopId(TokenId id) const {
  const auto& stops = params_.stop_token_ids;
  return std::find(stops.begin(), stops.end(), id) != stops.end();
}

Sampler::Finish Sampler::CheckFinish(TokenId last) const {
  // `last` is the num_generated()-th token; the mask allowed a stop there only once
  // min_new_tokens tokens came before it.
  if (num_generated_ > params_.min_new_tokens &&
      ((!params_.ignore_eos && IsEos(last)) || IsStopId(last))) {
    return Finish::kStop;
  }
  if (num_generated_ >= params_.max_new_tokens) return Finish::kLength;
  return Finish::kNone;
}

// 53 random bits -> [0, 1); done by hand because std::uniform_real_distribution differs
// between standard libraries and seeds must reproduce everywhere.
double Sampler::NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

}  // namespace mamba::engine
