#include "engine/pytorch_bin_writer.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/zip_reader.h"

namespace mamba::engine {
namespace {

constexpr uint64_t kU32Max = 0xffffffff;
constexpr uint64_t kAlignment = 64;  // torch aligns every entry's data to 64 bytes
constexpr size_t kBatch = 1000;      // pickle's SETITEMS batch size

// n little-endian bytes of v (bytes past the 8th are 0: PutLe(out, 0, 18) writes 18 zeros).
void PutLe(std::string* out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out->push_back(i < 8 ? static_cast<char>(v >> (8 * i)) : '\0');
}

// The pickle (protocol 2) Python's pickler writes for torch.save({name: tensor, ...}):
// every object memoized in order of first appearance, strings it sees again by identity
// ('storage', 'cpu', the globals) fetched from the memo.
class PickleWriter {
 public:
  std::string Finish(std::span<const TensorToWrite> tensors) {
    out_ = "\x80\x02}";
    Put();
    for (size_t b = 0; b < tensors.size(); b += kBatch) {
      const size_t n = std::min(kBatch, tensors.size() - b);
      if (n > 1) out_ += '(';
      for (size_t i = b; i < b + n; ++i) Tensor(tensors[i], i);
      out_ += n > 1 ? 'u' : 's';
    }
    out_ += '.';
    return out_;
  }

 private:
  void Put() {
    if (next_ < 256) {
      out_ += 'q';
      PutLe(&out_, next_, 1);
    } else {
      out_ += 'r';
      PutLe(&out_, next_, 4);
    }
    ++next_;
  }
  // Emits `fresh` the first time `key` is seen, a memo fetch afterwards.
  template <typename F>
  void Once(const std::string& key, F fresh) {
    if (auto it = memo_.find(key); it != memo_.end()) {
      if (it->second < 256) {
        out_ += 'h';
        PutLe(&out_, it->second, 1);
      } else {
        out_ += 'j';
        PutLe(&out_, it->second, 4);
      }
      return;
    }
    fresh();
    memo_[key] = next_ - 1;
  }
  void Str(const std::string& s) {
    out_ += 'X';
    PutLe(&out_, s.size(), 4);
    out_ += s;
    Put();
  }
  void Global(const std::string& module, const std::string& name) {
    Once("global:" + module + "." + name, [&] {
      out_ += absl::StrCat("c", module, "\n", name, "\n");
      Put();
    });
  }
  void Int(uint64_t v) {
    if (v <= 0xff) {
      out_ += 'K';
      PutLe(&out_, v, 1);
    } else if (v <= 0xffff) {
      out_ += 'M';
      PutLe(&out_, v, 2);
    } else if (v <= 0x7fffffff) {
      out_ += 'J';
      PutLe(&out_, v, 4);
    } else {  // LONG1: the shortest little-endian two's complement
      int n = 1;
      while (n < 8 && (v >> (8 * n - 1)) != 0) ++n;
      out_ += '\x8a';
      PutLe(&out_, static_cast<uint64_t>(n), 1);
      PutLe(&out_, v, n);
    }
  }
  void IntTuple(const std::vector<int64_t>& v) {
    if (v.empty()) {
      out_ += ')';  // the empty tuple is never memoized
      return;
    }
    if (v.size() > 3) out_ += '(';
    for (int64_t x : v) Int(static_cast<uint64_t>(x));
    out_ += v.size() > 3 ? 't' : static_cast<char>(0x84 + v.size());
    Put();
  }
  void Tensor(const TensorToWrite& t, size_t key) {
    Str(t.name);
    Global("torch._utils", "_rebuild_tensor_v2");
    out_ += "((";
    Once("str:storage", [&] { Str("storage"); });
    Global("torch", t.dtype == DType::kF32   ? "FloatStorage"
                    : t.dtype == DType::kF16 ? "HalfStorage"
                                             : "BFloat16Storage");
    Str(std::to_string(key));
    Once("str:cpu", [&] { Str("cpu"); });
    Int(t.bytes.size() / kernels::SizeOf(t.dtype));
    out_ += 't';
    Put();
    out_ += "QK";  // BINPERSID, then the storage offset 0
    out_ += '\0';
    IntTuple(t.shape);
    std::vector<int64_t> stride(t.shape.size());
    int64_t s = 1;
    for (size_t i = t.shape.size(); i-- > 0;) {
      stride[i] = s;
      s *= t.shape[i];
    }
    IntTuple(stride);
    out_ += '\x89';  // requires_grad=False, then backward_hooks=OrderedDict()
    Global("collections", "OrderedDict");
    out_ += ")R";
    Put();
    out_ += 't';
    Put();
    out_ += 'R';
    Put();
  }

  std::string out_;
  uint64_t next_ = 0;
  std::map<std::string, uint64_t> memo_;
};

// STORED entries with data descriptors, each entry's data 64-byte aligned by an "FB" extra
// field of 'Z's, ZIP64 end records always: what torch's miniz-based writer emits.
class ZipWriter {
 public:
  ZipWriter(std::ofstream* out, bool force_zip64) : out_(out), force_zip64_(force_zip64) {}

