// Opening model directories: the layouts users download, and every kind of corruption, each of
// which must fail with an error naming the file and tensor (never a crash, never a read outside
// the file).
#include "engine/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TempDir;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void WriteAll(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}

// Splits a safetensors file into its JSON header and data section.
std::pair<json, std::string> Split(const fs::path& p) {
  const std::string s = ReadAll(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<uint8_t>(s[static_cast<size_t>(i)]);
  return {json::parse(s.substr(8, n)), s.substr(8 + n)};
}
void Join(const fs::path& p, const json& header, const std::string& data) {
  const std::string h = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(h.size() >> (8 * i));
  WriteAll(p, out + h + data);
}

class CheckpointTest : public ::testing::Test {
 protected:
  fs::path Model(RandomCheckpointOptions o = {}) {
    o.config = testing::SmallConfig();
    // Not "m" + std::to_string(...): GCC 12 warns there (-Wrestrict, a false positive, PR105651).
    std::string name = "m";
    name += std::to_string(count_++);
    return testing::WriteModel(dir_, name, o);
  }
  // Expects Open to fail with a message containing every needle.
  void ExpectError(const fs::path& model, std::vector<std::string> needles) {
    auto c = Checkpoint::Open(model);
    ASSERT_FALSE(c.ok()) << "opened a broken model";
    for (const std::string& n : needles) {
      EXPECT_NE(std::string(c.status().message()).find(n), std::string::npos)
          << "'" << n << "' not in: " << c.status();
    }
  }
  TempDir dir_;
  int count_ = 0;
};

TEST_F(CheckpointTest, OpensEveryDtypeAndLayout) {
  for (auto dt : {kernels::DType::kF32, kernels::DType::kBF16, kernels::DType::kF16}) {
    RandomCheckpointOptions o;
    o.dtype = dt;
    auto c = Checkpoint::Open(Model(o));
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ((*c)->weight_dtype(), dt);
    EXPECT_EQ((*c)->lm_head(), nullptr);  // tied
  }
  RandomCheckpointOptions o;
  o.shards = 3;
  o.untied_head = true;
  auto sharded = Checkpoint::Open(Model(o));
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_NE((*sharded)->lm_head(), nullptr);
  RandomCheckpointOptions s;
  s.mamba_ssm_layout = true;
  auto orig = Checkpoint::Open(Model(s));
  ASSERT_TRUE(orig.ok()) << orig.status();
  EXPECT_EQ((*orig)->config().source_format, "mamba_ssm");
}

// The mamba_ssm layout stores an integer expand: a d_inner that is no multiple of d_model is
// refused by the writer (it used to be truncated), while the HF layout writes it explicitly.
TEST_F(CheckpointTest, WriterKeepsAnExplicitIntermediateSize) {
  RandomCheckpointOptions o;
  o.config = testing::SmallConfig();
  o.config.intermediate_size = 48;  // 1.5 x hidden
  o.mamba_ssm_layout = true;
  const absl::Status refused = WriteRandomCheckpoint(o, dir_.path() / "ssm");
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_NE(std::string(refused.message()).find("integer expand"), std::string::npos) << refused;
  o.mamba_ssm_layout = false;
  ASSERT_TRUE(WriteRandomCheckpoint(o, dir_.path() / "hf").ok());
  auto c = Checkpoint::Open(dir_.path() / "hf");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->config().intermediate_size, 48);
}

TEST_F(CheckpointTest, GenerationConfigOverridesEos) {
  fs::path m = Model();
  WriteAll(m / "generation_config.json", R"({"eos_token_id": [3, 4], "bos_token_id": 1})");
  auto c = Checkpoint::Open(m);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->config().eos_token_ids, (std::vector<int64_t>{3, 4}));
  WriteAll(m / "generation_config.json", "{oops");
  ExpectError(m, {"generation_config.json", "invalid JSON"});
}

TEST_F(CheckpointTest, MissingOrBadConfig) {
  ExpectError(dir_.path() / "nope", {"nope"});
  fs::path m = Model();
  fs::remove(m / "config.json");
  ExpectError(m, {"config.json"});
  WriteAll(m / "config.json", "{\"hidden_size\": 32,");
  ExpectError(m, {"config.json", "invalid JSON"});
}

TEST_F(CheckpointTest, ConfigDisagreesWithTensors) {
  fs::path m = Model();
  json cfg = json::parse(ReadAll(m / "config.json"));
  cfg["state_size"] = 8;
  WriteAll(m / "config.json", cfg.dump());
  ExpectError(m, {"model.safetensors", "backbone.layers.0.mixer.x_proj.weight", "shape"});
}

