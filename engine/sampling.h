// Per-request token sampling: penalties and min-length masks over one row of logits, then
// greedy or seeded temperature/top-k/top-p/min-p sampling, log-probs for reporting, and the
// stop conditions that end a request.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/types.h"

namespace mamba::engine {

// The most alternatives a request may ask for per token (OpenAI's limit).
inline constexpr int32_t kMaxTopLogprobs = 20;
// The most logit_bias entries a request may give, and their range (OpenAI's limits).
inline constexpr size_t kMaxLogitBias = 300;
inline constexpr float kMaxAbsLogitBias = 100.0f;

// A value added to one token's logit before anything else (OpenAI's logit_bias).
struct LogitBias {
  TokenId id;
  float bias;
};

struct SamplingParams {
  float temperature = 1.0f;  // >= 0; 0 (or below 1e-5) means greedy: argmax, ties -> lowest id
  int32_t top_k = 0;         // >= 0; 0 = disabled
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; HF semantics over prompt + generated tokens
  float presence_penalty = 0.0f;    // [-2, 2]; OpenAI semantics over generated tokens only
  float frequency_penalty = 0.0f;   // [-2, 2]
  std::optional<uint64_t> seed = std::nullopt;  // same seed => same tokens whatever else is batched
  int32_t top_logprobs = 0;  // [0, kMaxTopLogprobs] alternatives to report per token
  bool logprobs = false;     // report the chosen token's log-prob
  std::vector<TokenId> stop_token_ids = {};
  int32_t max_new_tokens = 16;  // >= 1 (the upper bound is the caller's to check)
  int32_t min_new_tokens = 0;   // [0, max_new_tokens]; eos and stop ids are masked until reached
  bool ignore_eos = false;
  // At most kMaxLogitBias entries, ids distinct and in [0, vocab_size), each bias in
  // [-100, 100]: -100 in effect bans a token, 100 all but forces it.
  std::vector<LogitBias> logit_bias = {};

  // InvalidArgument naming the field and the value ("top_p must be in (0, 1], got 1.5"), with
  // the field as its payload (engine/request_validation.h); NaN and infinities are rejected;
  // stop ids must lie in [0, vocab_size). Engine::Validate calls it for every request.
  absl::Status Validate(int64_t vocab_size) const;
};

struct TokenLogprob {
  TokenId id;
  float logprob;
};

struct SampledToken {
  TokenId id;
  float logprob = 0.0f;           // log-prob of `id`; only when params.logprobs
  std::vector<TokenLogprob> top;  // best first (ties -> lowest id); only when top_logprobs > 0
  // vLLM's rank of `id`: 1 + the entries whose raw logit is strictly larger (1 = the most likely,
  // tied tokens share it), whether or not `id` is in `top`. Filled by LogProbOf (prompt tokens);
  // 0 = not computed (Sampler::Sample leaves it: no API reports a generated token's rank).
  int32_t rank = 0;
};

// How one row's next token is picked where its logits are (Backend::DecodeAndDraw: on the GPU
// only token ids and requested log-probs come back): the Sampler's rule for a token that needs
// none of its logit processing (Sampler::Offload), with the request's uniform already drawn.
// DrawByRule defines it.
struct DrawRule {
  float temperature = 0.0f;  // below 1e-5: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  double uniform = 0.0;  // in [0, 1): this token's draw from the request's RNG (unused if greedy)
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

// The token `rule` picks from a raw row (left as it is), with the log-probs it asks for.
// Greedy: exactly Sampler::Sample's argmax and log-probs. Otherwise the Sampler's kept set
// (p = exp((logit - max) / T); the top_k best, ties -> lower id; of those the smallest ranked
// prefix whose mass reaches top_p of theirs; then p >= min_p, the max's p being 1) and an
// inverse-CDF walk over the kept tokens in id order, which a parallel sampler can repeat. The
// Sampler walks its candidates in whatever order its selection left them, so a seed's tokens
// differ between the two (same distribution). O(vocab) plus a sort of the tokens that can be
// kept (under top-k, of the k best): the reference for device samplers and the
// default Backend::DecodeAndDraw.
SampledToken DrawByRule(std::span<const float> logits, const DrawRule& rule);

// The raw log-prob (log_softmax of `logits`) of token `id`, its rank and the `top` best
// alternatives (best first, ties -> lowest id), as Sampler::Sample reports a sampled token: e.g. a
// prompt token's. O(vocab).
SampledToken LogProbOf(std::span<const float> logits, TokenId id, int32_t top);

// Samples one request's tokens, one call per step. One per request; not thread-safe.
//
// Order of work in Sample (the order of vLLM and HF generate):
//  1. Reported log-probs come from the RAW row: log_softmax of the model output, before any
//     bias, penalty or warping (vLLM's and OpenAI's default).
//  1b. logit_bias: each listed id's logit += its bias (vLLM applies it before the penalties).
//  2. Repetition penalty (HF): each distinct id in prompt + generated tokens, once:
//     logit < 0 ? logit * p : logit / p.
//  3. Presence/frequency penalties (OpenAI), generated tokens only:
//     logit -= frequency * count + presence * (count > 0).
//  4. While num_generated() < min_new_tokens: eos ids (unless ignore_eos) and stop ids -> -inf
//     (HF MinNewTokensLengthLogitsProcessor).
//  5. temperature == 0 (or < 1e-5): argmax. Otherwise divide by the temperature, then top-k, then
//  top-p
//     over the top-k-renormalized distribution (the smallest set whose mass >= top_p, at least
//     one token), then min-p (drop prob < min_p * max_prob), renormalize and draw. Exactly one
//     uniform is drawn per non-greedy token, so the sequence of a seed does not depend on how
//     the candidate set was pruned.
class Sampler {
 public:
  // Why a request ends after its latest token.
  enum class Finish { kNone, kStop /*eos or stop id*/, kLength };

