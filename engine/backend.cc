#include "engine/backend.h"

#include <algorithm>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "engine/backend_internal.h"
#include "engine/status_macros.h"

namespace mamba::engine {

absl::StatusOr<ComputeDType> ParseComputeDType(std::string_view name) {
  if (name == "auto") return ComputeDType::kAuto;
  if (name == "float32" || name == "fp32" || name == "f32") return ComputeDType::kFloat32;
  if (name == "bfloat16" || name == "bf16") return ComputeDType::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return ComputeDType::kFloat16;
  if (name == "int8" || name == "i8") return ComputeDType::kInt8;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", std::string(name),
                                                 "' (auto, float32, bfloat16, float16, int8)"));
}

const char* Name(ComputeDType t) {
  switch (t) {
    case ComputeDType::kAuto:
      return "auto";
    case ComputeDType::kFloat32:
      return "float32";
    case ComputeDType::kBFloat16:
      return "bfloat16";
    case ComputeDType::kFloat16:
      return "float16";
    case ComputeDType::kInt8:
      return "int8";
  }
  return "?";
}

absl::StatusOr<DecodePath> ParseDecodePath(std::string_view name) {
  if (name == "auto") return DecodePath::kAuto;
  if (name == "prefill") return DecodePath::kPrefill;
  if (name == "decode") return DecodePath::kDecode;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown decode path '", std::string(name), "' (auto, prefill, decode)"));
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> Backend::LoadAdapter(
    const LoraAdapter& /*adapter*/) {
  return absl::UnimplementedError(
      absl::StrCat("LoRA adapters are not supported by this backend (", Describe(), ")"));
}

absl::Status Backend::DecodeAndDraw(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                                    std::span<const std::optional<DrawRule>> rules,
                                    std::vector<SampledToken>* drawn, Logits* logits) {
  if (rules.size() != slots.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAndDraw: ", slots.size(), " slots but ", rules.size(), " rules"));
  }
  Logits all;
  MAMBA_RETURN_IF_ERROR(Decode(slots, tokens, &all));
  const int64_t V = all.vocab;
  const auto host_rows = static_cast<int64_t>(
      std::count_if(rules.begin(), rules.end(), [](const auto& r) { return !r.has_value(); }));
  logits->Resize(host_rows, V);
  drawn->assign(rules.size(), SampledToken{});
  int64_t next = 0;
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto row = all.Row(static_cast<int64_t>(i));
    if (rules[i]) {
      (*drawn)[i] = DrawByRule(row, *rules[i]);
    } else {
      std::copy(row.begin(), row.end(), logits->Row(next++).begin());
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateChunks(std::span<const ChunkInput> chunks, int num_slots, int64_t vocab_size) {
  std::unordered_set<int32_t> seen;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const ChunkInput& c = chunks[i];
    if (c.slot.value < 0 || c.slot.value >= num_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", i, ": slot ", c.slot.value, " out of range [0, ", num_slots, ")"));
    }
    if (!seen.insert(c.slot.value).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", i, ": slot ", c.slot.value, " appears twice in one step"));
    }
    if (c.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("chunk ", i, " is empty"));
    for (TokenId t : c.tokens) {
      if (t < 0 || t >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " out of range [0, ", vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ForEachPass(std::span<const ChunkInput> chunks, int64_t budget,
                         const std::function<absl::Status(const Pass&)>& run, int64_t max_rows) {
  Pass pass;
  int64_t row = 0;
  auto flush = [&]() -> absl::Status {
    if (pass.chunks.empty()) return absl::OkStatus();
    absl::Status s = run(pass);
    pass.chunks.clear();
    pass.adapters.clear();
    pass.tokens.clear();
    pass.logit_rows.clear();
    pass.first_row = row;
    return s;
  };
  for (const ChunkInput& c : chunks) {
    const auto n = static_cast<int64_t>(c.tokens.size());
    for (int64_t done = 0; done < n;) {
      const auto used = static_cast<int64_t>(pass.tokens.size());
      const auto rows_left = max_rows - static_cast<int64_t>(pass.logit_rows.size());
      // A piece that ends the chunk may need one row (want_logits); all_logits one per token.
      if (used == budget || rows_left == 0) {
        if (absl::Status s = flush(); !s.ok()) return s;
        continue;
      }
      int64_t take = std::min(n - done, budget - used);
      if (c.all_logits) take = std::min(take, rows_left);
      pass.chunks.push_back({used, take, c.slot.value});
      pass.adapters.push_back(c.adapter);
      pass.tokens.insert(pass.tokens.end(), c.tokens.begin() + done,
                         c.tokens.begin() + done + take);
      done += take;
      if (c.all_logits) {
        for (int64_t t = 0; t < take; ++t)
          pass.logit_rows.push_back(static_cast<int32_t>(used + t));
        row += take;
      } else if (done == n && c.want_logits) {
        pass.logit_rows.push_back(static_cast<int32_t>(used + take - 1));
        ++row;
      }
    }
  }
  return flush();
}

}  // namespace mamba::engine
