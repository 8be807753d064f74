#include "engine/serving/session_file.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <span>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/hash.h"
#include "nlohmann/json.hpp"

namespace mamba::engine {
namespace {

using nlohmann::json;

constexpr std::string_view kFormat = "mambaserve.session.v1";
constexpr int64_t kMaxHeaderBytes = kMaxSessionHeaderBytes;

// Debian's abseil has its own string_view, which StrCat takes.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("session state file: ", Sv(what)));
}

// One tensor of a session file, parsed from the header.
struct Entry {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<int64_t> MetaInt(const json& meta, const char* key) {
  if (!meta.contains(key) || !meta[key].is_string()) {
    return Invalid(absl::StrCat("metadata '", key, "' is missing"));
  }
  int64_t v = 0;
  if (!absl::SimpleAtoi(meta[key].get<std::string>(), &v) || v < 0) {
    return Invalid(absl::StrCat("metadata '", key, "' is not a non-negative integer"));
  }
  return v;
}

}  // namespace

std::string EncodeSessionFile(const SessionModel& model, std::string_view id,
                              const SessionContent& content, int64_t created_ms,
                              int64_t last_used_ms) {
  struct Part {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string_view bytes;
  };
  std::vector<Part> parts;
  auto floats = [](const float* p, int64_t n) {
    return std::string_view(reinterpret_cast<const char*>(p), static_cast<size_t>(n) * 4);
  };
  if (content.state) {
    const float* s = content.state->state.data();
    for (int64_t l = 0; l < model.layers; ++l) {
      if (model.conv_floats() > 0) {
        parts.push_back({absl::StrCat("layers.", l, ".conv_state"),
                         "F32",
                         {model.conv_rows, model.conv_channels()},
                         floats(s, model.conv_floats())});
        s += model.conv_floats();
      }
      parts.push_back({absl::StrCat("layers.", l, ".ssm_state"), "F32", model.ssm_shape(),
                       floats(s, model.ssm_floats())});
      s += model.ssm_floats();
    }
    if (!content.state->logits.empty()) {
      const auto& lg = content.state->logits;
      parts.push_back({"logits",
                       "F32",
                       {static_cast<int64_t>(lg.size())},
                       floats(lg.data(), static_cast<int64_t>(lg.size()))});
    }
  }
  static_assert(sizeof(TokenId) == 4);
  parts.push_back({"tokens",
                   "I32",
                   {static_cast<int64_t>(content.tokens.size())},
                   std::string_view(reinterpret_cast<const char*>(content.tokens.data()),
                                    content.tokens.size() * 4)});
  json header = json::object();
  Hash128 checksum;
  uint64_t offset = 0;
  for (const Part& p : parts) {
    header[p.name] = {{"dtype", p.dtype},
                      {"shape", p.shape},
                      {"data_offsets", {offset, offset + p.bytes.size()}}};
    offset += p.bytes.size();
    checksum.Update(p.bytes);
  }
  header["__metadata__"] = {{"format", std::string(kFormat)},
                            {"session_id", std::string(id)},
                            {"model_fingerprint", model.fingerprint},
                            {"dtype", model.dtype},
                            {"tokens", absl::StrCat(content.tokens.size())},
                            {"state_tokens", absl::StrCat(content.state_tokens)},
                            {"created_ms", absl::StrCat(created_ms)},
                            {"last_used_ms", absl::StrCat(last_used_ms)},
                            {"checksum", checksum.Hex()}};
  if (!content.adapter.empty()) header["__metadata__"]["adapter_fingerprint"] = content.adapter;
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(static_cast<uint64_t>(h.size()) >> (8 * i)));
  out += h;
  for (const Part& p : parts) out.append(p.bytes);
  return out;
}

