// cuda_kernels_bench: each CUDA kernel on the shapes of mamba-130m and mamba-2.8b (2048-token
// prefill, batch-256 decode), Mamba-2's scan and gated norm on mamba2-130m's and Codestral-7B's,
// its achieved bandwidth against the measured device-to-device copy bandwidth, plus the bf16
// GEMMs and the int8 weight-only GEMM on the same shapes. Prints "RESULT key=value ..." lines
// (tests/gpu/run_all.sh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/causal_conv.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/int8_gemm.h"
#include "kernels/cuda/mamba2_scan.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/selective_scan.h"

namespace {

namespace kc = mamba::kernels::cuda;
using mamba::kernels::DType;

#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// A device allocation filled with 0x3c bytes (fp32 ~0.0115, bf16 ~0.0115): finite, small.
struct Buf {
  explicit Buf(size_t bytes) : bytes(bytes) {
    CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 4)));
    CHECK_CUDA(cudaMemset(p, 0x3c, bytes));
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  void* p = nullptr;
  size_t bytes;
};

template <typename T>
void Upload(const Buf& b, const std::vector<T>& v) {
  CHECK_CUDA(cudaMemcpy(b.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
}

// Median microseconds of `launch` (after warm-up), timed with events on the default stream.
double TimeUs(const std::function<cudaError_t()>& launch, int reps = 20) {
  for (int i = 0; i < 3; ++i) CHECK_CUDA(launch());
  CHECK_CUDA(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(e0));
    CHECK_CUDA(launch());
    CHECK_CUDA(cudaEventRecord(e1));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;
}

double g_copy_gbps = 0;

void Report(const std::string& name, const std::string& shape, double us, double bytes) {
  const double gbps = bytes / (us * 1e-6) / 1e9;
  std::printf("RESULT kind=kernel name=%s shape=%s us=%.1f gbps=%.0f pct_of_copy=%.0f\n",
              name.c_str(), shape.c_str(), us, gbps,
              g_copy_gbps > 0 ? 100 * gbps / g_copy_gbps : 0.0);
}

void BenchModel(const char* model, int64_t d, int64_t T, int64_t batch) {
  const int64_t e = 2 * d, n = 16, r = (d + 15) / 16, width = 4, dbc = r + 2 * n;
  const int64_t rows = std::max(T, batch), slots = std::max<int64_t>(batch, 8);
  Buf xz(rows * 2 * e * 4), xc(rows * e * 4), xc_lowp(rows * e * 2), dbc_buf(rows * dbc * 4),
      dt(rows * e * 4), y(rows * e * 2), residual(rows * d * 4), delta(rows * d * 4),
      normed(rows * d * 2);
  Buf conv_w(width * e * 4), conv_b(e * 4), dt_bias(e * 4), a(n * e * 4), dskip(e * 4),
      norm_w(d * 4);
  Buf conv_state(slots * (width - 1) * e * 4), ssm_state(slots * n * e * 4);
  Buf chunk_buf(64 * sizeof(kc::ChunkDesc)), slot_buf(batch * 4);
  std::vector<int32_t> slot_ids(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i)
    slot_ids[static_cast<size_t>(i)] = static_cast<int32_t>(batch - 1 - i);
  Upload(slot_buf, slot_ids);
  const std::string pre = std::string(model) + "_T" + std::to_string(T);

  for (int chunks : {1, 8}) {
    std::vector<kc::ChunkDesc> table;
    for (int i = 0; i < chunks; ++i) table.push_back({T / chunks * i, T / chunks, i});
    Upload(chunk_buf, table);
    const std::string shape = pre + "_chunks" + std::to_string(chunks);
    kc::CausalConvArgs cv;
    cv.x = xz.as<float>();
    cv.x_stride = 2 * e;
    cv.weight = conv_w.as<float>();
    cv.bias = conv_b.as<float>();
    cv.state = conv_state.as<float>();
    cv.state_slot_stride = (width - 1) * e;
    cv.out = xc.as<float>();
    cv.out_stride = e;
    cv.out_lowp = xc_lowp.p;
    cv.out_lowp_dtype = DType::kBF16;
    cv.out_lowp_stride = e;
    cv.dim = e;
    cv.width = static_cast<int>(width);
    cv.chunks = chunk_buf.as<kc::ChunkDesc>();
    cv.num_chunks = chunks;
    cv.tokens = T;
    Report("causal_conv", shape, TimeUs([&] { return kc::CausalConv(cv, nullptr); }),
           static_cast<double>(T * e * (4 + 4 + 2)));
    kc::SelectiveScanArgs sc;
    sc.x = xc.as<float>();
    sc.x_stride = e;
    sc.dt = dt.as<float>();
    sc.dt_stride = e;
    sc.dt_bias = dt_bias.as<float>();
    sc.a = a.as<float>();
    sc.b = dbc_buf.as<float>() + r;
    sc.c = dbc_buf.as<float>() + r + n;
    sc.bc_stride = dbc;
    sc.d_skip = dskip.as<float>();
    sc.z = xz.as<float>() + e;
    sc.z_stride = 2 * e;
    sc.state = ssm_state.as<float>();
    sc.state_slot_stride = n * e;
    sc.out = y.p;
    sc.out_dtype = DType::kBF16;
    sc.out_stride = e;
    sc.dim = e;
    sc.d_state = n;
    sc.chunks = chunk_buf.as<kc::ChunkDesc>();
    sc.num_chunks = chunks;
    sc.tokens = T;
    Report("selective_scan", shape, TimeUs([&] { return kc::SelectiveScan(sc, nullptr); }),
           static_cast<double>(T * e * (4 + 4 + 4 + 2) + T * 2 * n * 4));
  }

  kc::AddRmsNormArgs nm;
  nm.residual = residual.as<float>();
  nm.residual_stride = d;
  nm.delta = delta.as<float>();
  nm.delta_stride = d;
  nm.weight = norm_w.as<float>();
  nm.out = normed.p;
  nm.out_dtype = DType::kBF16;
  nm.out_stride = d;
  nm.rows = T;
  nm.dim = d;
  Report("add_rms_norm", pre, TimeUs([&] { return kc::AddRmsNorm(nm, nullptr); }),
         static_cast<double>(T * d * (4 + 4 + 4 + 2)));

  const std::string dec = std::string(model) + "_batch" + std::to_string(batch);
  kc::CausalConvArgs cd;
  cd.x = xz.as<float>();
  cd.x_stride = 2 * e;
  cd.weight = conv_w.as<float>();
  cd.bias = conv_b.as<float>();
  cd.state = conv_state.as<float>();
  cd.state_slot_stride = (width - 1) * e;
  cd.out = xc.as<float>();
  cd.out_stride = e;
  cd.out_lowp = xc_lowp.p;
  cd.out_lowp_dtype = DType::kBF16;
  cd.out_lowp_stride = e;
  cd.dim = e;
  cd.width = static_cast<int>(width);
  cd.tokens = batch;
  cd.slots = slot_buf.as<int32_t>();
  Report("causal_conv_decode", dec, TimeUs([&] { return kc::CausalConvDecode(cd, nullptr); }),
         static_cast<double>(batch * e * (2 * (width - 1) * 4 + 4 + 4 + 2)));
  kc::SelectiveScanArgs sd;
  sd.x = xc.as<float>();
  sd.x_stride = e;
  sd.dt = dt.as<float>();
  sd.dt_stride = e;
  sd.dt_bias = dt_bias.as<float>();
  sd.a = a.as<float>();
  sd.b = dbc_buf.as<float>() + r;
  sd.c = dbc_buf.as<float>() + r + n;
  sd.bc_stride = dbc;
  sd.d_skip = dskip.as<float>();
  sd.z = xz.as<float>() + e;
  sd.z_stride = 2 * e;
  sd.state = ssm_state.as<float>();
  sd.state_slot_stride = n * e;
  sd.out = y.p;
  sd.out_dtype = DType::kBF16;
  sd.out_stride = e;
  sd.dim = e;
  sd.d_state = n;
  sd.tokens = batch;
  sd.slots = slot_buf.as<int32_t>();
  Report("selective_scan_decode", dec, TimeUs([&] { return kc::SelectiveScanDecode(sd, nullptr); }),
         static_cast<double>(batch * e * (2 * n * 4 + 4 + 4 + 4 + 2)));

  // bf16 GEMMs of in_proj: decode rows read the weight once (bandwidth); prefill is compute.
  auto gemm = kc::CublasGemm::Create(nullptr);
  if (!gemm.ok()) {
    std::fprintf(stderr, "%s\n", gemm.status().ToString().c_str());
    std::exit(1);
  }
  Buf w_in(2 * e * d * 2), x_in(rows * d * 2), y_in(rows * 2 * e * 4);
  for (int64_t m : {int64_t{1}, int64_t{8}, int64_t{64}, batch, T}) {
    kc::GemmArgs g{x_in.p, d, w_in.p, DType::kBF16, 2 * e, d, y_in.as<float>(), 2 * e, m, false};
    const double us = TimeUs([&] { return (*gemm)->Run(g).ok() ? cudaSuccess : cudaErrorUnknown; });
    const std::string shape = std::string(model) + "_in_proj_m" + std::to_string(m);
    Report("gemm_bf16", shape, us, static_cast<double>(2 * e * d * 2 + m * d * 2 + m * 2 * e * 4));
    std::printf("RESULT kind=gemm name=gemm_bf16 shape=%s tflops=%.1f\n", shape.c_str(),
                2.0 * static_cast<double>(m * 2 * e * d) / (us * 1e-6) / 1e12);
  }
  // The same with int8 weights (a scale per row, bf16 x): up to kInt8GemvMaxRows rows the GEMV
  // reads W once; more rows dequantize W to bf16 in tiles and run cuBLAS.
  Buf q_in(2 * e * d), s_in(2 * e * 4), ws(kc::Int8GemmWorkspaceBytes(2 * e, d, DType::kBF16));
  for (int64_t m : {int64_t{1}, int64_t{8}, int64_t{64}, batch, T}) {
    kc::Int8GemmArgs a;
    a.x = x_in.p;
    a.ldx = d;
    a.x_dtype = DType::kBF16;
    a.q = q_in.as<int8_t>();
    a.scales = s_in.as<float>();
    a.group_size = d;
    a.n = 2 * e;
    a.k = d;
    a.y = y_in.as<float>();
    a.ldy = 2 * e;
    a.m = m;
    a.workspace = ws.p;
    a.workspace_bytes = ws.bytes;
    const double us = TimeUs(
        [&] { return kc::Int8Gemm(a, **gemm, nullptr).ok() ? cudaSuccess : cudaErrorUnknown; });
    const std::string shape = std::string(model) + "_in_proj_m" + std::to_string(m);
    Report("gemm_int8", shape, us,
           static_cast<double>(2 * e * d + 2 * e * 4 + m * d * 2 + m * 2 * e * 4));
    std::printf("RESULT kind=gemm name=gemm_int8 shape=%s tflops=%.1f\n", shape.c_str(),
                2.0 * static_cast<double>(m * 2 * e * d) / (us * 1e-6) / 1e12);
  }
}

// Mamba-2: the scan over a T-token prefill (1 and 8 chunks) and a decode batch, and the gated
// norm, with the engine's layout (x | B | C conv rows, z | dt from in_proj's row).
void BenchMamba2(const char* model, int64_t heads, int64_t head_dim, int64_t n, int64_t groups,
                 int64_t T, int64_t batch) {
  const int64_t e = heads * head_dim, gn = groups * n, cd = e + 2 * gn, zdt = e + heads;
  const int64_t rows = std::max(T, batch), slots = std::max<int64_t>(batch, 8);
  Buf xbc(rows * cd * 4), zd(rows * zdt * 4), out(rows * e * 4), y(rows * e * 2),
      state(slots * e * n * 4);
  Buf dt_bias(heads * 4), a(heads * 4), dskip(heads * 4), norm_w(e * 4);
  Buf chunk_buf(64 * sizeof(kc::ChunkDesc)), slot_buf(batch * 4);
  std::vector<int32_t> slot_ids(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i)
    slot_ids[static_cast<size_t>(i)] = static_cast<int32_t>(batch - 1 - i);
  Upload(slot_buf, slot_ids);
  Upload(a, std::vector<float>(static_cast<size_t>(heads), -0.5f));  // decaying, as trained
  kc::Mamba2ScanArgs sc;
  sc.x = xbc.as<float>();
  sc.x_stride = cd;
  sc.dt = zd.as<float>() + e;
  sc.dt_stride = zdt;
  sc.dt_bias = dt_bias.as<float>();
  sc.a = a.as<float>();
  sc.b = xbc.as<float>() + e;
  sc.c = xbc.as<float>() + e + gn;
  sc.bc_stride = cd;
  sc.d_skip = dskip.as<float>();
  sc.z = zd.as<float>();
  sc.z_stride = zdt;
  sc.state = state.as<float>();
  sc.state_slot_stride = e * n;
  sc.out = out.as<float>();
  sc.out_stride = e;
  sc.heads = heads;
  sc.head_dim = head_dim;
  sc.d_state = n;
  sc.groups = groups;
  const std::string pre = std::string(model) + "_T" + std::to_string(T);
  for (int chunks : {1, 8}) {
    std::vector<kc::ChunkDesc> table;
    for (int i = 0; i < chunks; ++i) table.push_back({T / chunks * i, T / chunks, i});
    Upload(chunk_buf, table);
    kc::Mamba2ScanArgs p = sc;
    p.chunks = chunk_buf.as<kc::ChunkDesc>();
    p.num_chunks = chunks;
    p.tokens = T;
    Report("mamba2_scan", pre + "_chunks" + std::to_string(chunks),
           TimeUs([&] { return kc::Mamba2Scan(p, nullptr); }),
           static_cast<double>(T * (3 * e + 2 * gn + heads) * 4 + chunks * 2 * e * n * 4));
  }
  kc::Mamba2ScanArgs dec = sc;
  dec.tokens = batch;
  dec.slots = slot_buf.as<int32_t>();
  Report("mamba2_scan_decode", std::string(model) + "_B" + std::to_string(batch),
         TimeUs([&] { return kc::Mamba2ScanDecode(dec, nullptr); }),
         static_cast<double>(batch * (2 * e * n + 3 * e + 2 * gn + heads) * 4));
  kc::GroupRmsNormArgs g;
  g.in = out.as<float>();
  g.in_stride = e;
  g.weight = norm_w.as<float>();
  g.out = y.p;
  g.out_dtype = DType::kBF16;
  g.out_stride = e;
  g.rows = T;
  g.groups = groups;
  g.group_size = e / groups;
  Report("gated_rms_norm", pre, TimeUs([&] { return kc::GroupRmsNorm(g, nullptr); }),
         static_cast<double>(T * e * (4 + 2)));
}

void BenchGreedy(int64_t rows, int64_t vocab) {
  Buf logits(rows * vocab * 4), tok(rows * 4), lp(rows * 4), ids(rows * kc::kMaxTopN * 4),
      tlp(rows * kc::kMaxTopN * 4);
  for (int top_n : {0, 5}) {
    kc::GreedyArgs g{
        logits.as<float>(), vocab,          rows, vocab, top_n, tok.as<int32_t>(), lp.as<float>(),
        ids.as<int32_t>(),  tlp.as<float>()};
    // Reads the row twice (max, then the sum), plus once per extra top-n round (from L2).
    Report("greedy_sample",
           "rows" + std::to_string(rows) + "_vocab" + std::to_string(vocab) + "_top" +
               std::to_string(top_n),
           TimeUs([&] { return kc::GreedySample(g, nullptr); }),
           static_cast<double>(rows * vocab * 4 * 2));
  }
}

}  // namespace

int main() {
  std::string why;
  if (kc::UsableDeviceCount(&why) == 0) {
    std::printf("no usable CUDA device (%s); nothing to measure\n", why.c_str());
    return 0;
  }
  std::printf("device: %s\n", kc::DeviceDescription(0).c_str());
  {
    const size_t bytes = size_t{512} << 20;
    Buf src(bytes), dst(bytes);
    const double us =
        TimeUs([&] { return cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice); }, 10);
    g_copy_gbps = 2.0 * static_cast<double>(bytes) / (us * 1e-6) / 1e9;
    std::printf("RESULT kind=copy name=d2d_copy gbps=%.0f\n", g_copy_gbps);
  }
  BenchModel("130m", 768, 2048, 256);
  BenchModel("2.8b", 2560, 2048, 256);
  BenchMamba2("mamba2-130m", 24, 64, 128, 1, 2048, 256);
  BenchMamba2("codestral-7b", 128, 64, 128, 8, 2048, 64);
  BenchGreedy(256, 50280);
  return 0;
}
