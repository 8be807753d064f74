// The bundled trained model (models/kjv-mamba-4x192) against the float64 reference values in
// its README: greedy continuation token for token, and the mean NLL of a held-out sentence.
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/generate.h"
#include "gtest/gtest.h"
#include "tests/engine/test_support.h"

namespace mamba::engine {
namespace {

const std::vector<TokenId> kPrompt = {1898, 2656, 753};  // "And God said"
const std::vector<TokenId> kGreedy = {18032, 779,  13,  3617, 13,    285, 1339, 441,  564, 15,
                                      187,   1898, 344, 753,  18032, 779, 13,   3617, 13,  285,
                                      1333,  13,   309, 588,  417,   320, 247,  637,  273, 253};
const std::vector<TokenId> kSentence = {1898, 352,  2210, 281,  1509,  13,  672,  253,
                                        6963, 3735, 253,  3000, 273,   253, 1569, 13,
                                        326,  344,  8845, 521,  10015, 15};

std::unique_ptr<Backend> Load(ComputeDType dtype) {
  auto ck = Checkpoint::Open(testing::SourceDir() / "models/kjv-mamba-4x192");
  EXPECT_TRUE(ck.ok()) << ck.status();
  BackendOptions o;
  o.dtype = dtype;
  o.num_slots = 4;
  auto b = cpu::CpuBackend::Create(*ck, o);
  EXPECT_TRUE(b.ok()) << b.status();
  return std::move(*b);
}

double MeanNll(Backend& b) {
  Logits l;
  double nll = 0;
  for (size_t i = 0; i + 1 < kSentence.size(); ++i) {
    EXPECT_TRUE(
        b.Prefill(std::vector<ChunkInput>{{SlotId(0), {&kSentence[i], 1}, i == 0, true}}, &l).ok());
    auto row = l.Row(0);
    double mx = -1e30, sum = 0;
    for (float v : row) mx = std::max(mx, static_cast<double>(v));
    for (float v : row) sum += std::exp(v - mx);
    nll += -(row[static_cast<size_t>(kSentence[i + 1])] - mx - std::log(sum));
  }
  return nll / static_cast<double>(kSentence.size() - 1);
}

std::vector<TokenId> Greedy(Backend& b) {
  GenerationRequest r;
  r.prompt = kPrompt;
  r.params.temperature = 0;
  r.params.max_new_tokens = 30;
  auto out = Generate(b, {&r, 1});
  EXPECT_TRUE(out.ok());
  std::vector<TokenId> ids;
  for (auto& t : (*out)[0].tokens) ids.push_back(t.id);
  return ids;
}

TEST(KjvModel, Float32MatchesReferenceExactly) {
  auto b = Load(ComputeDType::kFloat32);
  EXPECT_EQ(Greedy(*b), kGreedy);
  EXPECT_NEAR(MeanNll(*b), 3.1110, 1e-3);
}

TEST(KjvModel, Bfloat16StaysClose) {
  auto b = Load(ComputeDType::kAuto);  // stored bf16 -> bf16 compute
  EXPECT_EQ(b->compute_dtype(), kernels::DType::kBF16);
  EXPECT_NEAR(MeanNll(*b), 3.1110, 2e-2);
  const auto ids = Greedy(*b);
  size_t same = 0;
  while (same < ids.size() && ids[same] == kGreedy[same]) ++same;
  EXPECT_GE(same, 10u) << "bf16 greedy diverges from the reference after " << same << " tokens";
}

}  // namespace
}  // namespace mamba::engine