absl::StatusOr<DecodedSession> DecodeSessionFile(const SessionModel& model,
                                                 std::string_view bytes) {
  if (bytes.size() < 8) return Invalid(absl::StrCat("truncated (", bytes.size(), " bytes)"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(bytes[i]);
  if (header_len > static_cast<uint64_t>(kMaxHeaderBytes) || header_len > bytes.size() - 8) {
    return Invalid(absl::StrCat("the header length ", header_len, " does not fit the file (",
                                bytes.size(), " bytes): truncated or not a safetensors file"));
  }
  json header = json::parse(bytes.substr(8, header_len), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Invalid("the header is not a JSON object");
  }
  const std::string_view data = bytes.substr(8 + header_len);
  if (!header.contains("__metadata__") || !header["__metadata__"].is_object()) {
    return Invalid("no __metadata__: not a session state file");
  }
  const json meta = header["__metadata__"];
  if (!meta.contains("format") || meta["format"] != std::string(kFormat)) {
    return Invalid(absl::StrCat("the format is not ", Sv(kFormat)));
  }
  const std::string fingerprint =
      meta.contains("model_fingerprint") && meta["model_fingerprint"].is_string()
          ? meta["model_fingerprint"].get<std::string>()
          : "";
  if (fingerprint != model.fingerprint) {
    return Invalid(absl::StrCat("the state belongs to model ", fingerprint,
                                "; this server serves model ", model.fingerprint));
  }
  DecodedSession out;
  if (meta.contains("session_id") && meta["session_id"].is_string()) {
    out.id = meta["session_id"].get<std::string>();
  }
  if (meta.contains("adapter_fingerprint")) {  // absent: the base model
    const json& a = meta["adapter_fingerprint"];
    if (!a.is_string() || a.get<std::string>().empty() || a.get<std::string>().size() > 128) {
      return Invalid("metadata 'adapter_fingerprint' is not a LoRA adapter's fingerprint");
    }
    out.content.adapter = a.get<std::string>();
  }
  absl::StatusOr<int64_t> tokens = MetaInt(meta, "tokens");
  absl::StatusOr<int64_t> state_tokens = MetaInt(meta, "state_tokens");
  absl::StatusOr<int64_t> created = MetaInt(meta, "created_ms");
  absl::StatusOr<int64_t> used = MetaInt(meta, "last_used_ms");
  for (const auto* v : {&tokens, &state_tokens, &created, &used}) {
    if (!v->ok()) return v->status();
  }
  out.created_ms = *created;
  out.last_used_ms = *used;
  // The tensor table: each entry in range, sizes matching, the data section covered exactly.
  std::map<std::string, Entry> entries;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& v = it.value();
    Entry e;
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() || !v.contains("shape") ||
        !v["shape"].is_array() || !v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2 || !v["data_offsets"][0].is_number_unsigned() ||
        !v["data_offsets"][1].is_number_unsigned()) {
      return Invalid(absl::StrCat("tensor '", it.key(), "': malformed entry"));
    }
    e.dtype = v["dtype"].get<std::string>();
    for (const json& d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 32)) {
        return Invalid(absl::StrCat("tensor '", it.key(), "': bad shape"));
      }
      e.shape.push_back(d.get<int64_t>());
    }
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.dtype != "F32" && e.dtype != "I32") {
      return Invalid(absl::StrCat("tensor '", it.key(), "': dtype ", e.dtype, " (F32 or I32)"));
    }
    if (e.begin > e.end || e.end > data.size() ||
        e.end - e.begin != static_cast<uint64_t>(Elements(e.shape)) * 4) {
      return Invalid(absl::StrCat("tensor '", it.key(), "': data offsets [", e.begin, ", ", e.end,
                                  ") do not match its shape within ", data.size(),
                                  " data bytes (truncated?)"));
    }
    ranges.emplace_back(e.begin, e.end);
    entries[it.key()] = std::move(e);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [b, e] : ranges) {
    if (b != covered) return Invalid("tensor data overlaps or leaves gaps");
    covered = e;
  }
  if (covered != data.size()) {
    return Invalid(
        absl::StrCat("the data section has ", data.size(), " bytes; the tensors cover ", covered));
  }
  Hash128 checksum;
  // The checksum runs over the tensors in file order (as EncodeSessionFile wrote them).
  for (const auto& [b, e] : ranges)
    checksum.Update(std::as_bytes(std::span(data.substr(b, e - b))));
  if (!meta.contains("checksum") || meta["checksum"] != checksum.Hex()) {
    return Invalid("the checksum does not match the data (the file is corrupt)");
  }
  auto take = [&](const std::string& name, const char* dtype,
                  std::vector<int64_t> shape) -> absl::StatusOr<std::string_view> {
    auto it = entries.find(name);
    if (it == entries.end()) return Invalid(absl::StrCat("tensor '", name, "' is missing"));
    if (it->second.dtype != dtype || it->second.shape != shape) {
      return Invalid(
          absl::StrCat("tensor '", name, "' has the wrong dtype or shape for this model"));
    }
    const std::string_view v = data.substr(it->second.begin, it->second.end - it->second.begin);
    entries.erase(it);
    return v;
  };
  absl::StatusOr<std::string_view> tok = take("tokens", "I32", {*tokens});
  if (!tok.ok()) return tok.status();
  out.content.tokens.resize(static_cast<size_t>(*tokens));
  if (!tok->empty()) std::memcpy(out.content.tokens.data(), tok->data(), tok->size());
  for (TokenId t : out.content.tokens) {
    if (t < 0 || t >= model.vocab_size) {
      return Invalid(
          absl::StrCat("token id ", t, " is outside the vocabulary [0, ", model.vocab_size, ")"));
    }
  }
  out.content.state_tokens = *state_tokens;
  if (*tokens > 0) {
    if (*state_tokens != *tokens && *state_tokens != *tokens - 1) {
      return Invalid("state_tokens must be the token count or one less");
    }
    auto snapshot = std::make_shared<StateSnapshot>();
    snapshot->state.resize(static_cast<size_t>(model.state_floats()));
    float* s = snapshot->state.data();
    for (int64_t l = 0; l < model.layers; ++l) {
      if (model.conv_floats() > 0) {
        absl::StatusOr<std::string_view> c = take(absl::StrCat("layers.", l, ".conv_state"), "F32",
                                                  {model.conv_rows, model.conv_channels()});
        if (!c.ok()) return c.status();
        std::memcpy(s, c->data(), c->size());
        s += model.conv_floats();
      }
      absl::StatusOr<std::string_view> m =
          take(absl::StrCat("layers.", l, ".ssm_state"), "F32", model.ssm_shape());
      if (!m.ok()) return m.status();
      std::memcpy(s, m->data(), m->size());
      s += model.ssm_floats();
    }
    if (*state_tokens == *tokens) {  // the state covers every token: its logits come with it
      absl::StatusOr<std::string_view> lg = take("logits", "F32", {model.vocab_size});
      if (!lg.ok()) return lg.status();
      snapshot->logits.resize(static_cast<size_t>(model.vocab_size));
      std::memcpy(snapshot->logits.data(), lg->data(), lg->size());
    }
    out.content.state = std::move(snapshot);
  } else if (*state_tokens != 0) {
    return Invalid("an empty session has no state");
  }
  if (!entries.empty()) {
    return Invalid(absl::StrCat("unexpected tensor '", entries.begin()->first, "'"));
  }
  return out;
}

}  // namespace mamba::engine
