#include "server/http/json_util.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/request_validation.h"

namespace mamba::server::http {
namespace {

// Deepest [ / { nesting outside strings, stopping early past `limit`. nlohmann's parser is
// iterative, but everything we do afterwards need not be: refuse absurd nesting up front.
int NestingDepth(std::string_view text, int limit) {
  int depth = 0, worst = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      worst = std::max(worst, ++depth);
      if (worst > limit) return worst;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return worst;
}

absl::Status WrongType(const char* name, const char* want) {
  return engine::InvalidField(name, absl::StrCat("'", name, "' must be ", want));
}

// "prompt[3]" -> "prompt": the field a position inside it belongs to.
std::string FieldName(std::string_view what) { return std::string(what.substr(0, what.find('['))); }

const Json* Field(const Json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace

absl::StatusOr<Json> ParseObject(std::string_view body) {
  if (NestingDepth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("the JSON body is nested deeper than ", kMaxJsonDepth, " levels"));
  }
  Json j = Json::parse(body.begin(), body.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError("the body is not valid JSON (or contains invalid UTF-8)");
  }
  if (!j.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  return j;
}

std::string Dump(const OrderedJson& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

absl::Status ReadBool(const Json& obj, const char* name, bool* out) {
  const Json* v = Field(obj, name);
  if (!v) return absl::OkStatus();
  if (!v->is_boolean()) return WrongType(name, "a boolean");
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadInt(const Json& obj, const char* name, int64_t lo, int64_t hi, int64_t* out) {
  const Json* v = Field(obj, name);
  if (!v) return absl::OkStatus();
  if (!v->is_number_integer()) return WrongType(name, "an integer");
  // An unsigned value beyond int64 is out of every range we accept.
  if (v->is_number_unsigned() &&
      v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return engine::InvalidField(name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "]"));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) {
    return engine::InvalidField(
        name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "], got ", x));
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status ReadInt(const Json& obj, const char* name, int32_t lo, int32_t hi, int32_t* out) {
  int64_t x = *out;
  if (absl::Status s = ReadInt(obj, name, int64_t{lo}, int64_t{hi}, &x); !s.ok()) return s;
  *out = static_cast<int32_t>(x);
  return absl::OkStatus();
}

absl::Status ReadUint64(const Json& obj, const char* name, std::optional<uint64_t>* out) {
  const Json* v = Field(obj, name);
  if (!v) return absl::OkStatus();
  if (!v->is_number_integer()) return WrongType(name, "an integer");
  // Negative seeds (allowed by OpenAI) wrap: any integer names one seed.
  *out = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  return absl::OkStatus();
}

absl::Status ReadFloat(const Json& obj, const char* name, float* out) {
  const Json* v = Field(obj, name);
  if (!v) return absl::OkStatus();
  if (!v->is_number()) return WrongType(name, "a number");
  const double x = v->get<double>();
  if (!std::isfinite(x) || std::fabs(x) > std::numeric_limits<float>::max()) {
    return engine::InvalidField(name, absl::StrCat("'", name, "' must be a finite number"));
  }
  *out = static_cast<float>(x);
  return absl::OkStatus();
}

absl::Status ReadString(const Json& obj, const char* name, std::string* out) {
  const Json* v = Field(obj, name);
  if (!v) return absl::OkStatus();
  if (!v->is_string()) return WrongType(name, "a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status ReadStringList(const Json& obj, const char* name, std::vector<std::string>* out) {
  const Json* v = Field(obj, name);
  if (!v) return absl::OkStatus();
  if (v->is_string()) {
    *out = {v->get<std::string>()};
    return absl::OkStatus();
  }
  if (!v->is_array()) return WrongType(name, "a string or an array of strings");
  std::vector<std::string> list;
  for (const Json& e : *v) {
    if (!e.is_string()) return WrongType(name, "a string or an array of strings");
    list.push_back(e.get<std::string>());
  }
  *out = std::move(list);
  return absl::OkStatus();
}

absl::Status ReadTokenIds(const Json& array, std::string_view what,
                          std::vector<engine::TokenId>* out) {
  if (!array.is_array()) {
    return engine::InvalidField(FieldName(what),
                                absl::StrCat(std::string(what), " must be an array of token ids"));
  }
  out->clear();
  out->reserve(array.size());
  for (const Json& e : array) {
    if (!e.is_number_integer()) {
      return engine::InvalidField(
          FieldName(what), absl::StrCat(std::string(what), " must contain only integer token ids"));
    }
    const bool too_big =
        e.is_number_unsigned()
            ? e.get<uint64_t>() > uint64_t{std::numeric_limits<engine::TokenId>::max()}
            : (e.get<int64_t>() < 0 ||
               e.get<int64_t>() > std::numeric_limits<engine::TokenId>::max());
    if (too_big) {
      return engine::InvalidField(FieldName(what),
                                  absl::StrCat(std::string(what), " contains token id ", e.dump(),
                                               ", outside the vocabulary"));
    }
    out->push_back(static_cast<engine::TokenId>(e.get<int64_t>()));
  }
  return absl::OkStatus();
}

int64_t CountCodePoints(std::string_view text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace mamba::server::http
