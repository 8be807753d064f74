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
#include "engine/tensor_file.h"

namespace mamba::engine {

// Parses and validates a whole safetensors image (8-byte header length, JSON header, data):
// every offset in range, sizes matching dtype x shape, no overlaps. `file_name` is used in
// errors. Never reads outside `file`.
absl::StatusOr<std::vector<TensorInfo>> ParseSafetensors(std::span<const std::byte> file,
                                                         std::string_view file_name);

// A memory-mapped safetensors file.
class SafetensorsFile : public TensorFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const override { return path_; }
  const std::vector<TensorInfo>& tensors() const override { return tensors_; }
  size_t size_bytes() const { return map_->bytes().size(); }
  // MADV_DONTNEED on the read-only private mapping: see TensorFile::ReleasePages.
  bool ReleasePages(const TensorInfo& t) const override {
    return map_->ReleasePages(t.data, t.nbytes);
  }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> map_;
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
