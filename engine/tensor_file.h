// What every weight file format gives the checkpoint: named tensors pointing into a read-only
// memory mapping (safetensors, pytorch_model.bin), and the mapping itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
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

// A whole file mapped read-only (MAP_PRIVATE); an empty file maps to an empty span.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(map_), size_}; }
  // When [data, data + n) lies in the mapping, its whole pages leave the resident set
  // (MADV_DONTNEED: the data stays valid, a later read faults the pages back in from the file)
  // and true is returned.
  bool ReleasePages(const std::byte* data, size_t n) const;

 private:
  MappedFile() = default;
  void* map_ = nullptr;
  size_t size_ = 0;
};

// A memory-mapped weight file, whatever its format. Checkpoint holds these.
class TensorFile {
 public:
  virtual ~TensorFile() = default;
  virtual const std::filesystem::path& path() const = 0;
  // In the order the file stores them; names are unique within a file.
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // When `t` lies in this file's mapping, the whole pages inside its bytes leave the process's
  // resident set and true is returned. For weights an engine has copied (packed, converted,
  // uploaded), so that a model loads with one copy resident, not two.
  virtual bool ReleasePages(const TensorInfo& t) const = 0;
};

}  // namespace mamba::engine
