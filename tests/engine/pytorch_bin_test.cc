// pytorch_model.bin: our writer against our reader, files torch 1.13 wrote
// (testdata/pytorch_bin/, made by make_golden.py), refused pickles and corrupt archives.
#include "engine/pytorch_bin.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/pickle_reader.h"
#include "engine/pytorch_bin_writer.h"
#include "engine/zip_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace mamba::engine {
namespace {

using ::mamba::testing::SourceDir;
using ::mamba::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::string_literals;

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::filesystem::path Golden(const std::string& name) {
  return SourceDir() / "tests/engine/testdata/pytorch_bin" / name;
}

std::span<const std::byte> Bytes(const std::string& s) { return std::as_bytes(std::span(s)); }

// make_golden.py's values: element i of seed s is ((i * 7 + s) % 23 - 11) / 4.
float Golden(int64_t i, int seed) { return static_cast<float>((i * 7 + seed) % 23 - 11) / 4; }

std::vector<float> ToFloats(const TensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.NumElements()));
  kernels::ConvertToF32(t.data, t.dtype, v.data(), t.NumElements());
  return v;
}

void ExpectGolden(const TensorInfo& t, int seed, int64_t first = 0) {
  const std::vector<float> v = ToFloats(t);
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(v[i], Golden(first + static_cast<int64_t>(i), seed)) << t.name << "[" << i << "]";
  }
}

// Bytes of `values` in `dtype`.
std::vector<std::byte> Encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> out(values.size() * kernels::SizeOf(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(&out[4 * i], &values[i], 4);
    } else {
      const uint16_t h =
          dtype == DType::kF16 ? kernels::F32ToF16(values[i]) : kernels::F32ToBf16(values[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

struct Owned {
  std::vector<std::vector<std::byte>> data;
  std::vector<TensorToWrite> tensors;
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape, int seed) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = Golden(i, seed);
    data.push_back(Encode(v, dtype));
    tensors.push_back(TensorToWrite{name, dtype, std::move(shape), {}});
  }
  std::vector<TensorToWrite> Get() {
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = data[i];
    return tensors;
  }
};

Owned PlainDict() {  // make_golden.py's plain_dict.bin
  Owned o;
  o.Add("a", DType::kF32, {2, 3}, 1);
  o.Add("b", DType::kF16, {4}, 2);
  o.Add("c", DType::kBF16, {3, 1, 2}, 3);
  o.Add("scalar", DType::kF32, {}, 4);
  return o;
}

TEST(PytorchBinTest, WriterMatchesTorchByteForByte) {
  TempDir dir;
  Owned o = PlainDict();
  const std::vector<TensorToWrite> tensors = o.Get();
  ASSERT_TRUE(WritePytorchBin(dir.path() / "plain_dict.bin", tensors).ok());
  const std::string ours = ReadFile(dir.path() / "plain_dict.bin");
  const std::string torch = ReadFile(Golden("plain_dict.bin"));
  ASSERT_FALSE(torch.empty());
  EXPECT_EQ(ours.size(), torch.size());
  EXPECT_TRUE(ours == torch) << "WritePytorchBin no longer writes what torch.save writes";
}

TEST(PytorchBinTest, ReadsTorchPlainDict) {
  auto f = PytorchBinFile::Open(Golden("plain_dict.bin"));
  ASSERT_TRUE(f.ok()) << f.status();
  const auto& t = (*f)->tensors();
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].name, "a");
  EXPECT_EQ(t[0].dtype, DType::kF32);
  EXPECT_THAT(t[0].shape, ElementsAre(2, 3));
  EXPECT_EQ(t[1].dtype, DType::kF16);
  EXPECT_EQ(t[2].dtype, DType::kBF16);
  EXPECT_THAT(t[2].shape, ElementsAre(3, 1, 2));
  EXPECT_TRUE(t[3].shape.empty());
  EXPECT_EQ(t[3].nbytes, 4u);
  for (int i = 0; i < 4; ++i) ExpectGolden(t[static_cast<size_t>(i)], i + 1);
  EXPECT_TRUE((*f)->ReleasePages(t[0]));
  ExpectGolden(t[0], 1);  // still readable after its pages were released
}

