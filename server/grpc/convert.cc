#include "server/grpc/convert.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"
#include "engine/tokenizer/utf8.h"
#include "google/protobuf/unknown_field_set.h"
#include "kernels/dtype.h"
#include "server/session_id.h"

namespace mamba::server {
namespace {

constexpr int32_t kDefaultMaxNewTokens = 16;

absl::Status CheckUtf8(const std::string& text, const char* what) {
  const size_t bad = engine::utf8::FindInvalid(text);
  if (bad == engine::utf8::kAllValid) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, " is not valid UTF-8 (byte ", bad, ")"));
}

// Fills request.prompt (and the echo) from the oneof.
absl::Status SetPrompt(const v1::GenerateRequest& in, const ServingState& state,
                       PreparedRequest* out) {
  std::vector<engine::TokenId>& prompt = out->request.prompt;
  switch (in.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (state.tokenizer == nullptr) {
        return absl::FailedPreconditionError("a text prompt needs a tokenizer; none is loaded");
      }
      if (absl::Status s = CheckUtf8(in.text(), "prompt text"); !s.ok()) return s;
      const bool special =
          in.has_add_special_tokens() ? in.add_special_tokens() : in.session_id().empty();
      absl::StatusOr<std::vector<engine::TokenId>> ids =
          special ? state.tokenizer->EncodeWithSpecialTokens(in.text())
                  : state.tokenizer->Encode(in.text());
      if (!ids.ok()) {
        return absl::Status(ids.status().code(),
                            absl::StrCat("prompt text: ", std::string(ids.status().message())));
      }
      prompt = *std::move(ids);
      if (out->echo) out->prompt.set_text(in.text());
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = in.token_ids().ids();
      prompt.assign(ids.begin(), ids.end());
      if (out->echo && state.tokenizer != nullptr) {
        // Out-of-range ids are the engine's to reject, with its message; ids the tokenizer
        // cannot spell echo as "".
        out->prompt.set_text(
            state.tokenizer->DecodeKnown(prompt, out->request.skip_special_tokens));
      }
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      // A turn of a session may add no token: it continues from what the session holds.
      if (in.session_id().empty()) {
        return absl::InvalidArgumentError("prompt: set text or token_ids");
      }
      break;
    default:
      return absl::InvalidArgumentError("prompt: set text or token_ids");
  }
  if (out->echo) out->prompt.mutable_token_ids()->Add(prompt.begin(), prompt.end());
  return absl::OkStatus();
}

// Unset fields keep what `p` holds: the model's defaults (GenerationDefaults::Apply).
void SetSampling(const v1::SamplingParameters& s, engine::SamplingParams* p) {
  if (s.has_temperature()) p->temperature = s.temperature();
  if (s.has_top_k()) p->top_k = s.top_k();
  if (s.has_top_p()) p->top_p = s.top_p();
  if (s.has_min_p()) p->min_p = s.min_p();
  if (s.has_repetition_penalty()) p->repetition_penalty = s.repetition_penalty();
  p->presence_penalty = s.presence_penalty();
  p->frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) p->seed = s.seed();
  // A map's order is unspecified: by id, so that equal requests are equal.
  for (const auto& [id, bias] : s.logit_bias()) p->logit_bias.push_back({id, bias});
  std::sort(p->logit_bias.begin(), p->logit_bias.end(),
            [](const engine::LogitBias& a, const engine::LogitBias& b) { return a.id < b.id; });
}

}  // namespace

absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& in,
                                               const ServingState& state,
                                               std::optional<engine::Clock::time_point> deadline) {
  PreparedRequest out;
  engine::Request& r = out.request;
  out.echo = in.echo() || in.has_prompt_logprobs();  // prompt log-probs come in the echo
  if (in.has_prompt_logprobs()) {
    if (in.prompt_logprobs() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_logprobs must be in [0, ",
                                                     engine::kMaxTopLogprobs, "], got ",
                                                     in.prompt_logprobs()));
    }
    r.prompt_logprobs = in.prompt_logprobs();
  }
  r.skip_special_tokens = in.has_skip_special_tokens() ? in.skip_special_tokens() : true;
  if (absl::Status s = SetPrompt(in, state, &out); !s.ok()) return s;

  engine::SamplingParams& p = r.params;
  p = state.generation_defaults.Apply(p);
  SetSampling(in.sampling(), &p);
  const v1::StoppingCriteria& stop = in.stopping();
  p.max_new_tokens = stop.has_max_new_tokens()
                         ? stop.max_new_tokens()
                         : state.generation_defaults.max_new_tokens.value_or(kDefaultMaxNewTokens);
  p.min_new_tokens = stop.min_new_tokens();
  p.ignore_eos = stop.ignore_eos();
  p.stop_token_ids.assign(stop.stop_token_ids().begin(), stop.stop_token_ids().end());
  for (const std::string& s : stop.stop()) {
    if (absl::Status st = CheckUtf8(s, "a stop string"); !st.ok()) return st;
    r.stop_strings.push_back(s);
  }

  p.top_logprobs = in.top_logprobs();
  p.logprobs = in.logprobs() || in.top_logprobs() > 0;
  out.token_details = p.logprobs;

  r.n = in.n() == 0 ? 1 : in.n();
  out.returned = r.n;
  if (in.best_of() != 0 && in.best_of() < r.n) {
    return engine::InvalidField(
        "best_of", absl::StrCat("best_of: must be >= n (", r.n, "), got ", in.best_of()));
  }
  if (in.best_of() > r.n) {
    if (!in.session_id().empty()) {
      return engine::InvalidField("best_of",
                                  "best_of: a session continues one conversation: no best_of");
    }
    r.n = in.best_of();
    p.logprobs = true;  // the ranking needs each token's log-prob
  }
  r.deadline = deadline;
  if (!in.session_id().empty()) {
    if (absl::Status s = ValidateFrontEndSessionId(in.session_id()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("session_id: ", s.message()));
    }
    if (r.n != 1) {
      return absl::InvalidArgumentError("n: a session continues one conversation: n must be 1");
    }
    r.session_id = in.session_id();
  }
  absl::StatusOr<std::shared_ptr<const engine::ServedAdapter>> adapter =
      FindAdapter(state, in.adapter(), "adapter");
  if (!adapter.ok()) return adapter.status();
  r.adapter = *std::move(adapter);
  // The engine's validator, here and not only at Submit: the unary call sizes its reply (n
  // Completions) first.
  if (absl::Status s = state.engine->Validate(r); !s.ok()) return s;
  return out;
}

std::optional<engine::Clock::time_point> EngineDeadline(
    std::chrono::system_clock::time_point client_deadline, int64_t default_timeout_ms) {
  const engine::Clock::time_point now = engine::Clock::now();
  std::optional<engine::Clock::time_point> deadline;
  // gRPC reports "no deadline" as a time far in the future; a year is as good as none.
  const auto left = client_deadline - std::chrono::system_clock::now();
  if (left < std::chrono::hours(24 * 365)) {
    deadline = now + std::chrono::duration_cast<engine::Clock::duration>(left);
  }
  if (!deadline && default_timeout_ms > 0)
    deadline = now + std::chrono::milliseconds(default_timeout_ms);
  return deadline;
}

::grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return ::grpc::Status::OK;
  return ::grpc::Status(static_cast<::grpc::StatusCode>(status.code()),
                        std::string(status.message()));
}

