#include "tests/engine/lora_backend_suite.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>

namespace mamba::engine::testing {
namespace {

using kernels::DType;

std::vector<double> D(std::span<const float> v) { return {v.begin(), v.end()}; }

const std::vector<std::string> kAllTargets = {"in_proj",  "x_proj",     "dt_proj",
                                              "out_proj", "embeddings", "lm_head"};

BackendVariant Model(const char* name) {
  for (const BackendVariant& v : BackendVariants()) {
    if (std::string(v.name) == name) return v;
  }
  std::abort();  // a name below that the suite lacks
}

}  // namespace

std::vector<LoraVariant> LoraVariants() {
  auto make = [](std::string name, const char* model, std::vector<std::string> targets,
                 int64_t rank = 8, double alpha = 16) {
    LoraVariant v;
    v.name = std::move(name);
    v.model = Model(model);
    v.targets = std::move(targets);
    v.rank = rank;
    v.alpha = alpha;
    return v;
  };
  std::vector<LoraVariant> v;
  // Each target alone, on the tied base model (an lm_head LoRA changes the head only).
  for (const std::string& t : kAllTargets) v.push_back(make(t, "base", {t}));
  v[1].b_std = 1.0;  // x_proj: dt, B and C move the logits little at the writer's default
  v[2].b_std = 1.0;  // dt_proj
  v.push_back(make("all_r1", "base", kAllTargets, 1, 2));
  v.push_back(make("all_r8", "bias", kAllTargets));
  v.push_back(make("all_r64", "base", kAllTargets, 64, 32));
  LoraVariant patterns = make("rslora_patterns", "untied_sharded", kAllTargets);
  patterns.rslora = true;
  patterns.rank_pattern = {{"x_proj", 4}, {"layers.1.mixer.out_proj", 2}};
  patterns.alpha_pattern = {{"in_proj", 40}, {"embeddings", 3}};
  v.push_back(patterns);
  v.push_back(make("bf16_adapter_bf16_model", "bf16", kAllTargets));
  v.back().dtype = DType::kBF16;
  v.push_back(make("f16_adapter_f32_model", "base", kAllTargets));
  v.back().dtype = DType::kF16;
  v.push_back(make("falcon", "falcon", kAllTargets));
  v.push_back(make("mamba2", "mamba2", {"in_proj", "out_proj", "embeddings", "lm_head"}));
  v.push_back(make("mamba2_mlp", "mamba2_ssm_mlp", {"in_proj", "out_proj"}, 4, 8));
  v.push_back(make("int8", "int8", kAllTargets));
  LoraVariant bin = make("bin_layer1", "untied_sharded", kAllTargets);
  bin.layers = {1};
  bin.format = LoraFileFormat::kPytorchBin;
  v.push_back(bin);
  return v;
}

std::vector<LoraCase> LoraCases(const BackendDevice& device) {
  std::vector<LoraCase> cases;
  for (const LoraVariant& v : LoraVariants()) cases.push_back({device, v});
  return cases;
}

void PrintTo(const LoraCase& c, std::ostream* os) { *os << c.device.name << "/" << c.variant.name; }
std::string LoraCaseName(const ::testing::TestParamInfo<LoraCase>& info) {
  return info.param.variant.name;
}

void LoraBackendTest::SetUp() {
  const LoraCase& c = GetParam();
  MAMBA_SKIP_UNLESS_AVAILABLE(c.device);
  if (const std::string why = c.device.unsupported(ComputeOf(c.variant.model)); !why.empty()) {
    GTEST_SKIP() << c.device.name << ": " << why;
  }
  auto ck = OpenVariantModel(dir_, c.variant.model);
  ASSERT_TRUE(ck.ok()) << ck.status();
  checkpoint_ = *ck;
  if (c.variant.model.compute == ComputeDType::kInt8) {
    reference_options_ = c.device.int8_scheme;
    reference_options_.int8 = true;
    reference_options_.int8_group_size = c.variant.model.int8_group_size;
  }
  auto probe = MakeBackend(1, 16);
  ASSERT_NE(probe, nullptr);
  const DType computed = probe->compute_dtype();
  tol_ = TolerancesFor(computed == DType::kI8 ? c.device.int8_tolerances : computed);
}

std::unique_ptr<Backend> LoraBackendTest::MakeBackend(int slots, int64_t step_tokens) {
  BackendOptions bo;
  bo.dtype = GetParam().variant.model.compute;
  bo.int8_group_size = GetParam().variant.model.int8_group_size;
  bo.num_slots = slots;
  bo.max_step_tokens = step_tokens;
  auto b = GetParam().device.create(checkpoint_, bo);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

std::shared_ptr<const AdapterWeights> LoraBackendTest::Adapter(Backend& backend, uint64_t seed,
                                                               std::vector<std::string> targets,
                                                               std::filesystem::path* dir) {
  const LoraVariant& v = GetParam().variant;
  RandomLoraOptions o;
  o.config = checkpoint_->config();
  o.target_modules = targets.empty() ? v.targets : std::move(targets);
  o.rank = v.rank;
  o.alpha = v.alpha;
  o.use_rslora = v.rslora;
  o.dtype = v.dtype;
  o.seed = seed;
  o.rank_pattern = v.rank_pattern;
  o.alpha_pattern = v.alpha_pattern;
  o.layers_to_transform = v.layers;
  o.format = v.format;
  o.b_std = v.b_std;
  const std::filesystem::path path = dir_.path() / ("lora" + std::to_string(seed));
  if (!std::filesystem::exists(path)) {
    absl::Status s = WriteRandomLoraAdapter(o, path);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return nullptr;
  }
  if (dir != nullptr) *dir = path;
  auto host = LoraAdapter::Load(path, checkpoint_->config(), {});
  EXPECT_TRUE(host.ok()) << host.status();
  if (!host.ok()) return nullptr;
  hosts_.push_back(*host);
  auto w = backend.LoadAdapter(**host);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *w : nullptr;
}

::testing::AssertionResult LoraBackendTest::Same(const Backend& b, std::span<const float> x,
                                                 std::span<const float> y) const {
  return SameLogits(GetParam().device.batch_invariant(b), x, y, tol_.consistency);
}

// Prefill (two chunks) then decode under the adapter match the reference with it, and the
// adapter matters: the reference without it is far outside the tolerance.
TEST_P(LoraBackendTest, MatchesFloat64ReferenceWithAdapter) {
  auto backend = MakeBackend(3, 2048);
  ASSERT_NE(backend, nullptr);
  std::filesystem::path adapter_dir;
  auto adapter = Adapter(*backend, 7, {}, &adapter_dir);
  ASSERT_NE(adapter, nullptr);
  ReferenceOptions ro = reference_options_;
  ro.lora_dir = adapter_dir;
  ReferenceModel reference(*checkpoint_, ro), base(*checkpoint_, reference_options_);
  const auto prompt = RandomPrompt(11, vocab(), 1);
  const std::span<const TokenId> p(prompt);
  Logits logits;
  ChunkInput first{SlotId(1), p.first(5), true, false, false, adapter.get()};
  ASSERT_TRUE(backend->Prefill({&first, 1}, &logits).ok());
  ChunkInput second{SlotId(1), p.subspan(5), false, true, false, adapter.get()};
  ASSERT_TRUE(backend->Prefill({&second, 1}, &logits).ok());
  std::vector<double> want = reference.Forward(prompt), without = base.Forward(prompt);
  EXPECT_TRUE(AllClose(logits.Row(0), want, tol_.reference));
  EXPECT_FALSE(AllClose(logits.Row(0), without, tol_.reference))
      << "the adapter barely changes the logits: this test could not see it ignored";
  for (TokenId t : RandomPrompt(4, vocab(), 2)) {
    ChunkInput c{SlotId(1), {&t, 1}, false, true, false, adapter.get()};
    ASSERT_TRUE(backend->Prefill({&c, 1}, &logits).ok());
    want = reference.Forward({&t, 1});
    EXPECT_TRUE(AllClose(logits.Row(0), want, tol_.reference)) << "decode token " << t;
  }
}

// One call mixing four adapters (other targets too) and the base model, prompts and decode
// tokens of several lengths: each request gets what it gets alone (bitwise where the backend
// promises batch invariance).
TEST_P(LoraBackendTest, MixedAdaptersInOneStepEqualAlone) {
  const bool mamba2 = GetParam().variant.model.head_dim > 0;
  auto busy = MakeBackend(6, 2048), solo = MakeBackend(1, 2048);
  ASSERT_NE(busy, nullptr);
  ASSERT_NE(solo, nullptr);
  const std::vector<std::vector<std::string>> targets = {
      {}, {"in_proj"}, {mamba2 ? "out_proj" : "x_proj", "lm_head"}, {"embeddings", "out_proj"}};
  std::vector<std::shared_ptr<const AdapterWeights>> in_busy, in_solo;
  for (size_t i = 0; i < targets.size(); ++i) {
    in_busy.push_back(Adapter(*busy, 100 + i, targets[i]));
    in_solo.push_back(Adapter(*solo, 100 + i, targets[i]));
    ASSERT_NE(in_busy.back(), nullptr);
  }
  in_busy.push_back(nullptr);  // the base model
  in_solo.push_back(nullptr);
  const std::vector<int32_t> slot = {4, 0, 5, 2, 3};
  std::vector<std::vector<TokenId>> prompts;
  std::vector<ChunkInput> chunks;
  for (size_t i = 0; i < slot.size(); ++i)
    prompts.push_back(RandomPrompt(3 + 9 * i, vocab(), 50 + i));
  for (size_t i = 0; i < slot.size(); ++i) {
    chunks.push_back({SlotId(slot[i]), prompts[i], true, true, i == 1, in_busy[i].get()});
  }
  Logits together, alone;
  ASSERT_TRUE(busy->Prefill(chunks, &together).ok());
  // Each request alone, on the solo backend's one slot: its prompt, then one decode token.
  std::vector<TokenId> next;
  next.reserve(slot.size());  // decode chunks point into it
  std::vector<std::vector<float>> decoded_alone;
  int64_t row = 0;
  for (size_t i = 0; i < slot.size(); ++i) {
    ChunkInput c = chunks[i];
    c.slot = SlotId(0);
    c.adapter = in_solo[i].get();
    ASSERT_TRUE(solo->Prefill({&c, 1}, &alone).ok());
    for (int64_t r = 0; r < alone.rows; ++r) {
      EXPECT_TRUE(Same(*busy, alone.Row(r), together.Row(row++)))
          << "request " << i << " row " << r;
    }
    next.push_back(static_cast<TokenId>((7 * i + 3) % static_cast<size_t>(vocab())));
    ChunkInput d{SlotId(0), {&next.back(), 1}, false, true, false, in_solo[i].get()};
    ASSERT_TRUE(solo->Prefill({&d, 1}, &alone).ok());
    decoded_alone.push_back(alone.data);
  }
  for (size_t i = 0; i < slot.size(); ++i) {
    chunks[i] = {SlotId(slot[i]), {&next[i], 1}, false, true, false, in_busy[i].get()};
  }
  ASSERT_TRUE(busy->Prefill(chunks, &together).ok());
  for (size_t i = 0; i < slot.size(); ++i) {
    EXPECT_TRUE(Same(*busy, decoded_alone[i], together.Row(static_cast<int64_t>(i))))
        << "decode " << i;
  }
}

// Under an adapter, prefill in any chunking equals token by token.
TEST_P(LoraBackendTest, AnyChunkingEqualsTokenByToken) {
  auto backend = MakeBackend(2, 2048);
  ASSERT_NE(backend, nullptr);
  auto adapter = Adapter(*backend, 9);
  ASSERT_NE(adapter, nullptr);
  const auto prompt = RandomPrompt(40, vocab(), 3);
  Logits step;
  for (size_t i = 0; i < prompt.size(); ++i) {
    ChunkInput c{SlotId(0), {&prompt[i], 1}, i == 0, true, false, adapter.get()};
    ASSERT_TRUE(backend->Prefill({&c, 1}, &step).ok());
  }
  const std::vector<float> want = step.data;
  for (std::vector<int64_t> pieces : {std::vector<int64_t>{40}, {1, 39}, {17, 3, 20}}) {
    int64_t at = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      ChunkInput c{SlotId(1), std::span<const TokenId>(prompt).subspan(at, pieces[i]),
                   i == 0,    i + 1 == pieces.size(),
                   false,     adapter.get()};
      ASSERT_TRUE(backend->Prefill({&c, 1}, &step).ok());
      at += pieces[i];
    }
    EXPECT_TRUE(AllClose(step.Row(0), D(want), tol_.consistency)) << "pieces " << pieces.size();
  }
}

}  // namespace mamba::engine::testing
