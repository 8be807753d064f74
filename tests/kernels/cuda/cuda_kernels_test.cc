// Every CUDA kernel of the Mamba mixer against its CPU reference (kernels/cpu/*Reference, run in
// float64) on random inputs of several shapes: odd channel counts, chunk boundaries around the
// scan's 256-token sub-chunks, many slots in shuffled order with padded slot strides, d_state
// 16 and others, each low-precision output dtype. Skips without a usable device.
#include <cuda_runtime.h>

#include <cstring>
#include <tuple>

#include "kernels/cpu/causal_conv.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/selective_scan.h"
#include "kernels/cuda/causal_conv.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/selective_scan.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace mamba::kernels::cuda {
namespace {

using namespace testing;  // NOLINT: test helpers

struct Shape {
  const char* name;
  int64_t dim;
  int64_t d_state;
  int width;
  std::vector<int64_t> lengths;  // prefill chunk lengths
  bool biases;                   // in_proj / conv biases present
};

// Reads n values of dtype t from device memory as fp32.
std::vector<float> ReadAs(const void* dev, DType t, size_t n) {
  std::vector<float> out(n);
  if (t == DType::kF32) {
    if (cudaMemcpy(out.data(), dev, n * 4, cudaMemcpyDeviceToHost) != cudaSuccess)
      ADD_FAILURE() << "copy";
    return out;
  }
  std::vector<uint16_t> bits(n);
  if (cudaMemcpy(bits.data(), dev, n * 2, cudaMemcpyDeviceToHost) != cudaSuccess)
    ADD_FAILURE() << "copy";
  for (size_t i = 0; i < n; ++i) out[i] = FromHalfBits(bits[i], t);
  return out;
}

// rows x dim block of a strided [rows, stride] array.
template <typename T>
std::vector<T> Block(const std::vector<T>& v, int64_t rows, int64_t dim, int64_t stride,
                     int64_t first = 0) {
  std::vector<T> out(static_cast<size_t>(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < dim; ++d)
      out[static_cast<size_t>(r * dim + d)] = v[static_cast<size_t>((first + r) * stride + d)];
  }
  return out;
}

// The chunk total.
int64_t Total(const std::vector<SeqChunk>& c) { return c.back().begin + c.back().length; }

class CudaKernelTest : public ::testing::TestWithParam<std::tuple<Shape, DType>> {
 protected:
  void SetUp() override { MAMBA_SKIP_WITHOUT_GPU(); }
  const Shape& shape() const { return std::get<0>(GetParam()); }
  DType lowp() const { return std::get<1>(GetParam()); }
  double LowpAtol() const { return lowp() == DType::kF32 ? 2e-4 : 2e-3; }
  double LowpRtol() const { return lowp() == DType::kF32 ? 1e-3 : Epsilon(lowp()); }
};

// ---- Causal conv ----

struct ConvData {
  int64_t dim, hist, x_stride, slot_stride, tokens;
  int num_slots;
  std::vector<float> x, x_bias, w, bias, state;
};

ConvData MakeConvData(const Shape& s, int64_t tokens, int num_slots, uint64_t seed) {
  ConvData c;
  c.dim = s.dim;
  c.hist = s.width - 1;
  c.x_stride = s.dim + 3;
  c.slot_stride = c.hist * s.dim + 7;
  c.tokens = tokens;
  c.num_slots = num_slots;
  c.x = Random(static_cast<size_t>(tokens * c.x_stride), seed, -2, 2);
  if (s.biases) c.x_bias = Random(static_cast<size_t>(s.dim), seed + 1, -0.5, 0.5);
  c.w = Random(static_cast<size_t>(s.width * s.dim), seed + 2, -0.7, 0.7);
  if (s.biases) c.bias = Random(static_cast<size_t>(s.dim), seed + 3, -0.5, 0.5);
  c.state = Random(static_cast<size_t>(num_slots * c.slot_stride), seed + 4, -2, 2);
  return c;
}

// The float64 reference on `ref_chunks` (slots index a contiguous copy of the state, plus
// `extra_zero_slots` zeroed ones after them). Returns outputs [tokens, dim] and the state.
void ConvReference(const ConvData& c, int width, const std::vector<SeqChunk>& ref_chunks,
                   int extra_zero_slots, std::vector<double>* out, std::vector<double>* state) {
  std::vector<double> x = ToDouble(c.x);
  if (!c.x_bias.empty()) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t d = 0; d < c.dim; ++d)
        x[static_cast<size_t>(t * c.x_stride + d)] += c.x_bias[static_cast<size_t>(d)];
    }
  }
  const std::vector<double> w = ToDouble(c.w), bias = ToDouble(c.bias);
  const int64_t per = c.hist * c.dim;
  state->assign(static_cast<size_t>((c.num_slots + extra_zero_slots) * per), 0.0);
  for (int s = 0; s < c.num_slots; ++s) {
    for (int64_t i = 0; i < per; ++i)
      (*state)[static_cast<size_t>(s * per + i)] =
          c.state[static_cast<size_t>(s * c.slot_stride + i)];
  }
  out->assign(static_cast<size_t>(c.tokens * c.dim), 0.0);
  cpu::CausalConvReference<double>({x.data(), c.x_stride, w.data(),
                                    bias.empty() ? nullptr : bias.data(), state->data(),
                                    out->data(), c.dim, c.dim, width, ref_chunks});
}

