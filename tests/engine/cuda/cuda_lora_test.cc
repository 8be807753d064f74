// LoRA adapters on the CUDA engine (issue 15): logits against the CPU engine with the same random
// checkpoint and random PEFT adapters (each target alone and all together, r 1/8/64), a pass
// mixing 4 adapters and the base model against each alone, the adapter checks, loading while
// steps run, the pass plan's segments, and the shrink/expand kernels (reference, row invariance,
// argument checks). Label `gpu`; skips without a usable device (fails under MAMBA_REQUIRE_GPU=1),
// except the plan and the kernels' argument checks, which never reach the device.
#include "engine/cuda/cuda_lora.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/lora/lora_adapter.h"
#include "engine/lora/lora_writer.h"
#include "gtest/gtest.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/lora.h"
#include "tests/engine/test_support.h"
#include "tests/support/gpu_required.h"

namespace mamba::engine {
namespace {

using kernels::DType;
using testing::AllClose;
using testing::RandomPrompt;
using testing::TempDir;
using Variant = testing::BackendVariant;
namespace kc = kernels::cuda;

#define MAMBA_SKIP_WITHOUT_GPU()                                  \
  do {                                                            \
    std::string why_;                                             \
    if (kc::UsableDeviceCount(&why_) == 0) {                      \
      if (::mamba::testing::GpuRequired())                        \
        FAIL() << "GPU required (MAMBA_REQUIRE_GPU=1): " << why_; \
      GTEST_SKIP() << "no usable CUDA device: " << why_;          \
    }                                                             \
  } while (0)

std::vector<double> D(std::span<const float> v) { return {v.begin(), v.end()}; }

double MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

// Model variants: Mamba-1 (tied, biases, untied for lm_head), FalconMamba (mixer norms after
// x_proj), Mamba-2 (plain and mamba_ssm's MLP split, which widens out_proj's input), and bf16
// compute (16-bit GEMM inputs at the in_proj, x_proj, out_proj and head sites).
std::vector<Variant> Variants() {
  using V = Variant;
  V falcon{"falcon", DType::kF32, ComputeDType::kAuto, false, false, true};
  falcon.falcon = true;
  V m2{"mamba2"};
  m2.head_dim = 16;
  m2.n_groups = 2;
  V m2_mlp{"mamba2_ssm_mlp", DType::kF32, ComputeDType::kAuto, false, false, false, true};
  m2_mlp.head_dim = 16;
  m2_mlp.n_groups = 3;
  m2_mlp.mlp = 16;
  m2_mlp.dt_min = 0.002;
  m2_mlp.dt_max = 0.05;
  return {V{"base"},
          V{"bias", DType::kF32, ComputeDType::kAuto, true},
          V{"untied", DType::kF32, ComputeDType::kAuto, false, false, true},
          falcon,
          m2,
          m2_mlp,
          V{"f32_as_bf16", DType::kF32, ComputeDType::kBFloat16, false, false, true}};
}

// One adapter loaded into both engines.
struct Loaded {
  std::shared_ptr<const LoraAdapter> host;
  std::shared_ptr<const AdapterWeights> gpu, cpu;
};

class CudaLoraTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    MAMBA_SKIP_WITHOUT_GPU();
    auto ck = testing::OpenVariantModel(dir_, GetParam());
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = *ck;
    gpu_ = MakeGpu(8, 2048);
    ASSERT_NE(gpu_, nullptr);
    BackendOptions bo;
    bo.dtype = GetParam().compute;
    bo.num_slots = 8;
    auto cpu = cpu::CpuBackend::Create(checkpoint_, bo);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(*cpu);
  }
  std::unique_ptr<cuda::CudaBackend> MakeGpu(int slots, int64_t step_tokens) {
    BackendOptions bo;
    bo.dtype = GetParam().compute;
    bo.num_slots = slots;
    bo.max_step_tokens = step_tokens;
    auto b = cuda::CudaBackend::Create(checkpoint_, bo, 0);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  const ModelConfig& config() const { return checkpoint_->config(); }
  int64_t vocab() const { return config().vocab_size; }
  bool Fp32() const { return gpu_->compute_dtype() == DType::kF32; }
  // As cuda_backend_test's CUDA-vs-CPU comparisons.
  double CpuTol() const { return Fp32() ? 2e-4 : 6e-2; }
  // The same engine, rows batched otherwise (cuBLAS picks kernels by shape).
  double BatchTol() const { return Fp32() ? 1e-5 : 2e-2; }

  // The targets this model has: the per-layer ones, the embeddings, lm_head when untied.
  std::vector<std::string> Targets() const {
    std::vector<std::string> t = {"in_proj"};
    if (!config().is_mamba2()) t.insert(t.end(), {"x_proj", "dt_proj"});
    t.insert(t.end(), {"out_proj", "embeddings"});
    if (!config().tie_word_embeddings) t.push_back("lm_head");
    return t;
  }

  // Writes a random adapter and loads it into both engines (gpu/cpu null on failure).
  Loaded Load(std::vector<std::string> targets, int64_t rank, uint64_t seed) {
    RandomLoraOptions o;
    o.config = config();
    o.target_modules = std::move(targets);
    o.rank = rank;
    o.seed = seed;
    const auto dir = dir_.path() / absl::StrCat("lora", next_++);
    Loaded l;
    const absl::Status written = WriteRandomLoraAdapter(o, dir);
    EXPECT_TRUE(written.ok()) << written;
    auto host = LoraAdapter::Load(dir, config(), LoraLoadOptions{}, "test");
    EXPECT_TRUE(host.ok()) << host.status();
    if (!host.ok()) return l;
    l.host = *host;
    auto g = gpu_->LoadAdapter(*l.host);
    auto c = cpu_->LoadAdapter(*l.host);
    EXPECT_TRUE(g.ok()) << g.status();
    EXPECT_TRUE(c.ok()) << c.status();
    if (g.ok()) l.gpu = *g;
    if (c.ok()) l.cpu = *c;
    return l;
  }

  TempDir dir_;
  int next_ = 0;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<cuda::CudaBackend> gpu_;
  std::unique_ptr<cpu::CpuBackend> cpu_;
};

// Every target alone and all together, r 1, 8 and 64: every position's logits (so the LM head
// runs over many rows) as the CPU engine computes them, and visibly not the base model's.
TEST_P(CudaLoraTest, EachTargetAndAllTogetherMatchCpuEngine) {
  std::vector<std::vector<std::string>> sets;
  for (const std::string& t : Targets()) sets.push_back({t});
  sets.push_back(Targets());
  const auto prompt = RandomPrompt(11, vocab(), 5);
  ChunkInput in{SlotId(0), prompt, true, true, true};
  Logits base;
  ASSERT_TRUE(gpu_->Prefill({&in, 1}, &base).ok());
  uint64_t seed = 100;
  for (int64_t rank : {1, 8, 64}) {
    for (const auto& set : sets) {
      const std::string what = absl::StrCat("r ", rank, " ", absl::StrJoin(set, "+"));
      const Loaded l = Load(set, rank, ++seed);
      ASSERT_NE(l.gpu, nullptr) << what;
      ASSERT_NE(l.cpu, nullptr) << what;
      EXPECT_GT(l.gpu->bytes(), 0) << what;
      Logits g, c;
      in.adapter = l.gpu.get();
      ASSERT_TRUE(gpu_->Prefill({&in, 1}, &g).ok()) << what;
      in.adapter = l.cpu.get();
      ASSERT_TRUE(cpu_->Prefill({&in, 1}, &c).ok()) << what;
      in.adapter = nullptr;
      ASSERT_EQ(g.rows, 11) << what;
      EXPECT_TRUE(AllClose(g.data, D(c.data), CpuTol(), CpuTol())) << what;
      EXPECT_GT(MaxAbsDiff(g.data, base.data), 1e-3) << what << ": the adapter changes nothing";
    }
  }
}

// One call mixing 4 adapters (two neighbouring chunks on the same one) and the base model gives
// each chunk what it gets alone, on this engine and the CPU's; so does the same call cut into
// passes of 5 tokens (chunks split across passes), a continuation of every sequence under its
// adapter, and decode steps (no adapter) after them.
TEST_P(CudaLoraTest, MixedPassMatchesEachAlone) {
  const auto t = Targets();
  std::vector<std::string> last = {"embeddings", "out_proj"};
  if (!config().tie_word_embeddings) last.push_back("lm_head");
  std::vector<Loaded> adapters;
  adapters.push_back(Load({"in_proj"}, 8, 1));
  adapters.push_back(Load(config().is_mamba2() ? std::vector<std::string>{"out_proj"}
                                               : std::vector<std::string>{"x_proj", "dt_proj"},
                          1, 2));
  adapters.push_back(Load(t, 64, 3));
  adapters.push_back(Load(last, 8, 4));
  for (const Loaded& l : adapters) {
    ASSERT_NE(l.gpu, nullptr);
    ASSERT_NE(l.cpu, nullptr);
  }
  // Chunk i: adapter which[i] (-1: base), a prompt of lens[i] tokens, all logits for odd i.
  const std::vector<int> which = {0, 0, -1, 1, 2, 3};
  const std::vector<int64_t> lens = {7, 4, 9, 3, 12, 6};
  const size_t n = which.size();
  std::vector<std::vector<TokenId>> prompts, more;
  for (size_t i = 0; i < n; ++i) {
    prompts.push_back(RandomPrompt(lens[i], vocab(), 10 + i));
    more.push_back(RandomPrompt(3, vocab(), 20 + i));
  }
  auto chunks = [&](bool gpu, const std::vector<std::vector<TokenId>>& toks, bool start) {
    std::vector<ChunkInput> c;
    for (size_t i = 0; i < n; ++i) {
      ChunkInput in{SlotId(static_cast<int32_t>(i)), toks[i], start, true, i % 2 == 1};
      if (which[i] >= 0) {
        const Loaded& l = adapters[static_cast<size_t>(which[i])];
        in.adapter = gpu ? l.gpu.get() : l.cpu.get();
      }
      c.push_back(in);
    }
    return c;
  };
  auto first_row = [&](size_t chunk, const std::vector<ChunkInput>& c) {
    int64_t r = 0;
    for (size_t i = 0; i < chunk; ++i) r += c[i].logit_rows();
    return r;
  };
  auto split = MakeGpu(8, 5);
  ASSERT_NE(split, nullptr);
  for (bool start : {true, false}) {  // the prompts, then their continuations
    const auto& toks = start ? prompts : more;
    const auto g_chunks = chunks(true, toks, start), c_chunks = chunks(false, toks, start);
    Logits mixed, mixed_split, cpu_mixed;
    ASSERT_TRUE(gpu_->Prefill(g_chunks, &mixed).ok());
    ASSERT_TRUE(split->Prefill(g_chunks, &mixed_split).ok());
    ASSERT_TRUE(cpu_->Prefill(c_chunks, &cpu_mixed).ok());
    EXPECT_TRUE(AllClose(mixed_split.data, D(mixed.data), BatchTol(), BatchTol()));
    EXPECT_TRUE(AllClose(mixed.data, D(cpu_mixed.data), CpuTol(), CpuTol()));
    // Each chunk alone on slot 7 (its continuation after replaying its prompt there).
    for (size_t i = 0; i < n; ++i) {
      const std::string what = absl::StrCat(start ? "prompt" : "continuation", " of chunk ", i);
      std::vector<ChunkInput> alone_g, alone_c;
      ChunkInput g = g_chunks[i], c = c_chunks[i];
      g.slot = c.slot = SlotId(7);
      if (!start) {  // replay the prompt on slot 7 first
        ChunkInput pg = chunks(true, prompts, true)[i], pc = chunks(false, prompts, true)[i];
        pg.slot = pc.slot = SlotId(7);
        Logits ignored;
        ASSERT_TRUE(gpu_->Prefill({&pg, 1}, &ignored).ok());
        ASSERT_TRUE(cpu_->Prefill({&pc, 1}, &ignored).ok());
      }
      Logits lg, lc;
      ASSERT_TRUE(gpu_->Prefill({&g, 1}, &lg).ok()) << what;
      ASSERT_TRUE(cpu_->Prefill({&c, 1}, &lc).ok()) << what;
      const int64_t rows = g.logit_rows(), at = first_row(i, g_chunks);
      ASSERT_EQ(lg.rows, rows) << what;
      const std::span<const float> part(mixed.data.data() + at * vocab(),
                                        static_cast<size_t>(rows * vocab()));
      EXPECT_TRUE(AllClose(part, D(lg.data), BatchTol(), BatchTol())) << what;
      EXPECT_TRUE(AllClose(lg.data, D(lc.data), CpuTol(), CpuTol())) << what;
    }
  }
  // Decode (no adapters) after prefills under adapters: as the CPU engine.
  std::vector<SlotId> slots;
  std::vector<TokenId> tokens;
  for (size_t i = 0; i < n; ++i) {
    slots.push_back(SlotId(static_cast<int32_t>(i)));
    tokens.push_back(static_cast<TokenId>(i + 1));
  }
  Logits dg, dc;
  ASSERT_TRUE(gpu_->Decode(slots, tokens, &dg).ok());
  ASSERT_TRUE(cpu_->Decode(slots, tokens, &dc).ok());
  EXPECT_TRUE(AllClose(dg.data, D(dc.data), CpuTol(), CpuTol()));
}

// LoadAdapter on other threads while steps run (and adapters freed there): the steps' results
// do not change, bitwise (same shapes, so the same kernels).
TEST_P(CudaLoraTest, LoadingWhileStepsRunChangesNothing) {
  const Loaded used = Load(Targets(), 8, 7);
  ASSERT_NE(used.gpu, nullptr);
  const auto prompt = RandomPrompt(33, vocab(), 8);
  ChunkInput in{SlotId(2), prompt, true, true, true, used.gpu.get()};
  Logits first;
  ASSERT_TRUE(gpu_->Prefill({&in, 1}, &first).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> loaded{0}, failed{0};
  std::thread loader([&] {
    while (!stop.load()) {
      auto w = gpu_->LoadAdapter(*used.host);  // freed at once, on this thread
      (w.ok() ? loaded : failed).fetch_add(1);
    }
  });
  for (int i = 0; i < 20; ++i) {
    Logits again;
    ASSERT_TRUE(gpu_->Prefill({&in, 1}, &again).ok());
    EXPECT_TRUE(std::ranges::equal(again.data, first.data)) << "step " << i;
  }
  stop = true;
  loader.join();
  EXPECT_GT(loaded.load(), 0);
  EXPECT_EQ(failed.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Configs, CudaLoraTest, ::testing::ValuesIn(Variants()),
                         [](const ::testing::TestParamInfo<Variant>& i) {
                           return std::string(i.param.name);
                         });

// ---- What the CUDA engine refuses ----

class CudaLoraErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    MAMBA_SKIP_WITHOUT_GPU();
    RandomCheckpointOptions o;
    o.config = testing::SmallConfig();
    auto ck = Checkpoint::Open(testing::WriteModel(dir_, "m", o));
    ASSERT_TRUE(ck.ok()) << ck.status();
    checkpoint_ = *ck;
    gpu_ = Gpu(checkpoint_);
    ASSERT_NE(gpu_, nullptr);
  }
  std::unique_ptr<cuda::CudaBackend> Gpu(std::shared_ptr<const Checkpoint> ck) {
    BackendOptions bo;
    bo.num_slots = 2;
    auto b = cuda::CudaBackend::Create(std::move(ck), bo, 0);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? std::move(*b) : nullptr;
  }
  // A random adapter written for `written_for` and read against it.
  std::shared_ptr<const LoraAdapter> Adapter(const ModelConfig& written_for,
                                             std::vector<std::string> targets, int64_t rank,
                                             int64_t max_rank = 64) {
    RandomLoraOptions o;
    o.config = written_for;
    o.target_modules = std::move(targets);
    o.rank = rank;
    const auto dir = dir_.path() / absl::StrCat("lora", next_++);
    EXPECT_TRUE(WriteRandomLoraAdapter(o, dir).ok());
    LoraLoadOptions lo;
    lo.max_rank = max_rank;
    auto a = LoraAdapter::Load(dir, written_for, lo);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : nullptr;
  }

  TempDir dir_;
  int next_ = 0;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<cuda::CudaBackend> gpu_;
};

class ForeignAdapter : public AdapterWeights {
 public:
  int64_t bytes() const override { return 0; }
};

// A chunk naming an adapter this engine did not load: another backend's, another CUDA engine's.
TEST_F(CudaLoraErrors, PrefillRefusesAdaptersOfOtherBackends) {
  auto other = Gpu(checkpoint_);
  ASSERT_NE(other, nullptr);
  auto host = Adapter(checkpoint_->config(), {"in_proj"}, 4);
  ASSERT_NE(host, nullptr);
  auto theirs = other->LoadAdapter(*host);
  ASSERT_TRUE(theirs.ok()) << theirs.status();
  auto ours = gpu_->LoadAdapter(*host);
  ASSERT_TRUE(ours.ok()) << ours.status();
  const ForeignAdapter foreign;
  const std::vector<TokenId> prompt = {1, 2, 3};
  for (const AdapterWeights* a : {static_cast<const AdapterWeights*>(&foreign), theirs->get()}) {
    std::vector<ChunkInput> chunks = {{SlotId(0), prompt, true, true, false, ours->get()},
                                      {SlotId(1), prompt, true, true, false, a}};
    Logits l;
    const absl::Status s = gpu_->Prefill(chunks, &l);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("chunk 1"), std::string::npos) << s;
  }
  std::vector<ChunkInput> fine = {{SlotId(0), prompt, true, true, false, ours->get()}};
  Logits l;
  EXPECT_TRUE(gpu_->Prefill(fine, &l).ok());
}