  // `params` must satisfy Validate(vocab). `eos_token_ids` come from the model; `prompt` feeds
  // the repetition penalty (copied; only kept when that penalty is on). `fallback_seed` seeds
  // the RNG when params.seed is empty (the caller passes a random or request-derived value).
  Sampler(SamplingParams params, std::vector<TokenId> eos_token_ids,
          std::span<const TokenId> prompt, uint64_t fallback_seed);

  // Picks the next token from one row of model output (size = vocab) and records it for the
  // penalties and the length count. `logits` is used as scratch and left modified.
  SampledToken Sample(std::span<float> logits);

  // When the next token needs none of steps 1b-4 (no logit_bias, no penalty, no min-length mask
  // left to apply): the rule that picks it, having drawn its uniform (non-greedy), so that the
  // row can be drawn where it lies (DrawByRule); the caller then passes the token to Accept.
  // nullopt: the row must come to Sample.
  std::optional<DrawRule> Offload();
  // Records a token picked by Offload's rule, as Sample records its own.
  void Accept(TokenId id) { Record(id); }

  // Steps 1b-4 above, in place: what Sample does to the row before temperature and picking.
  // Public so that the processors can be checked exactly and reused without a draw.
  void ProcessLogits(std::span<float> logits) const;

  int32_t num_generated() const { return num_generated_; }
  const SamplingParams& params() const { return params_; }

  // After Sample: whether `last` (the token just sampled) ends generation, and why. An eos
  // (unless ignore_eos) or stop id stops only once min_new_tokens tokens came before it, the
  // rule the mask enforces; a stop is reported before a length finish when both apply.
  Finish CheckFinish(TokenId last) const;

 private:
  // A token of the prompt (kept only for the repetition penalty) or of the output, with how often
  // it was sampled; kept sorted by id.
  struct Occurrence {
    TokenId id;
    int32_t generated;
  };
  // A token still in the running: `p` holds its logit, then exp((logit - max) / temperature).
  struct Candidate {
    float p;
    TokenId id;
  };

  void Record(TokenId id);
  TokenId DrawRandom(std::span<float> logits);
  double CollectTopK(std::span<const float> logits, float max_logit, float inv_temperature);
  void CollectAtLeast(std::span<const float> probs, double threshold);
  size_t NucleusSize(double target_mass);
  size_t BoundaryWithin(size_t lo, size_t hi, double need);
  void ApplyMinP();
  TokenId DrawFromCandidates(double u) const;
  bool IsEos(TokenId id) const;
  bool IsStopId(TokenId id) const;
  double NextUniform();

  SamplingParams params_;
  std::vector<TokenId> eos_token_ids_;
  std::mt19937_64 rng_;
  int32_t num_generated_ = 0;
  bool track_occurrences_ = false;
  std::vector<Occurrence> occurrences_;
  // Scratch reused across tokens so the hot path does not allocate.
  std::vector<Candidate> candidates_;
  std::vector<double> block_mass_;  // probability mass per block of the row
  std::vector<float> raw_logits_;   // copy of the row for the chosen token's log-prob
};

}  // namespace mamba::engine