TEST_P(CudaKernelTest, CausalConvPrefillMatchesReference) {
  const Shape& s = shape();
  const int num_slots = static_cast<int>(s.lengths.size()) + 3;
  const std::vector<SeqChunk> chunks = MakeChunks(s.lengths, num_slots, 11);
  const int64_t T = Total(chunks), out_stride = s.dim + 1;
  const ConvData c = MakeConvData(s, T, num_slots, 21);
  DeviceArray<float> x(c.x), xb(c.x_bias), w(c.w), bias(c.bias), state(c.state);
  DeviceArray<float> out(static_cast<size_t>(T * out_stride));
  DeviceArray<uint8_t> low(static_cast<size_t>(T * s.dim) * SizeOf(lowp()));
  DeviceArray<ChunkDesc> table(ToDesc(chunks));
  ASSERT_TRUE(x.ok() && state.ok() && out.ok() && low.ok() && table.ok());
  CausalConvArgs a;
  a.x = x.get();
  a.x_stride = c.x_stride;
  a.x_bias = s.biases ? xb.get() : nullptr;
  a.weight = w.get();
  a.bias = s.biases ? bias.get() : nullptr;
  a.state = state.get();
  a.state_slot_stride = c.slot_stride;
  a.out = out.get();
  a.out_stride = out_stride;
  a.out_lowp = low.get();
  a.out_lowp_dtype = lowp();
  a.out_lowp_stride = s.dim;
  a.dim = s.dim;
  a.width = s.width;
  a.chunks = table.get();
  a.num_chunks = static_cast<int>(chunks.size());
  a.tokens = T;
  MAMBA_CUDA_ASSERT(CausalConv(a, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());

  std::vector<double> want, want_state;
  ConvReference(c, s.width, chunks, 0, &want, &want_state);
  EXPECT_TRUE(Close(Block(out.Get(), T, s.dim, out_stride), want, 1e-5, 1e-5, "conv out"));
  EXPECT_TRUE(Close(ReadAs(low.get(), lowp(), static_cast<size_t>(T * s.dim)), want, LowpAtol(),
                    LowpRtol(), "conv out (low precision)"));
  const std::vector<float> got_state = state.Get();
  EXPECT_TRUE(Close(Block(got_state, num_slots, c.hist * s.dim, c.slot_stride), want_state, 1e-6,
                    1e-6, "conv state"));
  // The padding between slots is never written.
  for (int sl = 0; sl < num_slots; ++sl) {
    for (int64_t i = c.hist * s.dim; i < c.slot_stride; ++i) {
      const size_t at = static_cast<size_t>(sl * c.slot_stride + i);
      ASSERT_EQ(got_state[at], c.state[at]) << "slot padding written at " << at;
    }
  }
}

TEST_P(CudaKernelTest, CausalConvDecodeMatchesReference) {
  const Shape& s = shape();
  const int num_slots = 9;
  // Slots in shuffled order, not all of them, with a padding row (-1) in the middle.
  std::vector<int32_t> slots = {6, 2, 8, -1, 0, 5, 3};
  const auto B = static_cast<int64_t>(slots.size());
  const ConvData c = MakeConvData(s, B, num_slots, 31);
  DeviceArray<float> x(c.x), xb(c.x_bias), w(c.w), bias(c.bias), state(c.state);
  DeviceArray<float> out(static_cast<size_t>(B * s.dim));
  DeviceArray<uint8_t> low(static_cast<size_t>(B * s.dim) * SizeOf(lowp()));
  DeviceArray<int32_t> dslots(slots);
  CausalConvArgs a;
  a.x = x.get();
  a.x_stride = c.x_stride;
  a.x_bias = s.biases ? xb.get() : nullptr;
  a.weight = w.get();
  a.bias = s.biases ? bias.get() : nullptr;
  a.state = state.get();
  a.state_slot_stride = c.slot_stride;
  a.out = out.get();
  a.out_stride = s.dim;
  a.out_lowp = low.get();
  a.out_lowp_dtype = lowp();
  a.out_lowp_stride = s.dim;
  a.dim = s.dim;
  a.width = s.width;
  a.tokens = B;
  a.slots = dslots.get();
  MAMBA_CUDA_ASSERT(CausalConvDecode(a, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());

  // Reference: 1-token chunks; the padding row uses an extra zeroed slot.
  std::vector<SeqChunk> ref;
  for (int64_t b = 0; b < B; ++b)
    ref.push_back(
        {b, 1, slots[static_cast<size_t>(b)] >= 0 ? slots[static_cast<size_t>(b)] : num_slots});
  std::vector<double> want, want_state;
  ConvReference(c, s.width, ref, 1, &want, &want_state);
  want_state.resize(static_cast<size_t>(num_slots * c.hist * s.dim));  // drop the padding slot
  EXPECT_TRUE(Close(out.Get(), want, 1e-5, 1e-5, "conv decode out"));
  EXPECT_TRUE(Close(ReadAs(low.get(), lowp(), static_cast<size_t>(B * s.dim)), want, LowpAtol(),
                    LowpRtol(), "conv decode out (low precision)"));
  EXPECT_TRUE(Close(Block(state.Get(), num_slots, c.hist * s.dim, c.slot_stride), want_state, 1e-6,
                    1e-6, "conv decode state"));
}

// ---- Selective scan ----

struct ScanData {
  int64_t dim, n, rank, bc_stride, x_stride, z_stride, slot_stride, tokens;
  int num_slots;
  std::vector<float> x, dt, dt_bias, a, dbc, d_skip, z, z_bias, state;
};

ScanData MakeScanData(const Shape& s, int64_t tokens, int num_slots, uint64_t seed) {
  ScanData c;
  c.dim = s.dim;
  c.n = s.d_state;
  c.rank = 3;
  c.bc_stride = c.rank + 2 * c.n + 1;
  c.x_stride = s.dim + 2;
  c.z_stride = 2 * s.dim;
  c.slot_stride = c.n * s.dim + 5;
  c.tokens = tokens;
  c.num_slots = num_slots;
  const auto T = static_cast<size_t>(tokens), D = static_cast<size_t>(s.dim);
  c.x = Random(T * static_cast<size_t>(c.x_stride), seed, -1, 1);
  c.dt = Random(T * D, seed + 1, -3.0f, 0.5f);  // softplus(dt + bias) in ~(0.01, 1.6)
  c.dt_bias = Random(D, seed + 2, -1.0f, 0.5f);
  c.a = Random(static_cast<size_t>(c.n) * D, seed + 3, 0.0f, 2.8f);
  for (float& v : c.a) v = -std::exp(v);
  c.dbc = Random(T * static_cast<size_t>(c.bc_stride), seed + 4, -1, 1);
  c.d_skip = Random(D, seed + 5, 0.5f, 1.5f);
  c.z = Random(T * static_cast<size_t>(c.z_stride), seed + 6, -3, 3);
  if (s.biases) c.z_bias = Random(D, seed + 7, -0.5, 0.5);
  c.state = Random(static_cast<size_t>(num_slots * c.slot_stride), seed + 8, -0.5, 0.5);
  return c;
}

void ScanReference(const ScanData& c, const std::vector<SeqChunk>& ref_chunks, int extra_zero_slots,
                   std::vector<double>* out, std::vector<double>* state) {
  const std::vector<double> x = ToDouble(c.x), dt = ToDouble(c.dt), dt_bias = ToDouble(c.dt_bias),
                            a = ToDouble(c.a), dbc = ToDouble(c.dbc), d_skip = ToDouble(c.d_skip);
  std::vector<double> z = ToDouble(c.z);
  if (!c.z_bias.empty()) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t d = 0; d < c.dim; ++d)
        z[static_cast<size_t>(t * c.z_stride + d)] += c.z_bias[static_cast<size_t>(d)];
    }
  }
  const int64_t per = c.n * c.dim;
  state->assign(static_cast<size_t>((c.num_slots + extra_zero_slots) * per), 0.0);
  for (int s = 0; s < c.num_slots; ++s) {
    for (int64_t i = 0; i < per; ++i)
      (*state)[static_cast<size_t>(s * per + i)] =
          c.state[static_cast<size_t>(s * c.slot_stride + i)];
  }
  out->assign(static_cast<size_t>(c.tokens * c.dim), 0.0);
  cpu::SelectiveScanReference<double>({x.data(), c.x_stride, dt.data(), c.dim, dt_bias.data(),
                                       a.data(), dbc.data() + c.rank, dbc.data() + c.rank + c.n,
                                       c.bc_stride, d_skip.data(), z.data(), c.z_stride,
                                       state->data(), out->data(), c.dim, c.dim, c.n, ref_chunks});
}