TEST_F(CheckpointTest, MissingExtraAndMisshapenTensors) {
  const std::string victim = "backbone.layers.1.mixer.A_log";
  {
    fs::path m = Model();
    auto [h, data] = Split(m / "model.safetensors");
    h.erase(victim);
    Join(m / "model.safetensors", h, data);
    ExpectError(m, {"missing tensor", victim});
  }
  {
    fs::path m = Model();
    auto [h, data] = Split(m / "model.safetensors");
    h["backbone.layers.7.mixer.D"] = {
        {"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {data.size(), data.size() + 16}}};
    Join(m / "model.safetensors", h, data + std::string(16, '\0'));
    ExpectError(m, {"model.safetensors", "backbone.layers.7.mixer.D"});
  }
  {
    fs::path m = Model();
    auto [h, data] = Split(m / "model.safetensors");
    h[victim]["shape"] = {16, 64};  // transposed
    Join(m / "model.safetensors", h, data);
    ExpectError(m, {"model.safetensors", victim, "shape"});
  }
}

// tie_word_embeddings: false needs its own head; it must not silently reuse the embedding.
TEST_F(CheckpointTest, UntiedConfigWithoutHeadIsAnError) {
  RandomCheckpointOptions o;
  o.untied_head = true;
  fs::path m = Model(o);
  {
    // lm_head.weight unties even where the config says tied; the config then says so too.
    json cfg = json::parse(ReadAll(m / "config.json"));
    cfg["tie_word_embeddings"] = true;
    WriteAll(m / "config.json", cfg.dump());
    auto c = Checkpoint::Open(m);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_NE((*c)->lm_head(), nullptr);
    EXPECT_FALSE((*c)->config().tie_word_embeddings);
    cfg["tie_word_embeddings"] = false;
    WriteAll(m / "config.json", cfg.dump());
  }
  auto [h, data] = Split(m / "model.safetensors");
  h.erase("lm_head.weight");
  Join(m / "model.safetensors", h, data);
  ExpectError(m, {"missing tensor", "lm_head.weight"});
  json cfg = json::parse(ReadAll(m / "config.json"));
  cfg["tie_word_embeddings"] = true;
  WriteAll(m / "config.json", cfg.dump());
  EXPECT_TRUE(Checkpoint::Open(m).ok());
}

TEST_F(CheckpointTest, BadDtypes) {
  fs::path m = Model();
  auto [h, data] = Split(m / "model.safetensors");
  h["backbone.norm_f.weight"]["dtype"] = "I32";
  Join(m / "model.safetensors", h, data);
  ExpectError(m, {"model.safetensors", "backbone.norm_f.weight", "I32"});
  h["backbone.norm_f.weight"]["dtype"] = "F64";  // size no longer matches either
  Join(m / "model.safetensors", h, data);
  ExpectError(m, {"backbone.norm_f.weight", "F64"});
  h["backbone.norm_f.weight"]["dtype"] = "BF16";  // supported, but byte count is wrong
  Join(m / "model.safetensors", h, data);
  ExpectError(m, {"backbone.norm_f.weight", "bytes"});
}

TEST_F(CheckpointTest, TruncatedFilesAndBadOffsets) {
  fs::path m = Model();
  const std::string full = ReadAll(m / "model.safetensors");
  for (size_t keep :
       {size_t{0}, size_t{5}, size_t{8}, size_t{100}, full.size() / 2, full.size() - 1}) {
    WriteAll(m / "model.safetensors", full.substr(0, keep));
    ExpectError(m, {"model.safetensors"});
  }
  WriteAll(m / "model.safetensors", full);
  auto [h, data] = Split(m / "model.safetensors");
  json bad = h;
  bad["backbone.norm_f.weight"]["data_offsets"] = {data.size() - 4, data.size() + 124};
  Join(m / "model.safetensors", bad, data);
  ExpectError(m, {"model.safetensors", "backbone.norm_f.weight", "outside"});
  bad = h;
  bad["backbone.norm_f.weight"]["data_offsets"] =
      h["backbone.layers.0.norm.weight"]["data_offsets"];
  Join(m / "model.safetensors", bad, data);
  ExpectError(m, {"overlap"});
  bad = h;
  bad["backbone.norm_f.weight"]["data_offsets"] = {-1, 4};
  Join(m / "model.safetensors", bad, data);
  ExpectError(m, {"backbone.norm_f.weight", "data_offsets"});
  // A header length far beyond the file.
  std::string huge = full;
  huge[6] = '\x7f';
  WriteAll(m / "model.safetensors", huge);
  ExpectError(m, {"model.safetensors", "header length"});
  WriteAll(m / "model.safetensors", std::string("\x04\0\0\0\0\0\0\0{}{}", 12));
  ExpectError(m, {"model.safetensors", "not a JSON object"});
}

TEST_F(CheckpointTest, ShardProblems) {
  RandomCheckpointOptions o;
  o.shards = 2;
  fs::path m = Model(o);
  fs::rename(m / "model-00002-of-00002.safetensors", m / "elsewhere");
  ExpectError(m, {"model-00002-of-00002.safetensors"});
  fs::rename(m / "elsewhere", m / "model-00002-of-00002.safetensors");
  json index = json::parse(ReadAll(m / "model.safetensors.index.json"));
  index["weight_map"]["backbone.layers.0.mixer.phantom"] = "model-00001-of-00002.safetensors";
  WriteAll(m / "model.safetensors.index.json", index.dump());
  ExpectError(m, {"backbone.layers.0.mixer.phantom", "missing"});
  WriteAll(m / "model.safetensors.index.json", R"({"weight_map": {"a": "../../etc/passwd"}})");
  ExpectError(m, {"bad shard name"});
  fs::remove(m / "model.safetensors.index.json");
  ExpectError(m, {"no model.safetensors"});
}

// Random byte corruption of a small file: parsing returns OK or an error, never crashes, and
// every tensor it accepts lies inside the buffer.
// Resident kilobytes of this process in the mapping that holds `p` (/proc/self/smaps).
int64_t MappedRssKb(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  const auto at = reinterpret_cast<uintptr_t>(p);
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > 8) {
      in = at >= lo && at < hi;
    } else if (in && line.rfind("Rss:", 0) == 0) {
      return std::stoll(line.substr(4));
    }
  }
  return -1;
}

