// Early-return helpers for absl::Status (this abseil version ships none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MAMBA_RETURN_IF_ERROR(expr)                       \
  do {                                                    \
    if (absl::Status mamba_s_ = (expr); !mamba_s_.ok()) { \
      return mamba_s_;                                    \
    }                                                     \
  } while (0)

#define MAMBA_STATUS_CONCAT_INNER(a, b) a##b
#define MAMBA_STATUS_CONCAT(a, b) MAMBA_STATUS_CONCAT_INNER(a, b)

// MAMBA_ASSIGN_OR_RETURN(auto x, MakeX()); or MAMBA_ASSIGN_OR_RETURN(x, MakeX());
#define MAMBA_ASSIGN_OR_RETURN(lhs, expr) \
  MAMBA_ASSIGN_OR_RETURN_IMPL(MAMBA_STATUS_CONCAT(mamba_so_, __LINE__), lhs, expr)
#define MAMBA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(*tmp)