TEST(PytorchBinTest, ReadsTorchStateDictWithSharedStoragesAndViews) {
  auto f = PytorchBinFile::Open(Golden("state_dict.bin"));
  ASSERT_TRUE(f.ok()) << f.status();
  const auto& t = (*f)->tensors();
  std::vector<std::string> names;
  for (const TensorInfo& x : t) names.push_back(x.name);
  EXPECT_THAT(names, ElementsAre("weight", "bias", "tied", "view", "row", "half", "param"));
  ASSERT_EQ(t.size(), 7u);
  ExpectGolden(t[0], 5);
  ExpectGolden(t[1], 6);
  EXPECT_EQ(t[2].data, t[0].data);  // the same tensor, saved twice
  EXPECT_THAT(t[3].shape, ElementsAre(4));
  EXPECT_EQ(t[3].dtype, DType::kBF16);
  ExpectGolden(t[3], 7, /*first=*/3);  // base[3:7]
  EXPECT_THAT(t[4].shape, ElementsAre(3));
  EXPECT_EQ(t[4].data, t[0].data + 3 * 4);  // weight[1]: weight's storage at offset 3
  ExpectGolden(t[4], 5, /*first=*/3);
  EXPECT_EQ(t[5].dtype, DType::kF16);
  ExpectGolden(t[5], 8);
  ExpectGolden(t[6], 9);  // an nn.Parameter
}

TEST(PytorchBinTest, RoundTripsEveryDtypeAndZip64) {
  for (bool zip64 : {false, true}) {
    TempDir dir;
    Owned o = PlainDict();
    o.Add("empty", DType::kBF16, {0, 5}, 5);
    o.Add("backbone.layers.0.mixer.in_proj.weight", DType::kF16, {8, 4}, 6);
    const std::vector<TensorToWrite> in = o.Get();
    const auto path = dir.path() / "pytorch_model.bin";
    ASSERT_TRUE(WritePytorchBin(path, in, {.force_zip64 = zip64}).ok());
    auto f = PytorchBinFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ((*f)->tensors().size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      const TensorInfo& t = (*f)->tensors()[i];
      EXPECT_EQ(t.name, in[i].name);
      EXPECT_EQ(t.dtype, in[i].dtype);
      EXPECT_EQ(t.shape, in[i].shape);
      ASSERT_EQ(t.nbytes, in[i].bytes.size());
      if (t.nbytes > 0) {  // an empty tensor may have no data pointer (memcmp wants one)
        EXPECT_EQ(std::memcmp(t.data, in[i].bytes.data(), t.nbytes), 0) << t.name;
      }
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << "torch aligns data to 64";
    }
  }
}

TEST(PytorchBinTest, RoundTripsMoreThanAPickleBatchAndMemoOf256) {
  TempDir dir;
  Owned o;
  for (int i = 0; i < 1100; ++i) o.Add(absl::StrCat("t", i), DType::kF32, {i % 3 + 1}, i);
  const std::vector<TensorToWrite> in = o.Get();
  ASSERT_TRUE(WritePytorchBin(dir.path() / "m.bin", in).ok());
  auto f = PytorchBinFile::Open(dir.path() / "m.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 1100u);
  for (size_t i = 0; i < in.size(); ++i) ExpectGolden((*f)->tensors()[i], static_cast<int>(i));
}

void ExpectRefused(const std::string& golden, const std::string& what) {
  auto f = PytorchBinFile::Open(Golden(golden));
  ASSERT_FALSE(f.ok()) << golden;
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(what)) << f.status();
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(golden));
}

TEST(PytorchBinTest, RefusesWhatTorchWritesButWeDoNotLoad) {
  ExpectRefused("legacy.bin", "legacy (pre-1.6, non-zip)");
  ExpectRefused("transposed.bin", "tensor 't': is not contiguous");
  ExpectRefused("int64.bin", "tensor 'ids': has dtype int64 (torch.LongStorage)");
}

// Protocol 4 opcodes; an archive Python's zipfile wrote (no data descriptors, no alignment)
// with newer torch's entries under "archive/" (byteorder, .data/serialization_id).
TEST(PytorchBinTest, ReadsProtocol4AndOtherZipWriters) {
  for (const char* name : {"protocol4.bin", "rezipped.bin"}) {
    auto f = PytorchBinFile::Open(Golden(name));
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_EQ((*f)->tensors().size(), 1u);
    EXPECT_THAT((*f)->tensors()[0].shape, ElementsAre(2, 3));
    ExpectGolden((*f)->tensors()[0], 1);
  }
  ExpectRefused("big_endian.bin", "big-endian");
  ExpectRefused("deflated.bin", "is compressed (method 8)");
}

TEST(PytorchBinTest, RefusesCodeExecutionNamingTheGlobal) {
  ExpectRefused("os_system.bin", "global 'posix.system'");
  ExpectRefused("builtins_eval.bin", "global '__builtin__.eval'");
}

absl::Status ParsePickle(const std::string& p) { return ParseTorchPickle(Bytes(p)).status(); }

