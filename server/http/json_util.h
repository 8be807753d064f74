// JSON in and out of the HTTP handlers: bodies parsed without exceptions and with a nesting
// limit, typed field readers whose errors name the field, and output that never throws on
// invalid UTF-8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/types.h"
#include "nlohmann/json.hpp"

namespace mamba::server::http {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;  // responses keep OpenAI's field order

inline constexpr int kMaxJsonDepth = 64;

// A request body that must be one JSON object. InvalidArgument when it is not JSON,
// not an object, or nested deeper than kMaxJsonDepth. The parser rejects invalid UTF-8 in
// strings, so every string read from the result is valid UTF-8.
absl::StatusOr<Json> ParseObject(std::string_view body);

// Serialized compactly; invalid UTF-8 (e.g. a token's partial character) becomes U+FFFD.
std::string Dump(const OrderedJson& j);

// Field readers: wire conversion only (ranges are the engine's Validate's, except where a
// value cannot be represented). A field that is absent or null leaves *out unchanged and returns
// OK; a wrong type or an unrepresentable value is InvalidArgument naming the field, in the
// message and as the payload of engine/request_validation.h.
absl::Status ReadBool(const Json& obj, const char* name, bool* out);
absl::Status ReadInt(const Json& obj, const char* name, int64_t lo, int64_t hi, int64_t* out);
absl::Status ReadInt(const Json& obj, const char* name, int32_t lo, int32_t hi, int32_t* out);
absl::Status ReadUint64(const Json& obj, const char* name, std::optional<uint64_t>* out);
// Any finite number; [lo, hi] checked when given.
absl::Status ReadFloat(const Json& obj, const char* name, float* out);
absl::Status ReadString(const Json& obj, const char* name, std::string* out);
// A string or an array of strings (OpenAI's `stop`).
absl::Status ReadStringList(const Json& obj, const char* name, std::vector<std::string>* out);

// An array of token ids (integers in [0, 2^31)); `what` names it in errors ("prompt[2]": the
// field is what comes before '['). Ids beyond the vocabulary are the engine's to refuse.
absl::Status ReadTokenIds(const Json& array, std::string_view what,
                          std::vector<engine::TokenId>* out);

// Number of Unicode code points in valid UTF-8 text (OpenAI's text_offset counts characters).
int64_t CountCodePoints(std::string_view text);

}  // namespace mamba::server::http