// Device copies of ScanData and the argument block pointing at them.
struct ScanDevice {
  explicit ScanDevice(const ScanData& c, DType out_dtype)
      : x(c.x),
        dt(c.dt),
        dt_bias(c.dt_bias),
        a(c.a),
        dbc(c.dbc),
        d_skip(c.d_skip),
        z(c.z),
        z_bias(c.z_bias),
        state(c.state),
        out(static_cast<size_t>(c.tokens * c.dim) * SizeOf(out_dtype)) {
    args.x = x.get();
    args.x_stride = c.x_stride;
    args.dt = dt.get();
    args.dt_stride = c.dim;
    args.dt_bias = dt_bias.get();
    args.a = a.get();
    args.b = dbc.get() + c.rank;
    args.c = dbc.get() + c.rank + c.n;
    args.bc_stride = c.bc_stride;
    args.d_skip = d_skip.get();
    args.z = z.get();
    args.z_stride = c.z_stride;
    args.z_bias = c.z_bias.empty() ? nullptr : z_bias.get();
    args.state = state.get();
    args.state_slot_stride = c.slot_stride;
    args.out = out.get();
    args.out_dtype = out_dtype;
    args.out_stride = c.dim;
    args.dim = c.dim;
    args.d_state = c.n;
    args.tokens = c.tokens;
  }
  bool ok() const { return x.ok() && dt.ok() && dbc.ok() && z.ok() && state.ok() && out.ok(); }
  DeviceArray<float> x, dt, dt_bias, a, dbc, d_skip, z, z_bias, state;
  DeviceArray<uint8_t> out;
  SelectiveScanArgs args;
};

