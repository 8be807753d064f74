#include "engine/zip_reader.h"

#include <array>
#include <set>

#include "absl/strings/str_cat.h"

namespace mamba::engine {
namespace {

// Record signatures and fixed sizes (PKWARE APPNOTE 6.3, sections 4.3.7-4.3.16).
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50;
constexpr uint32_t kLocatorSig = 0x07064b50;
constexpr uint64_t kLocalSize = 30, kCentralSize = 46, kEocdSize = 22, kLocatorSize = 20,
                   kEocd64Size = 56;
constexpr uint64_t kMaxComment = 0xffff;

// Little-endian fields at offsets that are bounds-checked before use.
class Bytes {
 public:
  explicit Bytes(std::span<const std::byte> b) : b_(b) {}
  uint64_t size() const { return b_.size(); }
  bool Has(uint64_t off, uint64_t n) const { return off <= b_.size() && n <= b_.size() - off; }
  uint64_t U(uint64_t off, int n) const {  // caller checked Has(off, n)
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(b_[off + i]);
    return v;
  }
  std::string Str(uint64_t off, uint64_t n) const {
    return std::string(reinterpret_cast<const char*>(b_.data() + off), n);
  }
  std::span<const std::byte> Sub(uint64_t off, uint64_t n) const { return b_.subspan(off, n); }