// An engine that copied a tensor lets its mapped pages go: they leave the resident set, and the
// tensor still reads the same bytes (faulted back in from the file). The CPU engine does it for
// every matrix it packs or converts, so a model is resident once.
TEST_F(CheckpointTest, ReleasedPagesLeaveTheResidentSetAndStayReadable) {
  RandomCheckpointOptions o;
  o.config = testing::SmallConfig();
  o.config.hidden_size = 256;
  o.config.intermediate_size = 512;
  auto ck = Checkpoint::Open(testing::WriteModel(dir_, "big", o));
  ASSERT_TRUE(ck.ok()) << ck.status();
  const TensorInfo& t = *(*ck)->layer(0).in_proj;  // 1024 x 256 fp32: 1 MiB
  ASSERT_EQ(t.nbytes, size_t{1} << 20);
  auto sum = [&] {
    uint64_t h = 0;
    const auto* b = reinterpret_cast<const unsigned char*>(t.data);
    for (size_t i = 0; i < t.nbytes; ++i) h = h * 31 + b[i];
    return h;
  };
  const uint64_t before = sum();  // every page of the tensor resident now
  const int64_t resident = MappedRssKb(t.data);
  ASSERT_GT(resident, 0);
  (*ck)->ReleasePages(t);
  const int64_t after = MappedRssKb(t.data);
  // All but the partial pages at either end left.
  EXPECT_LE(after, resident - static_cast<int64_t>(t.nbytes / 1024) + 8)
      << "resident " << resident << " KiB -> " << after << " KiB, tensor " << t.nbytes << " B";
  EXPECT_EQ(sum(), before);
  // Bytes outside every mapping are not touched (madvise would zero heap memory).
  std::vector<std::byte> heap(1 << 16, std::byte{7});
  TensorInfo fake = t;
  fake.data = heap.data();
  fake.nbytes = heap.size();
  (*ck)->ReleasePages(fake);
  EXPECT_EQ(heap[heap.size() / 2], std::byte{7});
}

TEST(SafetensorsFuzz, MutatedHeadersNeverEscapeTheBuffer) {
  TempDir dir;
  RandomCheckpointOptions o;
  o.config = testing::SmallConfig();
  o.config.num_hidden_layers = 1;
  const fs::path m = testing::WriteModel(dir, "m", o);
  const std::string good = ReadAll(m / "model.safetensors");
  std::mt19937_64 rng(1);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % std::min<size_t>(s.size(), 1200);
      s[at] = static_cast<char>(rng());
    }
    if (rng() % 4 == 0) s.resize(rng() % s.size());
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(s.data()), s.size());
    auto parsed = ParseSafetensors(bytes, "fuzz");
    if (!parsed.ok()) continue;
    for (const TensorInfo& t : *parsed) {
      ASSERT_GE(t.data, bytes.data());
      ASSERT_LE(t.data + t.nbytes, bytes.data() + bytes.size());
    }
  }
}

}  // namespace
}  // namespace mamba::engine
