// Mamba-2's CUDA kernels against the CPU float64 references on random inputs: the multi-head
// scan over packed chunks (heads sharing a group's B and C, head_dim tails, dt limits, d_state
// below and above a warp, Codestral's 128 heads in 8 groups, slots shuffled with padded slot
// strides) and its decode form (padding rows), prefill in pieces equal to one pass bitwise; the
// gated RMS norm per group, the MLP split's silu(z0) * x0 and the bias add. Label `gpu`; skips
// without a usable device.
#include <cuda_runtime.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/mamba2_scan.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/mamba2_scan.h"
#include "kernels/cuda/rms_norm.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace mamba::kernels::cuda {
namespace {

using namespace testing;  // NOLINT: test helpers

struct Shape {
  int64_t heads, head_dim, d_state, groups;
  double dt_min, dt_max;
  std::vector<int64_t> lengths;  // prefill chunk lengths
};

// Inputs laid out as in the engine: x | B | C rows of the conv output, z | dt rows of in_proj's
// (plus a column of padding each), and `slots` states [heads, d_state, head_dim] slot_stride
// apart (5 floats of padding after each, which no kernel may write).
struct Inputs {
  int64_t T, e, gn, xbc_stride, zdt_stride, per_slot, slot_stride;
  int slots;
  std::vector<float> xbc, zdt, dt_bias, a, d, state;
  Inputs(const Shape& s, int64_t tokens, int num_slots, uint64_t seed)
      : T(tokens),
        e(s.heads * s.head_dim),
        gn(s.groups * s.d_state),
        xbc_stride(e + 2 * gn + 1),
        zdt_stride(e + s.heads + 1),
        per_slot(e * s.d_state),
        slot_stride(per_slot + 5),
        slots(num_slots),
        xbc(Random(static_cast<size_t>(T * xbc_stride), seed, -2, 2)),
        zdt(Random(static_cast<size_t>(T * zdt_stride), seed + 1, -4, 4)),
        dt_bias(Random(static_cast<size_t>(s.heads), seed + 2, -3, 1)),
        a(Random(static_cast<size_t>(s.heads), seed + 3, -8, -0.5f)),
        d(Random(static_cast<size_t>(s.heads), seed + 4)),
        state(Random(static_cast<size_t>(num_slots * slot_stride), seed + 5, -0.5f, 0.5f)) {}

  // The float64 reference over `chunks`, whose slots index a contiguous copy of the states plus
  // `extra_zero_slots` zeroed ones. Returns outputs [T, e] and the states without padding.
  void Reference(const Shape& s, const std::vector<SeqChunk>& chunks, int extra_zero_slots,
                 std::vector<double>* out, std::vector<double>* st) const {
    const std::vector<double> x = ToDouble(xbc), zd = ToDouble(zdt), db = ToDouble(dt_bias),
                              ad = ToDouble(a), dd = ToDouble(d);
    st->assign(static_cast<size_t>((slots + extra_zero_slots) * per_slot), 0.0);
    for (int sl = 0; sl < slots; ++sl) {
      for (int64_t i = 0; i < per_slot; ++i)
        (*st)[static_cast<size_t>(sl * per_slot + i)] =
            state[static_cast<size_t>(sl * slot_stride + i)];
    }
    out->assign(static_cast<size_t>(T * e), 0.0);
    cpu::Mamba2ScanReference<double>(
        {x.data(),  xbc_stride,   zd.data() + e,     zdt_stride,  db.data(),
         ad.data(), x.data() + e, x.data() + e + gn, xbc_stride,  dd.data(),
         zd.data(), zdt_stride,   st->data(),        out->data(), e,
         s.heads,   s.head_dim,   s.d_state,         s.groups,    s.dt_min,
         s.dt_max,  chunks});
    st->resize(static_cast<size_t>(slots * per_slot));  // drop the extra zero slots
  }

