#include "engine/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace mamba::engine {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

absl::StatusOr<DType> ParseDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "I8") return DType::kI8;  // a quantized checkpoint's matrices (Checkpoint checks where)
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", s, " is not supported (F32, F16, BF16 and I8 are)"));
}

const char* DTypeTag(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI8:
      return "I8";
  }
  return "?";
}

// Validates one header entry and fills `t` (except data).
absl::Status ParseEntry(const std::string& name, const json& v, uint64_t data_size, TensorInfo* t,
                        uint64_t* begin) {
  if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
      !v.contains("data_offsets")) {
    return absl::InvalidArgumentError("entry must have dtype, shape and data_offsets");
  }
  if (!v["dtype"].is_string()) return absl::InvalidArgumentError("dtype must be a string");
  absl::StatusOr<DType> dt = ParseDType(v["dtype"].get<std::string>());
  if (!dt.ok()) return dt.status();
  t->name = name;
  t->dtype = *dt;
  const json& shape = v["shape"];
  if (!shape.is_array()) return absl::InvalidArgumentError("shape must be an array");
  uint64_t count = 1;
  for (const json& d : shape) {
    if (!d.is_number_unsigned()) return absl::InvalidArgumentError("shape entries must be >= 0");
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && count > (uint64_t{1} << 48) / dim) {
      return absl::InvalidArgumentError("shape is too large");
    }
    count *= dim;
    t->shape.push_back(static_cast<int64_t>(dim));
  }
  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    return absl::InvalidArgumentError("data_offsets must be [begin, end]");
  }
  const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
  if (b > e || e > data_size) {
    return absl::OutOfRangeError(absl::StrCat("data_offsets [", b, ", ", e,
                                              ") outside the data section of ", data_size,
                                              " bytes (truncated file?)"));
  }
  const uint64_t want = count * kernels::SizeOf(t->dtype);
  if (e - b != want) {
    return absl::InvalidArgumentError(absl::StrCat("holds ", e - b, " bytes but ",
                                                   v["dtype"].get<std::string>(), " x ",
                                                   shape.dump(), " needs ", want));
  }
  t->nbytes = static_cast<size_t>(want);
  *begin = b;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TensorInfo>> ParseSafetensors(std::span<const std::byte> file,
                                                         std::string_view file_name) {
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(file_name), ": ", what));
  };
  if (file.size() < 8) return fail("too small to be a safetensors file (truncated?)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(file[i]);
  if (header_len > kMaxHeaderBytes || header_len > file.size() - 8) {
    return fail(absl::StrCat("header length ", header_len, " exceeds the file (", file.size(),
                             " bytes): truncated or not safetensors"));
  }
  const char* header = reinterpret_cast<const char*>(file.data() + 8);
  json j = json::parse(header, header + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail("header is not a JSON object");
  const std::byte* data = file.data() + 8 + header_len;
  const uint64_t data_size = file.size() - 8 - header_len;
  std::vector<TensorInfo> tensors;
  std::vector<std::pair<uint64_t, size_t>> ranges;  // (begin, index) to check overlaps
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    TensorInfo t;
    uint64_t begin = 0;
    if (absl::Status s = ParseEntry(it.key(), it.value(), data_size, &t, &begin); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(std::string(file_name), ": tensor '", it.key(),
                                                 "': ", s.message()));
    }
    t.data = data + begin;
    ranges.emplace_back(begin, tensors.size());
    tensors.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const TensorInfo& prev = tensors[ranges[i - 1].second];
    if (ranges[i - 1].first + prev.nbytes > ranges[i].first) {
      return fail(absl::StrCat("tensors '", prev.name, "' and '", tensors[ranges[i].second].name,
                               "' overlap"));
    }
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  MAMBA_ASSIGN_OR_RETURN(f->map_, MappedFile::Open(path));
  MAMBA_ASSIGN_OR_RETURN(f->tensors_, ParseSafetensors(f->map_->bytes(), path.filename().string()));
  return f;
}

absl::Status WriteSafetensors(const std::filesystem::path& path,
                              std::span<const TensorToWrite> tensors) {
  json header = json::object();
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    header[t.name] = {{"dtype", DTypeTag(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": cannot create"));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const TensorToWrite& t : tensors) {
    out.write(reinterpret_cast<const char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace mamba::engine