 private:
  std::span<const std::byte> b_;
};

struct Directory {
  uint64_t entries = 0, offset = 0, size = 0;
};

// Finds the end-of-central-directory record (and its ZIP64 twin when present).
absl::StatusOr<Directory> FindDirectory(const Bytes& f) {
  if (f.size() < kEocdSize) return absl::InvalidArgumentError("too small to be a ZIP archive");
  uint64_t eocd = f.size();
  const uint64_t lowest =
      f.size() - kEocdSize > kMaxComment ? f.size() - kEocdSize - kMaxComment : 0;
  for (uint64_t p = f.size() - kEocdSize + 1; p-- > lowest;) {
    if (f.U(p, 4) == kEocdSig && p + kEocdSize + f.U(p + 20, 2) <= f.size()) {
      eocd = p;
      break;
    }
  }
  if (eocd == f.size()) {
    return absl::InvalidArgumentError(
        "no end-of-central-directory record: not a ZIP archive, or truncated");
  }
  Directory d{f.U(eocd + 10, 2), f.U(eocd + 16, 4), f.U(eocd + 12, 4)};
  if (f.U(eocd + 4, 2) != 0 || f.U(eocd + 6, 2) != 0 || f.U(eocd + 8, 2) != d.entries) {
    return absl::InvalidArgumentError("split (multi-disk) ZIP archives are not supported");
  }
  if (eocd >= kLocatorSize && f.U(eocd - kLocatorSize, 4) == kLocatorSig) {
    const uint64_t loc = eocd - kLocatorSize;
    const uint64_t at = f.U(loc + 8, 8);
    if (f.U(loc + 4, 4) != 0 || f.U(loc + 16, 4) > 1) {
      return absl::InvalidArgumentError("split (multi-disk) ZIP64 archives are not supported");
    }
    if (!f.Has(at, kEocd64Size) || f.U(at, 4) != kEocd64Sig) {
      return absl::InvalidArgumentError("ZIP64 end-of-central-directory record missing or corrupt");
    }
    if (f.U(at + 16, 4) != 0 || f.U(at + 20, 4) != 0 || f.U(at + 24, 8) != f.U(at + 32, 8)) {
      return absl::InvalidArgumentError("split (multi-disk) ZIP64 archives are not supported");
    }
    d = Directory{f.U(at + 32, 8), f.U(at + 48, 8), f.U(at + 40, 8)};
  } else if (d.entries == 0xffff || d.offset == 0xffffffff || d.size == 0xffffffff) {
    return absl::InvalidArgumentError("ZIP64 end-of-central-directory locator missing");
  }
  if (!f.Has(d.offset, d.size)) {
    return absl::OutOfRangeError(absl::StrCat("central directory [", d.offset, ", +", d.size,
                                              ") outside the file of ", f.size(),
                                              " bytes (truncated?)"));
  }
  if (d.entries > d.size / kCentralSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(d.entries, " entries cannot fit a central directory of ", d.size, " bytes"));
  }
  return d;
}

// Replaces the 32-bit sizes and offset that are 0xffffffff by the ZIP64 extra field's values.
absl::Status ApplyZip64Extra(const Bytes& f, uint64_t extra, uint64_t extra_len, uint64_t* usize,
                             uint64_t* csize, uint64_t* offset) {
  for (uint64_t p = extra; p + 4 <= extra + extra_len;) {
    const uint64_t id = f.U(p, 2), len = f.U(p + 2, 2);
    if (p + 4 + len > extra + extra_len) return absl::InvalidArgumentError("extra field overruns");
    if (id == 1) {
      uint64_t q = p + 4;
      for (uint64_t* v : {usize, csize, offset}) {
        if (*v != 0xffffffff) continue;
        if (q + 8 > p + 4 + len) return absl::InvalidArgumentError("ZIP64 extra field too short");
        *v = f.U(q, 8);
        q += 8;
      }
    }
    p += 4 + len;
  }
  if (*usize == 0xffffffff || *csize == 0xffffffff || *offset == 0xffffffff) {
    return absl::InvalidArgumentError("ZIP64 extra field missing");
  }
  return absl::OkStatus();
}

// Parses the central directory entry at `p` (inside [p, end)) and its local header.
absl::StatusOr<ZipEntry> ParseEntry(const Bytes& f, uint64_t* p, uint64_t end) {
  if (*p + kCentralSize > end || f.U(*p, 4) != kCentralSig) {
    return absl::InvalidArgumentError("corrupt central directory (bad entry signature)");
  }
  const uint64_t at = *p;
  const uint64_t flags = f.U(at + 8, 2), method = f.U(at + 10, 2);
  uint64_t csize = f.U(at + 20, 4), usize = f.U(at + 24, 4), offset = f.U(at + 42, 4);
  const uint64_t name_len = f.U(at + 28, 2), extra_len = f.U(at + 30, 2);
  const uint64_t next = at + kCentralSize + name_len + extra_len + f.U(at + 32, 2);
  if (next > end) return absl::InvalidArgumentError("corrupt central directory (entry overruns)");
  ZipEntry e;
  e.name = f.Str(at + kCentralSize, name_len);
  e.crc32 = static_cast<uint32_t>(f.U(at + 16, 4));
  auto fail = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("entry '", e.name, "': ", what));
  };
  if (absl::Status s =
          ApplyZip64Extra(f, at + kCentralSize + name_len, extra_len, &usize, &csize, &offset);
      !s.ok()) {
    return fail(std::string(s.message()));
  }
  if (flags & 0x41) return fail("is encrypted");
  if (method != 0) {
    return fail(absl::StrCat("is compressed (method ", method,
                             "); torch.save stores entries uncompressed: re-save the file with "
                             "torch.save, or convert it to safetensors"));
  }
  if (csize != usize) return fail("stored entry with different compressed and plain sizes");
  if (!f.Has(offset, kLocalSize) || f.U(offset, 4) != kLocalSig) {
    return absl::OutOfRangeError(
        absl::StrCat("entry '", e.name, "': no local header at offset ", offset));
  }
  const uint64_t local_name = f.U(offset + 26, 2), local_extra = f.U(offset + 28, 2);
  const uint64_t data = offset + kLocalSize + local_name + local_extra;
  if (!f.Has(offset + kLocalSize, local_name) || f.Str(offset + kLocalSize, local_name) != e.name) {
    return fail("local header names another entry (corrupt archive)");
  }
  if (!f.Has(data, usize)) {
    return absl::OutOfRangeError(absl::StrCat("entry '", e.name, "': data [", data, ", +", usize,
                                              ") outside the file of ", f.size(),
                                              " bytes (truncated?)"));
  }
  e.data = f.Sub(data, usize);
  *p = next;
  return e;
}

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

}  // namespace

absl::StatusOr<std::vector<ZipEntry>> ParseZip(std::span<const std::byte> file,
                                               std::string_view file_name) {
  const Bytes f(file);
  auto context = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(std::string(file_name), ": ", s.message()));
  };
  absl::StatusOr<Directory> dir = FindDirectory(f);
  if (!dir.ok()) return context(dir.status());
  std::vector<ZipEntry> entries;
  std::set<std::string> names;
  uint64_t p = dir->offset;
  for (uint64_t i = 0; i < dir->entries; ++i) {
    absl::StatusOr<ZipEntry> e = ParseEntry(f, &p, dir->offset + dir->size);
    if (!e.ok()) return context(e.status());
    if (!names.insert(e->name).second) {
      return context(absl::InvalidArgumentError(absl::StrCat("duplicate entry '", e->name, "'")));
    }
    entries.push_back(std::move(*e));
  }
  return entries;
}

uint32_t Crc32(std::span<const std::byte> data, uint32_t crc) {
  crc = ~crc;
  for (std::byte b : data) crc = kCrcTable[(crc ^ static_cast<uint8_t>(b)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace mamba::engine