  void Add(const std::string& name, std::span<const std::byte> data) {
    const uint64_t size = data.size(), offset = cursor_;
    const bool big_size = size >= kU32Max || force_zip64_,
               big_offset = cursor_ >= kU32Max || force_zip64_;
    // The ZIP64 extra fields: the central one has the sizes; the local one, written before the
    // data as miniz does, a compressed size of 0 (the data descriptor has the real one).
    std::string zip64, local64;
    if (big_size || big_offset) {
      for (std::string* extra : {&zip64, &local64}) {
        std::string fields;
        if (big_size) {
          PutLe(&fields, size, 8);
          PutLe(&fields, extra == &zip64 ? size : 0, 8);
        }
        if (big_offset) PutLe(&fields, offset, 8);
        PutLe(extra, 1, 2);
        PutLe(extra, fields.size(), 2);
        *extra += fields;
      }
    }
    const uint64_t start = cursor_ + 30 + name.size() + local64.size() + 4;
    const uint64_t pad = (kAlignment - start % kAlignment) % kAlignment;
    std::string h;
    PutLe(&h, 0x04034b50, 4);
    PutLe(&h, 0, 2);  // version needed
    // UTF-8 names; a data descriptor follows, except after no data (as miniz does).
    const uint64_t flags = size == 0 ? 0x0800 : 0x0808;
    PutLe(&h, flags, 2);
    PutLe(&h, 0, 18);  // method, time, date, crc, sizes: all 0 (see the descriptor)
    PutLe(&h, name.size(), 2);
    PutLe(&h, local64.size() + 4 + pad, 2);
    h += name + local64 + "FB";
    PutLe(&h, pad, 2);
    h.append(pad, 'Z');
    const uint32_t crc = Crc32(data);
    Write(h);
    out_->write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(size));
    cursor_ += size;
    if (size > 0) {
      std::string d;
      PutLe(&d, 0x08074b50, 4);
      PutLe(&d, crc, 4);
      PutLe(&d, size, zip64.empty() ? 4 : 8);
      PutLe(&d, size, zip64.empty() ? 4 : 8);
      Write(d);
    }
    central_.push_back(
        Central{name, zip64, flags, crc, big_size ? kU32Max : size, big_offset ? kU32Max : offset});
  }

  void Finish() {
    const uint64_t cd_offset = cursor_;
    for (const Central& c : central_) {
      std::string h;
      PutLe(&h, 0x02014b50, 4);
      PutLe(&h, 0, 4);  // version made by, needed
      PutLe(&h, c.flags, 2);
      PutLe(&h, 0, 6);  // method, time, date
      PutLe(&h, c.crc, 4);
      PutLe(&h, c.size, 4);
      PutLe(&h, c.size, 4);
      PutLe(&h, c.name.size(), 2);
      PutLe(&h, c.zip64.size(), 2);
      PutLe(&h, 0, 10);  // comment length, disk, attributes
      PutLe(&h, c.offset, 4);
      Write(h + c.name + c.zip64);
    }
    const uint64_t cd_size = cursor_ - cd_offset, eocd64 = cursor_, n = central_.size();
    std::string e;
    PutLe(&e, 0x06064b50, 4);
    PutLe(&e, 44, 8);
    PutLe(&e, 0x031e, 2);
    PutLe(&e, 0x2d, 2);
    PutLe(&e, 0, 8);  // disks
    for (uint64_t v : {n, n, cd_size, cd_offset}) PutLe(&e, v, 8);
    PutLe(&e, 0x07064b50, 4);
    PutLe(&e, 0, 4);
    PutLe(&e, eocd64, 8);
    PutLe(&e, 1, 4);
    PutLe(&e, 0x06054b50, 4);
    PutLe(&e, 0, 4);
    PutLe(&e, std::min<uint64_t>(n, 0xffff), 2);
    PutLe(&e, std::min<uint64_t>(n, 0xffff), 2);
    PutLe(&e, std::min(cd_size, kU32Max), 4);
    PutLe(&e, std::min(cd_offset, kU32Max), 4);
    PutLe(&e, 0, 2);
    Write(e);
  }

 private:
  struct Central {
    std::string name, zip64;
    uint64_t flags;
    uint32_t crc;
    uint64_t size, offset;
  };
  void Write(const std::string& s) {
    out_->write(s.data(), static_cast<std::streamsize>(s.size()));
    cursor_ += s.size();
  }

  std::ofstream* out_;
  bool force_zip64_;
  uint64_t cursor_ = 0;
  std::vector<Central> central_;
};

}  // namespace

absl::Status WritePytorchBin(const std::filesystem::path& path,
                             std::span<const TensorToWrite> tensors,
                             const PytorchBinWriteOptions& options) {
  for (const TensorToWrite& t : tensors) {
    if (t.dtype == DType::kI8) {  // quantized checkpoints are safetensors only
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': int8 is not written to pytorch_model.bin"));
    }
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (t.bytes.size() != static_cast<size_t>(n) * kernels::SizeOf(t.dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': byte count does not match its shape"));
    }
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": cannot create"));
  const std::string prefix = path.stem().string() + "/";
  ZipWriter zip(&out, options.force_zip64);
  const std::string pickle = PickleWriter().Finish(tensors);
  zip.Add(prefix + "data.pkl", std::as_bytes(std::span(pickle)));
  // torch writes the storages in the order of their keys as strings: 0, 1, 10, 100, 11, ...
  std::vector<std::string> keys;
  for (size_t i = 0; i < tensors.size(); ++i) keys.push_back(std::to_string(i));
  std::sort(keys.begin(), keys.end());
  for (const std::string& k : keys) {
    zip.Add(absl::StrCat(prefix, "data/", k), tensors[std::stoul(k)].bytes);
  }
  const std::string version = "3\n";  // torch 1.13's file format version
  zip.Add(prefix + "version", std::as_bytes(std::span(version)));
  zip.Finish();
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace mamba::engine