absl::Status ParseRequest(const ::grpc::ByteBuffer& buffer, google::protobuf::MessageLite* out) {
  std::vector<::grpc::Slice> slices;
  std::string bytes;
  if (buffer.Valid()) {
    if (!buffer.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable request");
    bytes.reserve(buffer.Length());
    for (const ::grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  if (out->ParseFromString(bytes)) return absl::OkStatus();
  // The wire format alone (no schema, no UTF-8 check) parses: then a string field was the fault.
  google::protobuf::UnknownFieldSet fields;
  if (fields.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        out->GetTypeName(), ": a string field is not valid UTF-8 (send text as UTF-8)"));
  }
  return absl::InvalidArgumentError(absl::StrCat("malformed ", out->GetTypeName()));
}

void SerializeToBuffer(const google::protobuf::MessageLite& message, ::grpc::ByteBuffer* out) {
  ::grpc::Slice slice(message.SerializeAsString());
  ::grpc::ByteBuffer buffer(&slice, 1);
  out->Swap(&buffer);
}

v1::FinishReason ToProto(engine::Finish reason) {
  switch (reason) {
    case engine::Finish::kStop:
      return v1::FINISH_REASON_STOP;
    case engine::Finish::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::Finish::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case engine::Finish::kDeadline:
      return v1::FINISH_REASON_DEADLINE;
    case engine::Finish::kError:
      return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillToken(const engine::SampledToken& token, bool details, const engine::Tokenizer* tokenizer,
               v1::Token* out) {
  out->set_id(token.id);
  if (!details) return;
  out->set_logprob(token.logprob);
  auto bytes_of = [&](engine::TokenId id) -> std::string {
    if (tokenizer == nullptr) return {};
    absl::StatusOr<std::string_view> b = tokenizer->TokenBytes(id);
    return b.ok() ? std::string(*b) : std::string();
  };
  out->set_token_bytes(bytes_of(token.id));
  for (const engine::TokenLogprob& alt : token.top) {
    v1::TopLogprob* t = out->add_top_logprobs();
    t->set_token_id(alt.id);
    t->set_logprob(alt.logprob);
    t->set_token_bytes(bytes_of(alt.id));
  }
}

void FillPromptLogprobs(const engine::PromptEvent& event, const engine::Tokenizer* tokenizer,
                        v1::PromptEcho* echo) {
  const auto& ids = echo->token_ids();
  const auto m = static_cast<size_t>(ids.size());
  const size_t k = std::min(event.tokens.size(), m), skip = m - k;
  echo->clear_logprobs();
  for (size_t j = 0; j < m; ++j) {
    v1::Token* t = echo->add_logprobs();
    if (j < skip) {
      t->set_id(ids[static_cast<int>(j)]);
    } else {
      FillToken(event.tokens[event.tokens.size() - k + (j - skip)], true, tokenizer, t);
    }
  }
}

void FillEnd(const engine::FinishEvent& event, v1::CompletionEnd* out) {
  out->set_finish_reason(ToProto(event.reason));
  out->set_matched_stop(event.matched_stop);
  if (event.stop_token) out->set_stop_token_id(*event.stop_token);
  v1::Usage* u = out->mutable_usage();
  u->set_prompt_tokens(event.usage.prompt_tokens);
  u->set_completion_tokens(event.usage.completion_tokens);
  u->set_total_tokens(event.usage.prompt_tokens + event.usage.completion_tokens);
  u->set_cached_tokens(event.usage.cached_tokens);
  u->set_session_tokens(event.session_tokens);
  v1::Timing* t = out->mutable_timing();
  t->set_queue_seconds(event.queue_seconds);
  t->set_ttft_seconds(event.ttft_seconds);
  t->set_e2e_seconds(event.e2e_seconds);
}

void FillModelInfo(const ServingState& state, v1::ModelInfo* out) {
  const engine::Engine& e = *state.engine;
  const engine::ModelConfig& c = e.backend().config();
  out->set_model_name(state.model_name);
  v1::ModelConfig* pc = out->mutable_config();
  pc->set_vocab_size(c.vocab_size);
  pc->set_hidden_size(c.hidden_size);
  pc->set_state_size(c.state_size);
  pc->set_num_hidden_layers(c.num_hidden_layers);
  pc->set_intermediate_size(c.intermediate_size);
  pc->set_conv_kernel(c.conv_kernel);
  pc->set_time_step_rank(c.time_step_rank);
  pc->set_layer_norm_epsilon(c.layer_norm_epsilon);
  pc->set_use_bias(c.use_bias);
  pc->set_use_conv_bias(c.use_conv_bias);
  pc->set_residual_in_fp32(c.residual_in_fp32);
  pc->set_tie_word_embeddings(c.tie_word_embeddings);
  pc->set_hidden_act(c.hidden_act);
  pc->set_bos_token_id(c.bos_token_id);
  for (int64_t id : c.eos_token_ids) pc->add_eos_token_ids(id);
  pc->set_pad_token_id(c.pad_token_id);
  pc->set_model_type(std::string(engine::ModelTypeName(c.model_type)));
  if (c.mixer_rms_norm()) pc->set_mixer_rms_eps(c.mixer_rms_eps);
  if (c.is_mamba2()) {
    pc->set_time_step_rank(0);
    pc->set_num_heads(c.num_heads);
    pc->set_head_dim(c.head_dim);
    pc->set_n_groups(c.n_groups);
    pc->set_mlp_size(c.mlp_size);
    pc->set_time_step_min_limit(c.time_step_min_limit);
    pc->set_time_step_max_limit(c.time_step_max_limit);
  }

  out->set_dtype(kernels::Name(e.backend().compute_dtype()));
  out->set_device(state.device);
  out->set_backend(e.backend().Describe());
  out->set_num_parameters(c.NumParameters(!c.tie_word_embeddings));
  out->set_state_bytes_per_sequence(c.StateBytesPerSequence());
  out->set_has_tokenizer(state.tokenizer != nullptr);
  out->set_tokenizer_vocab_size(state.tokenizer ? state.tokenizer->vocab_size() : 0);

  const engine::EngineOptions& o = e.options();
  const engine::EngineStats s = e.Stats();
  out->set_slots_total(static_cast<int32_t>(s.slots_total));
  out->set_max_prompt_tokens(o.max_prompt_tokens);
  out->set_max_new_tokens_limit(o.max_new_tokens_limit);
  out->set_max_queue(o.max_queue);
  out->set_max_step_tokens(o.max_step_tokens);
  out->set_slots_used(static_cast<int32_t>(s.slots_used));
  out->set_requests_waiting(s.waiting);
  out->set_requests_running(s.running);
  out->set_draining(s.draining);

  for (const std::string& name : ServedModelNames(state)) out->add_served_model_names(name);
  const engine::GenerationDefaults& d = state.generation_defaults;
  v1::GenerationDefaults* gd = out->mutable_generation_defaults();
  if (d.temperature) gd->set_temperature(*d.temperature);
  if (d.top_k) gd->set_top_k(*d.top_k);
  if (d.top_p) gd->set_top_p(*d.top_p);
  if (d.min_p) gd->set_min_p(*d.min_p);
  if (d.repetition_penalty) gd->set_repetition_penalty(*d.repetition_penalty);
  if (d.max_new_tokens) gd->set_max_new_tokens(*d.max_new_tokens);
}

}  // namespace mamba::server

namespace mamba::server {

void FillSessionInfo(const engine::SessionInfo& info, v1::SessionInfo* out) {
  out->set_id(info.id);
  out->set_tokens(info.tokens);
  out->set_bytes(info.bytes);
  out->set_created_unix_ms(info.created_ms);
  out->set_last_used_unix_ms(info.last_used_ms);
  out->set_expires_unix_ms(info.expires_ms);
  out->set_in_use(info.in_use);
}

}  // namespace mamba::server

namespace mamba::server {

void FillAdapterInfo(const engine::ServedAdapter& adapter, v1::LoraAdapterInfo* out) {
  out->set_name(adapter.name);
  out->set_path(adapter.path.string());
  out->set_loaded_unix_ms(adapter.loaded_ms);
  if (adapter.host) {
    out->set_max_rank(adapter.host->max_rank());
    for (engine::LoraTarget t : adapter.host->targets()) out->add_targets(engine::Name(t));
    out->set_bytes(adapter.host->bytes());
  }
}

}  // namespace mamba::server
