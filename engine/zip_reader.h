// Reads the entries of a ZIP archive held in memory, as torch.save writes them: STORED
// (uncompressed) entries, a central directory, ZIP64 records for archives over 4 GiB.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mamba::engine {

struct ZipEntry {
  std::string name;
  std::span<const std::byte> data;  // inside the archive's bytes
  uint32_t crc32 = 0;               // as the central directory records it
};

// The entries in central-directory order. Every offset and size is checked against `file`
// (nothing outside it is ever read); compressed or encrypted entries, split archives and
// duplicate names are refused. Data CRCs are not checked here (a caller that reads an entry
// whole may check it with Crc32): checking would read every byte of a multi-GB mapping at open.
// `file_name` is used in errors.
absl::StatusOr<std::vector<ZipEntry>> ParseZip(std::span<const std::byte> file,
                                               std::string_view file_name);

// CRC-32 (ISO-HDLC, as ZIP uses), continuing from `crc` (0 to start).
uint32_t Crc32(std::span<const std::byte> data, uint32_t crc = 0);

}  // namespace mamba::engine