TEST_F(CudaLoraErrors, LoadAdapterRefusesWhatDoesNotFit) {
  const ModelConfig& c = checkpoint_->config();
  // A rank above the kernels' 64 (the loader allowed 128).
  auto big = Adapter(c, {"in_proj"}, 65, 128);
  ASSERT_NE(big, nullptr);
  absl::Status s = gpu_->LoadAdapter(*big).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("ranks 1..64"), std::string::npos) << s;
  // Another model's shapes.
  ModelConfig wider = c;
  wider.hidden_size = c.hidden_size + 16;
  wider.intermediate_size = 2 * wider.hidden_size;
  auto misfit = Adapter(wider, {"x_proj"}, 4);
  ASSERT_NE(misfit, nullptr);
  s = gpu_->LoadAdapter(*misfit).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("do not fit"), std::string::npos) << s;
  // Another layer count.
  ModelConfig deeper = c;
  deeper.num_hidden_layers = c.num_hidden_layers + 1;
  auto deep = Adapter(deeper, {"in_proj"}, 4);
  ASSERT_NE(deep, nullptr);
  s = gpu_->LoadAdapter(*deep).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("layers"), std::string::npos) << s;
}

// Mamba-2 layers have no x_proj: an adapter read for a Mamba-1 model is refused, naming it.
TEST_F(CudaLoraErrors, LoadAdapterRefusesXProjOnMamba2) {
  Variant m2{"mamba2"};
  m2.head_dim = 16;
  m2.n_groups = 2;
  TempDir d;
  auto ck = testing::OpenVariantModel(d, m2);
  ASSERT_TRUE(ck.ok()) << ck.status();
  auto gpu = Gpu(*ck);
  ASSERT_NE(gpu, nullptr);
  ModelConfig m1 = testing::SmallConfig();
  m1.num_hidden_layers = (*ck)->config().num_hidden_layers;
  auto a = Adapter(m1, {"x_proj"}, 4);
  ASSERT_NE(a, nullptr);
  const absl::Status s = gpu->LoadAdapter(*a).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("no x_proj"), std::string::npos) << s;
}