TEST_P(CudaKernelTest, SelectiveScanPrefillMatchesReference) {
  const Shape& s = shape();
  const int num_slots = static_cast<int>(s.lengths.size()) + 2;
  const std::vector<SeqChunk> chunks = MakeChunks(s.lengths, num_slots, 41);
  const int64_t T = Total(chunks);
  const ScanData c = MakeScanData(s, T, num_slots, 51);
  ScanDevice dev(c, lowp());
  DeviceArray<ChunkDesc> table(ToDesc(chunks));
  ASSERT_TRUE(dev.ok() && table.ok());
  dev.args.chunks = table.get();
  dev.args.num_chunks = static_cast<int>(chunks.size());
  MAMBA_CUDA_ASSERT(SelectiveScan(dev.args, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  std::vector<double> want, want_state;
  ScanReference(c, chunks, 0, &want, &want_state);
  EXPECT_TRUE(Close(ReadAs(dev.out.get(), lowp(), static_cast<size_t>(T * s.dim)), want, LowpAtol(),
                    LowpRtol(), "scan out"));
  const std::vector<float> got_state = dev.state.Get();
  EXPECT_TRUE(Close(Block(got_state, num_slots, c.n * s.dim, c.slot_stride), want_state, 1e-4, 1e-3,
                    "scan state"));
  for (int sl = 0; sl < num_slots; ++sl) {
    for (int64_t i = c.n * s.dim; i < c.slot_stride; ++i) {
      const size_t at = static_cast<size_t>(sl * c.slot_stride + i);
      ASSERT_EQ(got_state[at], c.state[at]) << "slot padding written at " << at;
    }
  }
}

TEST_P(CudaKernelTest, SelectiveScanDecodeMatchesReference) {
  const Shape& s = shape();
  const int num_slots = 10;
  std::vector<int32_t> slots = {3, -1, 9, 0, 7, 4, 1};
  const auto B = static_cast<int64_t>(slots.size());
  const ScanData c = MakeScanData(s, B, num_slots, 61);
  ScanDevice dev(c, lowp());
  DeviceArray<int32_t> dslots(slots);
  ASSERT_TRUE(dev.ok() && dslots.ok());
  dev.args.slots = dslots.get();
  MAMBA_CUDA_ASSERT(SelectiveScanDecode(dev.args, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  std::vector<SeqChunk> ref;
  for (int64_t b = 0; b < B; ++b)
    ref.push_back(
        {b, 1, slots[static_cast<size_t>(b)] >= 0 ? slots[static_cast<size_t>(b)] : num_slots});
  std::vector<double> want, want_state;
  ScanReference(c, ref, 1, &want, &want_state);
  want_state.resize(static_cast<size_t>(num_slots * c.n * s.dim));
  EXPECT_TRUE(Close(ReadAs(dev.out.get(), lowp(), static_cast<size_t>(B * s.dim)), want, LowpAtol(),
                    LowpRtol(), "scan decode out"));
  EXPECT_TRUE(Close(Block(dev.state.Get(), num_slots, c.n * s.dim, c.slot_stride), want_state, 1e-5,
                    1e-5, "scan decode state"));
}

// ---- RMSNorm with the residual add, embedding ----

TEST_P(CudaKernelTest, AddRmsNormMatchesReference) {
  const Shape& s = shape();
  const int64_t rows = 37, stride = s.dim + 4;
  const auto res = Random(static_cast<size_t>(rows * stride), 71, -3, 3);
  const auto delta = Random(static_cast<size_t>(rows * s.dim), 72, -1, 1);
  const auto dbias = Random(static_cast<size_t>(s.dim), 73, -0.2f, 0.2f);
  const auto w = Random(static_cast<size_t>(s.dim), 74, 0.5, 1.5);
  // Every other row, in reverse, as the final norm picks the last token of each chunk.
  std::vector<int32_t> index;
  for (int64_t r = rows - 1; r >= 0; r -= 2) index.push_back(static_cast<int32_t>(r));
  for (bool use_delta : {false, true}) {
    for (bool use_index : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "delta " << use_delta << " index " << use_index);
      const int64_t out_rows = use_index ? static_cast<int64_t>(index.size()) : rows;
      DeviceArray<float> dres(res), ddelta(delta), db(dbias), dw(w);
      DeviceArray<int32_t> dindex(index);
      DeviceArray<uint8_t> out(static_cast<size_t>(out_rows * s.dim) * SizeOf(lowp()));
      AddRmsNormArgs a;
      a.residual = dres.get();
      a.residual_stride = stride;
      a.delta = use_delta ? ddelta.get() : nullptr;
      a.delta_stride = s.dim;
      a.delta_bias = use_delta && s.biases ? db.get() : nullptr;
      a.weight = dw.get();
      a.out = out.get();
      a.out_dtype = lowp();
      a.out_stride = s.dim;
      a.rows_index = use_index ? dindex.get() : nullptr;
      a.rows = out_rows;
      a.dim = s.dim;
      a.eps = 1e-5;
      MAMBA_CUDA_ASSERT(AddRmsNorm(a, nullptr));
      MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
      // Reference: the residual after the add (only the rows the kernel touched), then the norm.
      std::vector<double> sum = ToDouble(res);
      std::vector<double> xin(static_cast<size_t>(out_rows * s.dim));
      for (int64_t r = 0; r < out_rows; ++r) {
        const int64_t i = use_index ? index[static_cast<size_t>(r)] : r;
        for (int64_t k = 0; k < s.dim; ++k) {
          double& v = sum[static_cast<size_t>(i * stride + k)];
          if (use_delta)
            v += delta[static_cast<size_t>(i * s.dim + k)] +
                 (s.biases ? dbias[static_cast<size_t>(k)] : 0.0);
          xin[static_cast<size_t>(r * s.dim + k)] = v;
        }
      }
      const std::vector<double> wd = ToDouble(w);
      std::vector<double> want(xin.size());
      cpu::RmsNormReference<double>(
          {xin.data(), s.dim, wd.data(), want.data(), s.dim, out_rows, s.dim, 1e-5});
      EXPECT_TRUE(Close(ReadAs(out.get(), lowp(), want.size()), want,
                        lowp() == DType::kF32 ? 1e-5 : 1e-3,
                        lowp() == DType::kF32 ? 1e-5 : Epsilon(lowp()), "norm out"));
      EXPECT_TRUE(Close(dres.Get(), sum, 1e-6, 1e-6, "residual"));
    }
  }
}

TEST_P(CudaKernelTest, EmbeddingMatchesTable) {
  const Shape& s = shape();
  const DType t = lowp();  // the table's stored dtype here
  const int64_t vocab = 50, stride = s.dim + 1;
  const auto table = RoundTo(Random(static_cast<size_t>(vocab * s.dim), 81, -1, 1), t);
  std::vector<int32_t> tokens = {3, 49, 0, 3, 17, 50, -2, 8};  // 50 and -2 are out of range
  DeviceArray<int32_t> dtok(tokens);
  DeviceArray<float> out(tokens.size() * static_cast<size_t>(stride));
  DeviceArray<float> table32(table);
  DeviceArray<uint16_t> table16(t == DType::kF32 ? std::vector<uint16_t>{} : ToHalfBits(table, t));
  EmbeddingArgs a;
  a.tokens = dtok.get();
  a.table = t == DType::kF32 ? static_cast<const void*>(table32.get()) : table16.get();
  a.dtype = t;
  a.vocab = vocab;
  a.dim = s.dim;
  a.out = out.get();
  a.out_stride = stride;
  a.rows = static_cast<int64_t>(tokens.size());
  MAMBA_CUDA_ASSERT(Embedding(a, nullptr));
  MAMBA_CUDA_ASSERT(cudaDeviceSynchronize());
  const std::vector<float> got = out.Get();
  for (size_t r = 0; r < tokens.size(); ++r) {
    const int32_t id = tokens[r];
    for (int64_t k = 0; k < s.dim; ++k) {
      const float v = got[r * static_cast<size_t>(stride) + static_cast<size_t>(k)];
      if (id < 0 || id >= vocab) {
        ASSERT_TRUE(std::isnan(v)) << "row " << r;
      } else {
        ASSERT_EQ(v, table[static_cast<size_t>(id * s.dim + k)]) << "row " << r << " col " << k;
      }
    }
  }
}

TEST(CudaKernelArgs, BadArgumentsAreRejectedWithoutLaunching) {
  // Validation happens on the host, so this runs (and must pass) without a device too.
  CausalConvArgs conv;
  conv.dim = 8;
  conv.width = 9;
  conv.tokens = 1;
  EXPECT_EQ(CausalConv(conv, nullptr), cudaErrorInvalidValue);
  SelectiveScanArgs scan;
  scan.dim = 8;
  scan.d_state = kMaxStateSize + 1;
  scan.tokens = 1;
  EXPECT_EQ(SelectiveScan(scan, nullptr), cudaErrorInvalidValue);
  scan.d_state = 16;
  scan.tokens = 0;  // nothing to do
  EXPECT_EQ(SelectiveScanDecode(scan, nullptr), cudaSuccess);
  AddRmsNormArgs norm;
  norm.rows = 1;
  norm.dim = 0;
  EXPECT_EQ(AddRmsNorm(norm, nullptr), cudaErrorInvalidValue);
}

const Shape kShapes[] = {
    {"single_token", 64, 16, 4, {1}, true},
    {"odd_dim_short_chunks", 37, 16, 4, {5, 1, 3, 2}, true},
    {"sub_chunk_edges", 130, 16, 3, {257, 255, 1, 256, 40}, false},
    {"d_state_64_long", 200, 64, 4, {600}, true},
    {"d_state_1_width_2", 24, 1, 2, {3, 256, 513}, false},
    {"width_1", 48, 7, 1, {9, 1}, true},
    {"d_state_256", 16, 256, 5, {20, 2}, false},
    {"width_8_many_slots", 40, 12, 8, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, true},
    {"mamba_130m_prompt", 1536, 16, 4, {1000, 1048}, false},
};

INSTANTIATE_TEST_SUITE_P(Shapes, CudaKernelTest,
                         ::testing::Combine(::testing::ValuesIn(kShapes),
                                            ::testing::Values(DType::kF32, DType::kBF16,
                                                              DType::kF16)),
                         [](const ::testing::TestParamInfo<std::tuple<Shape, DType>>& i) {
                           return std::string(std::get<0>(i.param).name) + "_" +
                                  Name(std::get<1>(i.param));
                         });

}  // namespace
}  // namespace mamba::kernels::cuda
