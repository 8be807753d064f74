#include "client/generation.h"

namespace mamba::client {

int64_t GenerateResult::OutputTokens() const {
  // usage (when present) is the server's count; otherwise each completion's own usage, else the
  // streamed count (which TGI's details replace).
  if (usage) return usage->completion_tokens;
  int64_t n = 0;
  for (const CompletionResult& c : completions)
    n += c.usage ? c.usage->completion_tokens : c.streamed_tokens;
  return n;
}

std::optional<int64_t> GenerateResult::PromptTokens() const {
  if (usage) return usage->prompt_tokens;
  for (const CompletionResult& c : completions) {
    if (c.usage) return c.usage->prompt_tokens;
  }
  return std::nullopt;
}

}  // namespace mamba::client
