#include "engine/pytorch_bin.h"

#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "engine/pickle_reader.h"
#include "engine/status_macros.h"
#include "engine/zip_reader.h"

namespace mamba::engine {
namespace {

bool StartsWith(std::span<const std::byte> b, std::string_view s) {
  return b.size() >= s.size() &&
         std::string_view(reinterpret_cast<const char*>(b.data()), s.size()) == s;
}

// Finds the one <prefix>/data.pkl; every torch.save archive has a single top-level folder.
absl::StatusOr<const ZipEntry*> FindPickle(const std::vector<ZipEntry>& entries) {
  const ZipEntry* found = nullptr;
  for (const ZipEntry& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos || e.name.substr(slash) != "/data.pkl") continue;
    if (found != nullptr) return absl::InvalidArgumentError("more than one data.pkl");
    found = &e;
  }
  if (found == nullptr) {
    return absl::InvalidArgumentError("no <name>/data.pkl entry: a ZIP file, but not torch.save's");
  }
  return found;
}

}  // namespace

absl::StatusOr<std::vector<TensorInfo>> ParsePytorchBin(std::span<const std::byte> file,
                                                        std::string_view file_name) {
  const std::string fname(file_name);
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(fname, ": ", what));
  };
  if (!StartsWith(file, "PK\x03\x04")) {
    // The legacy format starts with a pickled magic number (protocol 2); older ones are tars.
    const bool legacy = StartsWith(file, "\x80\x02") ||
                        (file.size() > 262 && StartsWith(file.subspan(257), "ustar"));
    return fail(legacy ? "torch's legacy (pre-1.6, non-zip) serialization format is not "
                         "supported: re-save it with torch.save from torch >= 1.6, or convert "
                         "it to safetensors"
                       : "not a torch.save ZIP archive (no ZIP local header at the start)");
  }
  MAMBA_ASSIGN_OR_RETURN(std::vector<ZipEntry> entries, ParseZip(file, file_name));
  absl::StatusOr<const ZipEntry*> pickle = FindPickle(entries);
  if (!pickle.ok()) return fail(std::string(pickle.status().message()));
  const std::string prefix = (*pickle)->name.substr(0, (*pickle)->name.size() - 8);  // "<p>/"
  if (Crc32((*pickle)->data) != (*pickle)->crc32) {
    return fail(absl::StrCat((*pickle)->name, ": CRC mismatch (corrupt file)"));
  }
  std::unordered_map<std::string, const ZipEntry*> by_name;
  for (const ZipEntry& e : entries) by_name[e.name] = &e;
  if (auto it = by_name.find(prefix + "byteorder"); it != by_name.end()) {
    const std::span<const std::byte> order = it->second->data;
    if (!(order.size() == 6 && StartsWith(order, "little"))) {
      return fail("saved with big-endian byte order, which is not supported");
    }
  }
  absl::StatusOr<std::vector<PickledTensor>> pickled = ParseTorchPickle((*pickle)->data);
  if (!pickled.ok()) {
    return absl::Status(pickled.status().code(), absl::StrCat(fname, ": ", (*pickle)->name, ": ",
                                                              pickled.status().message()));
  }
  std::vector<TensorInfo> tensors;
  for (const PickledTensor& p : *pickled) {
    const size_t elem = kernels::SizeOf(p.dtype);
    auto it = by_name.find(prefix + "data/" + p.storage_key);
    if (it == by_name.end()) {
      return fail(absl::StrCat("tensor '", p.name, "': storage entry ", prefix, "data/",
                               p.storage_key, " is missing"));
    }
    const std::span<const std::byte> storage = it->second->data;
    if (p.storage_numel > storage.size() / elem) {
      return absl::OutOfRangeError(
          absl::StrCat(fname, ": tensor '", p.name, "': storage ", it->first, " holds ",
                       storage.size(), " bytes, shorter than its ", p.storage_numel,
                       " elements of ", kernels::Name(p.dtype), " (truncated or corrupt)"));
    }
    TensorInfo t{p.name, p.dtype, p.shape, nullptr, 0};
    // ParseTorchPickle checked offset + numel <= storage_numel, which fits the entry.
    t.nbytes = static_cast<size_t>(t.NumElements()) * elem;
    t.data = t.nbytes == 0 ? storage.data() : storage.data() + p.storage_offset * elem;
    tensors.push_back(std::move(t));
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<PytorchBinFile>> PytorchBinFile::Open(
    const std::filesystem::path& path) {
  std::unique_ptr<PytorchBinFile> f(new PytorchBinFile());
  f->path_ = path;
  MAMBA_ASSIGN_OR_RETURN(f->map_, MappedFile::Open(path));
  MAMBA_ASSIGN_OR_RETURN(f->tensors_, ParsePytorchBin(f->map_->bytes(), path.filename().string()));
  return f;
}

}  // namespace mamba::engine
