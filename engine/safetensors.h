// Reading (memory-mapped, validated) and writing safetensors files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace mamba::engine {

using kernels::DType;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mapping; valid while the file is open
  size_t nbytes = 0;

  int64_t NumElements() const;
};

// Parses and validates a whole safetensors image (8-byte header length, JSON header, data):
// every offset in range, sizes matching dtype x shape, no overlaps. `file_name` is used in
// errors. Never reads outside `file`.
absl::StatusOr<std::vector<TensorInfo>> ParseSafetensors(std::span<const std::byte> file,
                                                         std::string_view file_name);

// A memory-mapped safetensors file.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  size_t size_bytes() const { return size_; }
  // When `t` lies in this file's mapping, the whole pages inside its bytes leave the process's
  // resident set (MADV_DONTNEED on the read-only private mapping; the data stays valid: a later
  // read faults the pages back in from the file) and true is returned. For weights an engine has
  // copied (packed, converted, uploaded), so that a model loads with one copy resident, not two.
  bool ReleasePages(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes tensors in the order given, header padded to 8 bytes like the reference serializer.
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              std::span<const TensorToWrite> tensors);

}  // namespace mamba::engine