// ---- The pass plan (host code: runs everywhere) ----

// Runs of rows per site: neighbouring chunks on one adapter join, the base model's rows and an
// adapter's missing modules get none, the head's segments index the logit rows.
TEST(CudaLoraPlan, SegmentsAreRunsOfRowsUnderOneModule) {
  const int64_t layers = 2;
  const float a[6] = {}, b[6] = {};
  using cuda::CudaLoraModule;
  std::vector<CudaLoraModule> x(static_cast<size_t>(cuda::LoraNumSites(layers)));
  std::vector<CudaLoraModule> y = x;
  x[static_cast<size_t>(cuda::LoraLayerSite(0, LoraTarget::kInProj))] = {&a[0], &b[0], 4, 0.5f};
  x[static_cast<size_t>(cuda::LoraHeadSite(layers))] = {&a[1], &b[1], 2, 2.0f};
  y[static_cast<size_t>(cuda::LoraLayerSite(0, LoraTarget::kInProj))] = {&a[2], &b[2], 8, 1.0f};
  y[static_cast<size_t>(cuda::LoraEmbeddingsSite(layers))] = {&a[3], &b[3], 1, 3.0f};
  // Rows [0, 3) x, [3, 5) x, [5, 9) base, [9, 10) y, [10, 14) x.
  const std::vector<kernels::SeqChunk> chunks = {
      {0, 3, 0}, {3, 2, 1}, {5, 4, 2}, {9, 1, 3}, {10, 4, 4}};
  const std::vector<const CudaLoraModule*> modules = {x.data(), x.data(), nullptr, y.data(),
                                                      x.data()};
  // Logit rows: the last of chunks 0, 2, 3; all of chunks 1 and 4.
  const std::vector<int32_t> logit_rows = {2, 3, 4, 8, 9, 10, 11, 12, 13};
  cuda::LoraPlan plan;
  plan.Build(chunks, modules, logit_rows, layers);
  ASSERT_FALSE(plan.empty());
  auto segments = [&](int64_t site) {
    const cuda::LoraSiteSegments& s = plan.site(site);
    std::vector<std::tuple<int64_t, int64_t, const float*, int32_t, float>> out;
    for (int64_t i = s.offset; i < s.offset + s.count; ++i) {
      const kc::LoraSegment& g = plan.segments()[static_cast<size_t>(i)];
      out.emplace_back(g.row_begin, g.rows, g.a, g.rank, g.scale);
    }
    return out;
  };
  using Seg = std::tuple<int64_t, int64_t, const float*, int32_t, float>;
  const int64_t in0 = cuda::LoraLayerSite(0, LoraTarget::kInProj);
  EXPECT_EQ(
      segments(in0),
      (std::vector<Seg>{{0, 5, &a[0], 4, 0.5f}, {9, 1, &a[2], 8, 1.0f}, {10, 4, &a[0], 4, 0.5f}}));
  EXPECT_EQ(plan.site(in0).max_rows, 5);
  EXPECT_EQ(segments(cuda::LoraEmbeddingsSite(layers)), (std::vector<Seg>{{9, 1, &a[3], 1, 3.0f}}));
  // Logit rows 0-2 (rows 2, 3, 4) and 5-8 (rows 10-13) are x's; 3 is the base's, 4 y's (no head).
  EXPECT_EQ(segments(cuda::LoraHeadSite(layers)),
            (std::vector<Seg>{{0, 3, &a[1], 2, 2.0f}, {5, 4, &a[1], 2, 2.0f}}));
  EXPECT_EQ(plan.site(cuda::LoraHeadSite(layers)).max_rows, 4);
  for (int64_t s :
       {cuda::LoraLayerSite(0, LoraTarget::kXProj), cuda::LoraLayerSite(0, LoraTarget::kOutProj),
        cuda::LoraLayerSite(1, LoraTarget::kInProj)}) {
    EXPECT_EQ(plan.site(s).count, 0) << "site " << s;
  }
  EXPECT_EQ(plan.segments().size(), 6u);
  // Only the base model: no plan (the pass runs as without LoRA).
  const std::vector<const CudaLoraModule*> none(chunks.size(), nullptr);
  plan.Build(chunks, none, logit_rows, layers);
  EXPECT_TRUE(plan.empty());
}