  // The states on the device without their padding (and a check that the padding is intact).
  std::vector<float> Unpadded(const std::vector<float>& got) const {
    std::vector<float> out;
    for (int sl = 0; sl < slots; ++sl) {
      const auto at = static_cast<size_t>(sl * slot_stride);
      out.insert(out.end(), got.begin() + static_cast<std::ptrdiff_t>(at),
                 got.begin() + static_cast<std::ptrdiff_t>(at + static_cast<size_t>(per_slot)));
      for (int64_t i = per_slot; i < slot_stride; ++i) {
        EXPECT_EQ(got[at + static_cast<size_t>(i)], state[at + static_cast<size_t>(i)])
            << "slot padding written in slot " << sl;
      }
    }
    return out;
  }
};

// Device copies of Inputs and the argument block pointing at them.
struct Device {
  Device(const Shape& s, const Inputs& in)
      : xbc(in.xbc),
        zdt(in.zdt),
        dt_bias(in.dt_bias),
        a(in.a),
        d(in.d),
        state(in.state),
        out(static_cast<size_t>(in.T * in.e)) {
    args.x = xbc.get();
    args.x_stride = in.xbc_stride;
    args.dt = zdt.get() + in.e;
    args.dt_stride = in.zdt_stride;
    args.dt_bias = dt_bias.get();
    args.a = a.get();
    args.b = xbc.get() + in.e;
    args.c = xbc.get() + in.e + in.gn;
    args.bc_stride = in.xbc_stride;
    args.d_skip = d.get();
    args.z = zdt.get();
    args.z_stride = in.zdt_stride;
    args.state = state.get();
    args.state_slot_stride = in.slot_stride;
    args.out = out.get();
    args.out_stride = in.e;
    args.heads = s.heads;
    args.head_dim = s.head_dim;
    args.d_state = s.d_state;
    args.groups = s.groups;
    args.dt_min = static_cast<float>(s.dt_min);
    args.dt_max = static_cast<float>(s.dt_max);
    args.tokens = in.T;
  }
  bool ok() const {
    return xbc.ok() && zdt.ok() && dt_bias.ok() && a.ok() && d.ok() && state.ok() && out.ok();
  }
  DeviceArray<float> xbc, zdt, dt_bias, a, d, state, out;
  Mamba2ScanArgs args;
};

class CudaMamba2ScanTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override { MAMBA_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaMamba2ScanTest, PrefillMatchesReference) {
  const Shape& s = GetParam();
  const int num_slots = static_cast<int>(s.lengths.size()) + 2;
  const std::vector<SeqChunk> chunks = MakeChunks(s.lengths, num_slots, 7);
  const int64_t T = chunks.back().begin + chunks.back().length;
  const Inputs in(s, T, num_slots, 70);
  Device dev(s, in);
  DeviceArray<ChunkDesc> table(ToDesc(chunks));
  ASSERT_TRUE(dev.ok() && table.ok());
  dev.args.chunks = table.get();
  dev.args.num_chunks = static_cast<int>(chunks.size());
  MAMBA_CUDA_ASSERT(Mamba2Scan(dev.args, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  std::vector<double> want, want_state;
  in.Reference(s, chunks, 0, &want, &want_state);
  EXPECT_TRUE(Close(dev.out.Get(), want, 1e-4, 1e-4, "mamba2 scan out"));
  EXPECT_TRUE(Close(in.Unpadded(dev.state.Get()), want_state, 1e-4, 1e-4, "mamba2 scan state"));
}

TEST_P(CudaMamba2ScanTest, DecodeMatchesReference) {
  const Shape& s = GetParam();
  const int num_slots = 10;
  const std::vector<int32_t> slots = {3, -1, 9, 0, 7, 4, 1};
  const auto B = static_cast<int64_t>(slots.size());
  const Inputs in(s, B, num_slots, 80);
  Device dev(s, in);
  DeviceArray<int32_t> dslots(slots);
  ASSERT_TRUE(dev.ok() && dslots.ok());
  dev.args.slots = dslots.get();
  MAMBA_CUDA_ASSERT(Mamba2ScanDecode(dev.args, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  // Reference: 1-token chunks; the padding row uses an extra zeroed slot.
  std::vector<SeqChunk> ref;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t sl = slots[static_cast<size_t>(b)];
    ref.push_back({b, 1, sl >= 0 ? sl : num_slots});
  }
  std::vector<double> want, want_state;
  in.Reference(s, ref, 1, &want, &want_state);
  EXPECT_TRUE(Close(dev.out.Get(), want, 1e-4, 1e-4, "mamba2 scan decode out"));
  EXPECT_TRUE(
      Close(in.Unpadded(dev.state.Get()), want_state, 1e-5, 1e-5, "mamba2 scan decode state"));
}

// A prompt as one chunk, or as a chunk of 6 then decode steps: the same bits (both walk the
// tokens in order with the same arithmetic).
TEST_P(CudaMamba2ScanTest, PiecesAndDecodeEqualOnePassBitwise) {
  const Shape& s = GetParam();
  const int64_t L = 37;  // more than two 16-token tiles
  const Inputs in(s, L, 1, 90);
  Device one(s, in), pieces(s, in);
  const std::vector<ChunkDesc> whole = {{0, L, 0}};
  DeviceArray<ChunkDesc> whole_dev(whole);
  ASSERT_TRUE(one.ok() && pieces.ok() && whole_dev.ok());
  one.args.chunks = whole_dev.get();
  one.args.num_chunks = 1;
  MAMBA_CUDA_ASSERT(Mamba2Scan(one.args, nullptr));
  // Pieces: rows [0, 6) as a chunk, then each further row as a decode step of batch 1.
  const std::vector<ChunkDesc> first = {{0, 6, 0}};
  DeviceArray<ChunkDesc> first_dev(first);
  DeviceArray<int32_t> slot0(std::vector<int32_t>{0});
  ASSERT_TRUE(first_dev.ok() && slot0.ok());
  Mamba2ScanArgs p = pieces.args;
  p.chunks = first_dev.get();
  p.num_chunks = 1;
  p.tokens = 6;
  MAMBA_CUDA_ASSERT(Mamba2Scan(p, nullptr));
  for (int64_t t = 6; t < L; ++t) {
    Mamba2ScanArgs dstep = pieces.args;
    dstep.x += t * in.xbc_stride;
    dstep.b += t * in.xbc_stride;
    dstep.c += t * in.xbc_stride;
    dstep.z += t * in.zdt_stride;
    dstep.dt += t * in.zdt_stride;
    dstep.out += t * in.e;
    dstep.tokens = 1;
    dstep.slots = slot0.get();
    MAMBA_CUDA_ASSERT(Mamba2ScanDecode(dstep, nullptr));
  }
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  EXPECT_EQ(one.out.Get(), pieces.out.Get());
  EXPECT_EQ(one.state.Get(), pieces.state.Get());
}

std::string ShapeName(const ::testing::TestParamInfo<Shape>& i) {
  std::ostringstream name;  // (GCC 12 -Wrestrict misfires on string concatenation)
  name << "h" << i.param.heads << "p" << i.param.head_dim << "n" << i.param.d_state << "g"
       << i.param.groups;
  return name.str();
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaMamba2ScanTest,
    ::testing::Values(Shape{4, 16, 16, 1, 0.0, 0.0, {5, 1, 9}},       // d_state < a warp
                      Shape{8, 64, 128, 2, 0.0, 0.0, {1, 1, 1, 33}},  // the real head shape
                      Shape{6, 24, 8, 3, 0.01, 0.5, {3, 11, 17}},     // tails, dt limits
                      Shape{2, 80, 40, 1, 0.0, 0.0, {7, 40}},         // 2 states per lane
                      Shape{3, 8, 256, 1, 0.0, 0.0, {20, 2}},         // the largest d_state
                      Shape{128, 64, 128, 8, 0.0, 0.0, {2, 18}}),     // Codestral's heads
    ShapeName);

// ---- Gated RMS norm per group, MLP split, bias ----

class CudaMamba2OpsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { MAMBA_SKIP_WITHOUT_GPU(); }
  // Reads n values of dtype t from device memory as fp32.
  static std::vector<float> ReadAs(const void* dev, DType t, size_t n) {
    std::vector<float> out(n);
    if (t == DType::kF32) {
      EXPECT_EQ(cudaMemcpy(out.data(), dev, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      return out;
    }
    std::vector<uint16_t> bits(n);
    EXPECT_EQ(cudaMemcpy(bits.data(), dev, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < n; ++i) out[i] = FromHalfBits(bits[i], t);
    return out;
  }
  double Tol() const { return GetParam() == DType::kF32 ? 1e-5 : 2 * Epsilon(GetParam()); }
};

TEST_P(CudaMamba2OpsTest, GroupRmsNormMatchesReferencePerGroup) {
  const DType t = GetParam();
  const int64_t rows = 5, groups = 3, gs = 300, width = groups * gs, in_stride = width + 2,
                out_stride = width + 7, first = 4;  // output columns start after an MLP split
  const std::vector<float> in = Random(static_cast<size_t>(rows * in_stride), 11, -3, 3);
  const std::vector<float> w = Random(static_cast<size_t>(width), 12, 0.5f, 1.5f);
  DeviceArray<float> din(in), dw(w);
  DeviceArray<uint8_t> dout(static_cast<size_t>(rows * out_stride) * SizeOf(t));
  ASSERT_TRUE(din.ok() && dw.ok() && dout.ok());
  GroupRmsNormArgs a;
  a.in = din.get();
  a.in_stride = in_stride;
  a.weight = dw.get();
  a.out = dout.get() + first * static_cast<int64_t>(SizeOf(t));
  a.out_dtype = t;
  a.out_stride = out_stride;
  a.rows = rows;
  a.groups = groups;
  a.group_size = gs;
  a.eps = 1e-5;
  MAMBA_CUDA_ASSERT(GroupRmsNorm(a, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  const std::vector<float> all = ReadAs(dout.get(), t, static_cast<size_t>(rows * out_stride));
  const std::vector<double> ind = ToDouble(in), wd = ToDouble(w);
  std::vector<double> want(static_cast<size_t>(rows * width));
  std::vector<float> got;
  for (int64_t g = 0; g < groups; ++g) {  // as engine/cpu/cpu_backend.cc runs it
    cpu::RmsNormReference<double>({ind.data() + g * gs, in_stride, wd.data() + g * gs,
                                   want.data() + g * gs, width, rows, gs, 1e-5});
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < width; ++k)
      got.push_back(all[static_cast<size_t>(r * out_stride + first + k)]);
  }
  EXPECT_TRUE(Close(got, want, Tol(), Tol(), "group rms norm"));
}

TEST_P(CudaMamba2OpsTest, SiluMulAndAddBias) {
  const DType t = GetParam();
  const int64_t rows = 4, dim = 300, in_stride = 2 * dim + 3, out_stride = dim + 1;
  std::vector<float> zx = Random(static_cast<size_t>(rows * in_stride), 21, -6, 6);
  const std::vector<float> bias = Random(static_cast<size_t>(2 * dim), 22);
  DeviceArray<float> dzx(zx), dbias(bias);
  DeviceArray<uint8_t> dout(static_cast<size_t>(rows * out_stride) * SizeOf(t));
  ASSERT_TRUE(dzx.ok() && dbias.ok() && dout.ok());
  MAMBA_CUDA_ASSERT(AddBias({dzx.get(), in_stride, dbias.get(), rows, 2 * dim}, nullptr));
  SiluMulArgs m;
  m.gate = dzx.get();
  m.x = dzx.get() + dim;
  m.in_stride = in_stride;
  m.out = dout.get();
  m.out_dtype = t;
  m.out_stride = out_stride;
  m.rows = rows;
  m.dim = dim;
  MAMBA_CUDA_ASSERT(SiluMul(m, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  std::vector<double> want_zx = ToDouble(zx), want;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < 2 * dim; ++k)
      want_zx[static_cast<size_t>(r * in_stride + k)] += bias[static_cast<size_t>(k)];
  }
  std::vector<float> got_biased = dzx.Get(), got;
  const std::vector<float> all = ReadAs(dout.get(), t, static_cast<size_t>(rows * out_stride));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < dim; ++k) {
      const double z = want_zx[static_cast<size_t>(r * in_stride + k)];
      const double x = want_zx[static_cast<size_t>(r * in_stride + dim + k)];
      want.push_back(x * z / (1.0 + std::exp(-z)));
      got.push_back(all[static_cast<size_t>(r * out_stride + k)]);
    }
  }
  EXPECT_TRUE(Close(got_biased, want_zx, 1e-6, 1e-6, "bias add (padding column untouched)"));
  EXPECT_TRUE(Close(got, want, Tol(), Tol(), "silu(z0) * x0"));
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaMamba2OpsTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(Name(i.param));
                         });

// Runs everywhere: argument checks happen before any launch.
TEST(CudaMamba2Args, BadArgumentsAreRejectedWithoutLaunching) {
  Mamba2ScanArgs a;
  a.heads = 4;
  a.head_dim = 16;
  a.d_state = 300;  // above kMaxMamba2StateSize
  a.tokens = 1;
  EXPECT_EQ(Mamba2Scan(a, nullptr), cudaErrorInvalidValue);
  a.d_state = 16;
  a.groups = 3;  // does not divide the heads
  EXPECT_EQ(Mamba2ScanDecode(a, nullptr), cudaErrorInvalidValue);
  a.groups = 1;
  EXPECT_EQ(Mamba2Scan(a, nullptr), cudaErrorInvalidValue);  // null pointers
  EXPECT_TRUE(Mamba2ScanShapeSupported(128, 64, 128));       // Codestral
  EXPECT_FALSE(Mamba2ScanShapeSupported(65536, 8, 16));      // more blocks than grid.y holds
  EXPECT_FALSE(Mamba2ScanShapeSupported(4, 16, 257));
  GroupRmsNormArgs g;
  g.rows = 1;
  g.groups = 2;
  g.group_size = 0;
  EXPECT_EQ(GroupRmsNorm(g, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(AddBias({nullptr, 4, nullptr, 1, 4}, nullptr), cudaErrorInvalidValue);
  SiluMulArgs m;
  m.rows = 1;
  m.dim = 4;
  EXPECT_EQ(SiluMul(m, nullptr), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace mamba::kernels::cuda
