// How a request's validation errors say what is wrong, for every front end: an absl::Status
// whose code is chosen by meaning (InvalidArgument for a bad request, FailedPrecondition for what
// this server cannot do, e.g. stop strings without a tokenizer) and whose payloads name the
// request field at fault and, for some errors, a short machine-readable reason. Front ends turn
// the field (engine names: "max_new_tokens") into their wire names ("max_tokens").
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace mamba::engine {

inline constexpr char kFieldPayloadUrl[] = "mamba.engine/field";
inline constexpr char kReasonPayloadUrl[] = "mamba.engine/reason";

// Reasons (OpenAI's error codes where one exists).
inline constexpr char kContextLengthExceeded[] = "context_length_exceeded";

// `status` with `field` (and `reason`, when not empty) attached.
inline absl::Status WithField(absl::Status status, absl::string_view field,
                              absl::string_view reason = {}) {
  if (status.ok()) return status;
  status.SetPayload(kFieldPayloadUrl, absl::Cord(field));
  if (!reason.empty()) status.SetPayload(kReasonPayloadUrl, absl::Cord(reason));
  return status;
}

// InvalidArgument naming `field`.
inline absl::Status InvalidField(absl::string_view field, absl::string_view message,
                                 absl::string_view reason = {}) {
  return WithField(absl::InvalidArgumentError(message), field, reason);
}

// The field a status names, if any.
inline std::optional<std::string> FieldOf(const absl::Status& status) {
  auto p = status.GetPayload(kFieldPayloadUrl);
  if (!p) return std::nullopt;
  return std::string(*p);
}

// The reason a status gives, if any.
inline std::optional<std::string> ReasonOf(const absl::Status& status) {
  auto p = status.GetPayload(kReasonPayloadUrl);
  if (!p) return std::nullopt;
  return std::string(*p);
}

}  // namespace mamba::engine
