#include "engine/tools/tool_common.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/backend_factory.h"
#include "engine/status_macros.h"
#include "spdlog/spdlog.h"

namespace mamba::engine::tools {

void AddEngineFlags(CLI::App& app, EngineFlags* f) {
  app.add_option("--model", f->model_dir, "Model directory (HF layout)")->capture_default_str();
  app.add_option("--device", f->device, "auto | cpu | cuda[:N]")->capture_default_str();
  app.add_option("--dtype", f->dtype,
                 "Weight compute dtype: auto | float32 | bfloat16 | float16 | int8")
      ->capture_default_str();
  app.add_option("--int8-group-size", f->int8_group_size,
                 "With --dtype int8: inputs per scale, a multiple of 4 (0 = one scale per row)")
      ->capture_default_str();
  app.add_option("--threads", f->threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_option("--slots", f->slots, "State slots (concurrent sequences)")->capture_default_str();
  app.add_option("--max-step-tokens", f->max_step_tokens, "Tokens per engine pass")
      ->capture_default_str();
  app.add_option("--log-level", f->log_level, "trace|debug|info|warn|error|critical|off")
      ->check(
          CLI::IsMember({"trace", "debug", "info", "warn", "warning", "error", "critical", "off"}))
      ->capture_default_str();
}

void AddSamplingFlags(CLI::App& app, SamplingParams* p) {
  app.add_option("--max-new-tokens", p->max_new_tokens)->capture_default_str();
  app.add_option("--min-new-tokens", p->min_new_tokens)->capture_default_str();
  app.add_option("--temperature", p->temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top-k", p->top_k)->capture_default_str();
  app.add_option("--top-p", p->top_p)->capture_default_str();
  app.add_option("--min-p", p->min_p)->capture_default_str();
  app.add_option("--repetition-penalty", p->repetition_penalty)->capture_default_str();
  app.add_option("--presence-penalty", p->presence_penalty)->capture_default_str();
  app.add_option("--frequency-penalty", p->frequency_penalty)->capture_default_str();
  app.add_option("--seed", p->seed);
  app.add_option("--top-logprobs", p->top_logprobs, "Alternatives to report per token");
  app.add_flag("--logprobs", p->logprobs, "Report each token's log-probability");
  app.add_option("--stop-token-ids", p->stop_token_ids)->delimiter(',');
  app.add_flag("--ignore-eos", p->ignore_eos);
}

absl::StatusOr<std::unique_ptr<Backend>> LoadBackend(const EngineFlags& f, bool profile) {
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  MAMBA_ASSIGN_OR_RETURN(ComputeDType dtype, ParseComputeDType(f.dtype));
  MAMBA_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(f.model_dir));
  BackendOptions o;
  o.device = f.device;
  o.dtype = dtype;
  o.num_threads = f.threads;
  o.num_slots = f.slots;
  o.max_step_tokens = f.max_step_tokens;
  o.profile = profile;
  o.int8_group_size = f.int8_group_size;
  return CreateBackend(std::move(ckpt), o);
}

absl::StatusOr<std::vector<TokenId>> ParseIdList(const std::string& s) {
  std::vector<TokenId> ids;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int32_t v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("not a token id: '", part, "'"));
    }
    ids.push_back(v);
  }
  return ids;
}

}  // namespace mamba::engine::tools
