// Reading pytorch_model.bin (what torch.save writes for a state dict: a ZIP archive of a
// pickle plus one entry per storage), memory-mapped and validated, without running any code.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tensor_file.h"

namespace mamba::engine {

// Parses a whole torch.save zip image: the archive (zip_reader.h), <prefix>/data.pkl (its CRC
// checked, interpreted by pickle_reader.h) and each tensor's <prefix>/data/<key> storage entry,
// checked to hold the storage and the tensor (storage offset honoured). Refused clearly: the
// legacy (pre-1.6, non-zip) format, big-endian files, anything pickle_reader refuses. Tensors
// of one storage may share bytes (tied weights). `file_name` is used in errors.
absl::StatusOr<std::vector<TensorInfo>> ParsePytorchBin(std::span<const std::byte> file,
                                                        std::string_view file_name);

// A memory-mapped pytorch_model.bin (or a shard of one).
class PytorchBinFile : public TensorFile {
 public:
  static absl::StatusOr<std::unique_ptr<PytorchBinFile>> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const override { return path_; }
  const std::vector<TensorInfo>& tensors() const override { return tensors_; }
  bool ReleasePages(const TensorInfo& t) const override {
    return map_->ReleasePages(t.data, t.nbytes);
  }

 private:
  PytorchBinFile() = default;
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> map_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace mamba::engine