// ---- The kernels ----

// Argument checks happen before any device call, so this runs everywhere.
TEST(CudaLoraKernels, ArgumentChecks) {
  float dummy = 0;
  kc::LoraSegment seg;
  const kc::LoraShrinkArgs ok_shrink{&dummy, DType::kF32, 8, 8, &seg, 1, 1, &dummy, 64};
  kc::LoraShrinkArgs s = ok_shrink;
  s.ldt = 63;
  EXPECT_EQ(kc::LoraShrink(s, nullptr), cudaErrorInvalidValue);
  s = ok_shrink;
  s.ldx = 7;
  EXPECT_EQ(kc::LoraShrink(s, nullptr), cudaErrorInvalidValue);
  s = ok_shrink;
  s.x = nullptr;
  EXPECT_EQ(kc::LoraShrink(s, nullptr), cudaErrorInvalidValue);
  s = ok_shrink;
  s.x_dtype = DType::kI8;
  s.max_rows = -1;
  EXPECT_EQ(kc::LoraShrink(s, nullptr), cudaErrorInvalidValue);
  s = ok_shrink;
  s.num_segments = 0;  // nothing to do: no launch
  EXPECT_EQ(kc::LoraShrink(s, nullptr), cudaSuccess);
  const kc::LoraExpandArgs ok_expand{&dummy, 64, &seg, 1, 1, &dummy, 8, 8};
  kc::LoraExpandArgs e = ok_expand;
  e.ldy = 7;
  EXPECT_EQ(kc::LoraExpand(e, nullptr), cudaErrorInvalidValue);
  e = ok_expand;
  e.out = 65536 * 64;  // more output tiles than grid.y holds
  e.ldy = e.out;
  EXPECT_EQ(kc::LoraExpand(e, nullptr), cudaErrorInvalidValue);
  e = ok_expand;
  e.segments = nullptr;
  EXPECT_EQ(kc::LoraExpand(e, nullptr), cudaErrorInvalidValue);
  const int32_t token = 0;
  kc::LoraEmbeddingShrinkArgs g{&token, 0, &seg, 1, 1, &dummy, 64};
  EXPECT_EQ(kc::LoraEmbeddingShrink(g, nullptr), cudaErrorInvalidValue);  // vocab 0
  g.vocab = 4;
  g.ldt = 8;
  EXPECT_EQ(kc::LoraEmbeddingShrink(g, nullptr), cudaErrorInvalidValue);
}