TEST(PickleReaderTest, RefusesGlobalsByName) {
  const std::string tail = "q\x00X\x02\x00\x00\x00idq\x01\x85R."s;
  for (const char* g : {"os\nsystem\n", "posix\nsystem\n", "builtins\neval\n", "torch\nload\n",
                        "torch._utils\n_rebuild_sparse_tensor\n", "subprocess\nPopen\n"}) {
    std::string name(g);
    name[name.find('\n')] = '.';
    name.pop_back();
    const absl::Status s =
        ParsePickle(absl::StrCat("\x80\x02"
                                 "c",
                                 g, tail));
    EXPECT_THAT(std::string(s.message()), HasSubstr("global '" + name + "'")) << s;
  }
  // Protocol 4's STACK_GLOBAL names the same global from two strings.
  const absl::Status s = ParsePickle(
      "\x80\x04\x8c\x08"
      "builtins\x8c\x04"
      "eval\x93.");
  EXPECT_THAT(std::string(s.message()), HasSubstr("global 'builtins.eval'")) << s;
}

TEST(PickleReaderTest, RefusesMalformedPickles) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "truncated"},
      {"\x80\x02}", "no STOP"},
      {"\x80\x02.", "bad stack"},
      {"\x80\x02}0.", "opcode 0x30"},             // POP: not needed, refused
      {"\x80\x02h\x05.", "memo key 5 is unset"},  // BINGET of nothing
      {"\x80\x02)q\x00s."s, "underflow"},         // SETITEM on too little
      {"\x80\x02]K\x01K\x02s.", "not a dict"},    // SETITEM on a list
      {"\x80\x02X\xff\xff\xff\x7f", "too long"},  // a 2 GB string
      {"\x80\x02]q\x00h\x00"
       "a."s,
       "not a state dict"},  // a list holding itself
      {"\x80\x02}X\x01\x00\x00\x00xK\x01s."s, "tensor 'x': is a int"},
      {"\x80\x02\x8a\x09", "wider than 64 bits"},
      {"\x80\x09", "protocol 9"},
  };
  for (const auto& [p, want] : cases) {
    const absl::Status s = ParsePickle(p);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr(want)) << s;
  }
}

// Offset of the central-directory header of `name` in a zip image.
size_t CentralHeader(const std::string& file, const std::string& name) {
  for (size_t p = file.find("PK\x01\x02"); p != std::string::npos;
       p = file.find("PK\x01\x02", p + 1)) {
    if (file.compare(p + 46, name.size(), name) == 0) return p;
  }
  ADD_FAILURE() << "no central header for " << name;
  return 0;
}

void Put32(std::string* s, size_t at, uint32_t v) { std::memcpy(s->data() + at, &v, 4); }

std::string Parse(const std::string& file) {
  auto t = ParsePytorchBin(Bytes(file), "x.bin");
  return t.ok() ? "ok" : std::string(t.status().message());
}

TEST(PytorchBinTest, RefusesCorruptArchives) {
  const std::string good = ReadFile(Golden("plain_dict.bin"));
  ASSERT_EQ(Parse(good), "ok");
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_NE(Parse(good.substr(0, n)), "ok") << "truncated to " << n;
  }
  std::string s = good;
  s[CentralHeader(good, "plain_dict/data/0")] = 'X';
  EXPECT_THAT(Parse(s), HasSubstr("corrupt central directory"));
  s = good;  // an entry whose data starts outside the file
  Put32(&s, CentralHeader(good, "plain_dict/data/1") + 42, 0x7fffffff);
  EXPECT_THAT(Parse(s), HasSubstr("no local header at offset 2147483647"));
  s = good;  // an entry whose data runs past the end
  Put32(&s, CentralHeader(good, "plain_dict/data/1") + 20, 0x7fffff00);
  Put32(&s, CentralHeader(good, "plain_dict/data/1") + 24, 0x7fffff00);
  EXPECT_THAT(Parse(s), HasSubstr("outside the file"));
  s = good;  // a storage shorter than its tensor
  Put32(&s, CentralHeader(good, "plain_dict/data/0") + 20, 20);
  Put32(&s, CentralHeader(good, "plain_dict/data/0") + 24, 20);
  EXPECT_THAT(Parse(s), HasSubstr("tensor 'a': storage plain_dict/data/0 holds 20 bytes"));
  s = good;  // compressed
  s[CentralHeader(good, "plain_dict/data/2") + 10] = 8;
  EXPECT_THAT(Parse(s), HasSubstr("is compressed (method 8)"));
  s = good;  // a flipped byte in the pickle
  s[s.find("scalar")] = 'S';
  EXPECT_THAT(Parse(s), HasSubstr("CRC mismatch"));
  s = good;  // a storage entry renamed away
  s[CentralHeader(good, "plain_dict/data/3") + 46 + 16] = '9';
  EXPECT_THAT(Parse(s), HasSubstr("local header names another entry"));
  EXPECT_THAT(Parse("PK\x03\x04" + std::string(40, ' ')), HasSubstr("end-of-central-directory"));
  EXPECT_THAT(Parse("\x80\x02\x8a\x0a"), HasSubstr("legacy"));
  EXPECT_THAT(Parse("hello"), HasSubstr("not a torch.save ZIP archive"));
}

}  // namespace
}  // namespace mamba::engine
