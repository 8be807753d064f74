// The LoRA tests' adapters (lora_test_support.h).
#include "tests/engine/lora/lora_test_support.h"

#include "gtest/gtest.h"

namespace mamba::engine::testing {

const AdapterSpec kSpecs[4] = {
    {"a", {"in_proj", "x_proj", "out_proj", "embeddings"}, 8, 16, false, kernels::DType::kF32},
    {"b", {"in_proj"}, 1, 4, false, kernels::DType::kF32},
    {"c", {"x_proj", "dt_proj", "out_proj"}, 4, 8, true, kernels::DType::kBF16},
    {"d", {"embeddings", "in_proj", "out_proj"}, 16, 8, false, kernels::DType::kF16},
};

absl::Status WriteSpecAdapters(const ModelConfig& base, const std::filesystem::path& dir) {
  absl::Status written;
  uint64_t seed = 1;
  for (const AdapterSpec& s : kSpecs) {
    RandomLoraOptions o;
    o.config = base;
    o.target_modules = s.targets;
    o.rank = s.rank;
    o.alpha = s.alpha;
    o.use_rslora = s.rslora;
    o.dtype = s.dtype;
    o.seed = seed++;
    written.Update(WriteRandomLoraAdapter(o, dir / s.name));
  }
  return written;
}

ModelConfig Preset(const std::string& name) {
  absl::StatusOr<ModelConfig> c = PresetConfig(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

RandomLoraOptions Options(const ModelConfig& c, std::vector<std::string> targets) {
  RandomLoraOptions o;
  o.config = c;
  o.target_modules = std::move(targets);
  o.seed = 7;
  return o;
}

std::filesystem::path Write(const ::mamba::testing::TempDir& t, const std::string& name,
                            const RandomLoraOptions& o) {
  const std::filesystem::path dir = t.path() / name;
  absl::Status s = WriteRandomLoraAdapter(o, dir);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

absl::StatusOr<std::shared_ptr<const LoraAdapter>> Load(const std::filesystem::path& dir,
                                                        const ModelConfig& c, int64_t max_rank,
                                                        std::string_view name) {
  LoraLoadOptions o;
  o.max_rank = max_rank;
  return LoraAdapter::Load(dir, c, o, name);
}

std::shared_ptr<const LoraAdapter> MustLoad(const std::filesystem::path& dir,
                                            const ModelConfig& c) {
  auto a = Load(dir, c);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *a : nullptr;
}

}  // namespace mamba::engine::testing