// Device memory for the kernel test (freed at exit).
template <typename T>
struct Dev {
  explicit Dev(const std::vector<T>& host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> Get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  T* p = nullptr;
  size_t n;
};

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Two adapters over 37 rows (a gap of base rows between them), in = 100 (two k tiles), out = 70
// (two output tiles), ranks 5 and 64: as float64 says, and each row bitwise the same when it is
// its segment's only row (a row's result does not depend on the others).
TEST(CudaLoraKernels, MatchReferenceAndAreRowInvariant) {
  MAMBA_SKIP_WITHOUT_GPU();
  const int64_t rows = 37, in = 100, out = 70, ldt = kc::kMaxLoraRank;
  const int32_t ranks[2] = {5, 64};
  const float scales[2] = {0.5f, 2.0f};
  const auto x = Random(static_cast<size_t>(rows * in), 1), y0 = Random(rows * out, 2);
  std::vector<float> a[2], b[2];
  for (int i = 0; i < 2; ++i) {
    a[i] = Random(static_cast<size_t>(ranks[i] * in), 3 + i);
    b[i] = Random(static_cast<size_t>(out * ranks[i]), 5 + i);
  }
  Dev<float> dx(x), da0(a[0]), da1(a[1]), db0(b[0]), db1(b[1]);
  const float* da[2] = {da0.p, da1.p};
  const float* db[2] = {db0.p, db1.p};
  // Rows [0, 9) adapter 0, [9, 14) base, [14, 37) adapter 1.
  const int64_t begin[2] = {0, 14}, count[2] = {9, 23};
  auto run = [&](const std::vector<kc::LoraSegment>& segs, int64_t max_rows) {
    Dev<kc::LoraSegment> dsegs(segs);
    Dev<float> dt(std::vector<float>(static_cast<size_t>(rows * ldt), 0.0f)), dy(y0);
    EXPECT_EQ(kc::LoraShrink({dx.p, DType::kF32, in, in, dsegs.p, static_cast<int64_t>(segs.size()),
                              max_rows, dt.p, ldt},
                             nullptr),
              cudaSuccess);
    EXPECT_EQ(kc::LoraExpand(
                  {dt.p, ldt, dsegs.p, static_cast<int64_t>(segs.size()), max_rows, dy.p, out, out},
                  nullptr),
              cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return dy.Get();
  };
  std::vector<kc::LoraSegment> segs;
  for (int i = 0; i < 2; ++i)
    segs.push_back({begin[i], count[i], da[i], db[i], ranks[i], scales[i]});
  const std::vector<float> got = run(segs, 23);
  for (int64_t r = 0; r < rows; ++r) {
    const int i = r < 9 ? 0 : r >= 14 ? 1 : -1;
    for (int64_t o = 0; o < out; ++o) {
      double want = y0[static_cast<size_t>(r * out + o)];
      if (i >= 0) {
        for (int32_t j = 0; j < ranks[i]; ++j) {
          double t = 0;
          for (int64_t k = 0; k < in; ++k) {
            t += static_cast<double>(x[static_cast<size_t>(r * in + k)]) *
                 a[i][static_cast<size_t>(j * in + k)];
          }
          want += scales[i] * t * b[i][static_cast<size_t>(o * ranks[i] + j)];
        }
      }
      ASSERT_NEAR(got[static_cast<size_t>(r * out + o)], want, 1e-4 * (1 + std::fabs(want)))
          << "row " << r << " out " << o;
    }
  }
  for (int64_t r : {int64_t{3}, int64_t{20}, int64_t{36}}) {
    const int i = r < 9 ? 0 : 1;
    const std::vector<float> alone = run({{r, 1, da[i], db[i], ranks[i], scales[i]}}, 1);
    EXPECT_TRUE(
        std::equal(alone.begin() + r * out, alone.begin() + (r + 1) * out, got.begin() + r * out))
        << "row " << r;
  }
}

// The embedding's gather: scale * A[:, token] (A stored transposed), NaN for a bad id.
TEST(CudaLoraKernels, EmbeddingShrinkGathersColumns) {
  MAMBA_SKIP_WITHOUT_GPU();
  const int64_t vocab = 10, rank = 3, ldt = kc::kMaxLoraRank;
  const auto at = Random(static_cast<size_t>(vocab * rank), 9);  // [vocab, rank]
  const std::vector<int32_t> tokens = {4, 0, 9, 11};
  Dev<float> da(at), dt(std::vector<float>(4 * ldt, 0.0f));
  Dev<int32_t> dtok(tokens);
  Dev<kc::LoraSegment> dsegs(std::vector<kc::LoraSegment>{{1, 3, da.p, nullptr, rank, 2.0f}});
  ASSERT_EQ(kc::LoraEmbeddingShrink({dtok.p, vocab, dsegs.p, 1, 3, dt.p, ldt}, nullptr),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto t = dt.Get();
  for (int64_t j = 0; j < rank; ++j) {
    EXPECT_EQ(t[static_cast<size_t>(j)], 0.0f) << "row 0 is outside the segment";
    EXPECT_EQ(t[static_cast<size_t>(ldt + j)], 2.0f * at[static_cast<size_t>(0 * rank + j)]);
    EXPECT_EQ(t[static_cast<size_t>(2 * ldt + j)], 2.0f * at[static_cast<size_t>(9 * rank + j)]);
    EXPECT_TRUE(std::isnan(t[static_cast<size_t>(3 * ldt + j)]));
  }
}

}  // namespace
}  // namespace mamba::engine
