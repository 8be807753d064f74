// CudaBackend set-up, state slots, error handling and the fast decode path (DecodeAndDraw:
// sampling on the device); the passes themselves are in cuda_forward.cc.
#include "engine/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/cuda/cuda_lora.h"
#include "engine/logging.h"
#include "engine/status_macros.h"
#include "kernels/cuda/causal_conv.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/int8_gemm.h"
#include "kernels/cuda/lora.h"
#include "kernels/cuda/mamba2_scan.h"
#include "kernels/cuda/packed_chunks.h"
#include "kernels/cuda/sampling.h"
#include "kernels/cuda/selective_scan.h"
#include "spdlog/spdlog.h"

namespace mamba::engine::cuda {
namespace {

using kernels::DType;
namespace kc = kernels::cuda;

static_assert(kc::kMaxTopN == kMaxTopLogprobs, "GPU top-n limit must match the API's");

// Decode batch sizes that get a graph (a batch runs in the smallest bucket that holds it).
constexpr int kBucketSizes[] = {1,   2,   4,   8,   16,  24,  32,  40,  48,
                                56,  64,  80,  96,  112, 128, 160, 192, 224,
                                256, 320, 384, 448, 512, 640, 768, 896, 1024};

// Headroom left free when sizing the slot pool from free memory: graphs, cuBLAS, fragmentation.
constexpr size_t kAutoSlotReserve = size_t{512} << 20;

size_t AlignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

// DecodeAndDraw's buffers (device and pinned alike), for up to `rows` draws: the rules, then
// token [rows] | logprob [rows] | top ids [rows, top stride] | top log-probs [rows, top stride].
struct DrawLayout {
  explicit DrawLayout(size_t rows)
      : token(AlignUp(rows * sizeof(kc::DrawRow), 64)),
        logprob(token + AlignUp(rows * 4, 64)),
        top_ids(logprob + AlignUp(rows * 4, 64)),
        top_logprobs(top_ids + AlignUp(rows * kc::kMaxTopN * 4, 64)),
        bytes(top_logprobs + rows * kc::kMaxTopN * 4) {}
  static constexpr size_t rules = 0;
  size_t token, logprob, top_ids, top_logprobs, bytes;
};

DType ResolveDType(const Checkpoint& ckpt, ComputeDType want) {
  switch (want) {
    case ComputeDType::kFloat32:
      return DType::kF32;
    case ComputeDType::kBFloat16:
      return DType::kBF16;
    case ComputeDType::kFloat16:
      return DType::kF16;
    case ComputeDType::kInt8:
      return DType::kI8;
    case ComputeDType::kAuto:
      break;
  }
  return ckpt.weight_dtype();
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options, int device,
    const CudaBackendOptions& cuda_options) {
  if (options.num_slots < 0) {
    return absl::InvalidArgumentError("num_slots must be >= 0 (0 = as many as fit in memory)");
  }
  if (options.max_step_tokens < 1 || options.max_step_tokens > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError("max_step_tokens must be in [1, 16777216]");
  }
  if (cuda_options.max_graph_batch < 0 || cuda_options.max_auto_slots < 1 ||
      !(cuda_options.state_memory_fraction > 0 && cuda_options.state_memory_fraction <= 1)) {
    return absl::InvalidArgumentError(
        "CudaBackendOptions: max_graph_batch >= 0, max_auto_slots >= 1, state_memory_fraction in "
        "(0, 1]");
  }
  const ModelConfig& c = checkpoint->config();
  if (c.conv_kernel < 1 || c.conv_kernel > kc::kMaxConvWidth || c.state_size < 1 ||
      c.state_size > kc::kMaxStateSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA engine supports conv_kernel 1..", kc::kMaxConvWidth, " and state_size 1..",
        kc::kMaxStateSize, " (model: ", c.conv_kernel, ", ", c.state_size, ")"));
  }
  if (c.is_mamba2() && !kc::Mamba2ScanShapeSupported(c.num_heads, c.head_dim, c.state_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CUDA engine's Mamba-2 scan does not take ", c.num_heads, " heads of ",
                     c.head_dim, " with state_size ", c.state_size, " (state_size 1..",
                     kc::kMaxMamba2StateSize, ", heads * ceil(head_dim / 8) <= 65535)"));
  }
  std::string why;
  const int count = kc::DeviceCount(&why);
  if (count == 0) return absl::FailedPreconditionError(absl::StrCat("no CUDA device: ", why));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " does not exist (", count, " device(s))"));
  }
  int major = 0, minor = 0;
  MAMBA_RETURN_IF_ERROR(
      CudaStatus(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
                 "cudaDeviceGetAttribute"));
  MAMBA_RETURN_IF_ERROR(
      CudaStatus(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
                 "cudaDeviceGetAttribute"));
  if (major * 10 + minor < kc::kMinComputeCapability) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda:", device, " (", kc::DeviceDescription(device), ") has compute capability ", major,
        ".", minor, "; the CUDA engine needs 8.0 or newer"));
  }
  const DType dtype = ResolveDType(*checkpoint, options.dtype);
  std::unique_ptr<CudaBackend> b(
      new CudaBackend(std::move(checkpoint), options, cuda_options, device));
  MAMBA_RETURN_IF_ERROR(b->Init(dtype));
  return b;
}

CudaBackend::CudaBackend(std::shared_ptr<const Checkpoint> checkpoint,
                         const BackendOptions& options, const CudaBackendOptions& cuda_options,
                         int device)
    : checkpoint_(std::move(checkpoint)),
      options_(options),
      cuda_options_(cuda_options),
      device_(device) {}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (CUgraphExec_st* g : graphs_) {
    if (g) cudaGraphExecDestroy(g);
  }
  gemm_.reset();
  if (stream_) cudaStreamDestroy(stream_);
  cudaGetLastError();
  // Device buffers are freed by their destructors, on this device.
}

absl::Status CudaBackend::Init(DType dtype) {
  MAMBA_RETURN_IF_ERROR(
      CudaStatus(cudaSetDevice(device_), absl::StrCat("cudaSetDevice(", device_, ")")));
  device_name_ = kc::DeviceDescription(device_);
  cudaStream_t stream = nullptr;
  MAMBA_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                   "cudaStreamCreateWithFlags"));
  stream_ = stream;
  lora_plan_ = std::make_unique<LoraPlan>();
  MAMBA_ASSIGN_OR_RETURN(gemm_, kc::CublasGemm::Create(stream_));
  const double t0 = Now();
  MAMBA_ASSIGN_OR_RETURN(weights_,
                         UploadCudaWeights(*checkpoint_, dtype, options_.int8_group_size));
  const ModelConfig& c = config();
  conv_layer_floats_ = (c.conv_kernel - 1) * c.conv_dim();
  ssm_layer_floats_ = c.ssm_state_floats();
  conv_slot_floats_ = conv_layer_floats_ * c.num_hidden_layers;
  ssm_slot_floats_ = ssm_layer_floats_ * c.num_hidden_layers;
  max_tokens_ = options_.max_step_tokens;
  MAMBA_RETURN_IF_ERROR(AllocateScratch());
  MAMBA_RETURN_IF_ERROR(AllocateSlotsAndLogits());
  graphs_enabled_ = cuda_options_.cuda_graphs && !options_.profile &&
                    !cuda_options_.sync_each_kernel && !buckets_.empty();
  graphs_.assign(buckets_.size(), nullptr);
  MAMBA_RETURN_IF_ERROR(Sync("initialization"));
  engine::NamedLogger("cuda")->info(
      "cuda:{}: {} MiB of weights uploaded in {:.2f} s; {} slots x {:.1f} MiB of state", device_,
      weights_->arena.bytes() >> 20, Now() - t0, num_slots_,
      static_cast<double>(state_bytes_per_slot()) / (1 << 20));
  return absl::OkStatus();
}

absl::Status CudaBackend::AllocateScratch() {
  const ModelConfig& c = config();
  const bool m2 = c.is_mamba2(), lowp = weights_->compute != DType::kF32;
  const size_t T = static_cast<size_t>(max_tokens_), d = static_cast<size_t>(c.hidden_size),
               e = static_cast<size_t>(c.intermediate_size),
               ip = static_cast<size_t>(c.in_proj_size()), cd = static_cast<size_t>(c.conv_dim()),
               dbc = m2 ? 0 : static_cast<size_t>(c.time_step_rank + 2 * c.state_size),
               y = static_cast<size_t>(c.mlp_size) + e;  // out_proj's input width
  const size_t ws = kernels::SizeOf(weights_->compute);
  struct Want {
    DeviceBuffer* buf;
    size_t bytes;
    const char* what;
  };
  const Want wants[] = {
      {&residual_, T * d * 4, "residual stream"},
      {&delta_, T * d * 4, "out_proj output"},
      {&normed_, T * d * ws, "normed activations"},
      {&xz_, T * ip * 4, "in_proj output"},
      {&xc_, T * cd * 4, "conv output"},
      {&xc_lowp_, lowp && !m2 ? T * e * ws : 0, "conv output (GEMM input)"},
      {&dbc_, T * dbc * 4, "x_proj output"},
      {&dt_, m2 ? 0 : T * e * 4, "dt_proj output"},
      {&ssm_y_, m2 ? T * e * 4 : 0, "scan output"},
      {&y_, T * y * ws, "out_proj input"},
      {&tokens_dev_, T * 4, "token ids"},
      {&slots_dev_, T * 4, "decode slots"},
      {&chunks_dev_, T * sizeof(kc::ChunkDesc), "chunk table"},
      {&rows_dev_, T * 4, "logit rows"},
      {&lora_t_, T * kc::kMaxLoraRank * 4, "LoRA shrink output"},
  };
  for (const Want& w : wants) {
    MAMBA_ASSIGN_OR_RETURN(*w.buf, DeviceBuffer::Allocate(w.bytes, w.what));
  }
  // int8 weights: passes of more than kInt8GemvMaxRows rows dequantize tiles of W here (graphs
  // included: nothing is allocated during a pass).
  if (max_tokens_ > kc::kInt8GemvMaxRows) {
    MAMBA_ASSIGN_OR_RETURN(int8_workspace_,
                           DeviceBuffer::Allocate(weights_->int8_workspace_bytes,
                                                  "int8 GEMM workspace (dequantized weights)"));
  }
  stage_tokens_ = 0;
  stage_slots_ = AlignUp(T * 4, 64);
  stage_chunks_ = stage_slots_ + AlignUp(T * 4, 64);
  stage_rows_ = stage_chunks_ + AlignUp(T * sizeof(kc::ChunkDesc), 64);
  MAMBA_ASSIGN_OR_RETURN(staging_, PinnedBuffer::Allocate(stage_rows_ + T * 4, "input staging"));
  return absl::OkStatus();
}

void CudaBackend::ChooseBuckets() {
  buckets_.clear();
  const int64_t cap = std::min<int64_t>(max_tokens_, cuda_options_.max_graph_batch);
  for (int b : kBucketSizes) {
    if (b > cap) break;
    buckets_.push_back(b);
    if (b >= num_slots_) break;
  }
}

absl::Status CudaBackend::AllocateSlotsAndLogits() {
  const ModelConfig& c = config();
  const size_t ws = kernels::SizeOf(weights_->compute);
  const size_t vocab = static_cast<size_t>(c.vocab_size), d = static_cast<size_t>(c.hidden_size);
  int64_t slots = options_.num_slots;
  if (slots == 0) {
    size_t free_bytes = 0, total = 0;
    MAMBA_RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo"));
    // Per slot: its state, plus the logits row and head input it may need at most.
    const size_t per_slot = static_cast<size_t>(state_bytes_per_slot()) + vocab * 4 + d * ws;
    const double usable = free_bytes > kAutoSlotReserve
                              ? static_cast<double>(free_bytes - kAutoSlotReserve) *
                                    cuda_options_.state_memory_fraction
                              : 0.0;
    slots = std::min<int64_t>(cuda_options_.max_auto_slots,
                              static_cast<int64_t>(usable / static_cast<double>(per_slot)));
    if (slots < 1) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "no device memory left for a state slot (", free_bytes >> 20,
          " MiB free after weights and scratch; a slot needs ", per_slot >> 20, " MiB)"));
    }
    engine::NamedLogger("cuda")->info("cuda:{}: {} state slots fit in {} MiB free", device_, slots,
                                      free_bytes >> 20);
  }
  num_slots_ = static_cast<int>(slots);
  ChooseBuckets();
  max_logit_rows_ = std::min<int64_t>(
      max_tokens_, std::max<int64_t>(num_slots_, buckets_.empty() ? 0 : buckets_.back()));
  const size_t R = static_cast<size_t>(max_logit_rows_);
  MAMBA_ASSIGN_OR_RETURN(head_in_, DeviceBuffer::Allocate(R * d * ws, "LM head input"));
  MAMBA_ASSIGN_OR_RETURN(logits_, DeviceBuffer::Allocate(R * vocab * 4, "logits"));
  const size_t draw_bytes = DrawLayout(R).bytes;
  MAMBA_ASSIGN_OR_RETURN(draw_dev_, DeviceBuffer::Allocate(draw_bytes, "draw rules and results"));
  MAMBA_ASSIGN_OR_RETURN(draw_host_, PinnedBuffer::Allocate(draw_bytes, "draw rules and results"));
  MAMBA_ASSIGN_OR_RETURN(logits_host_, PinnedBuffer::Allocate(R * vocab * 4, "logits (host)"));
  const size_t S = static_cast<size_t>(num_slots_);
  MAMBA_ASSIGN_OR_RETURN(
      conv_state_,
      DeviceBuffer::Allocate(S * static_cast<size_t>(conv_slot_floats_) * 4, "conv state pool"));
  MAMBA_ASSIGN_OR_RETURN(
      ssm_state_,
      DeviceBuffer::Allocate(S * static_cast<size_t>(ssm_slot_floats_) * 4, "SSM state pool"));
  for (DeviceBuffer* b : {&conv_state_, &ssm_state_}) {
    if (b->bytes() == 0) continue;
    MAMBA_RETURN_IF_ERROR(
        CudaStatus(cudaMemsetAsync(b->get(), 0, b->bytes(), stream_), "cudaMemsetAsync"));
  }
  return absl::OkStatus();
}

std::string CudaBackend::Describe() const {
  const std::string graphs =
      graphs_enabled_ ? absl::StrCat("CUDA graphs for decode batches up to ", buckets_.back())
                      : std::string("no CUDA graphs");
  const std::string gemms = weights_->weights == DType::kI8
                                ? absl::StrCat(" weights (int8 GEMV / dequantized ",
                                               kernels::Name(weights_->compute), " cuBLAS GEMMs), ")
                                : std::string(" weights (cuBLAS GEMMs), ");
  return absl::StrCat(
      "cuda:", device_, " (", device_name_, "): ", kernels::Name(weights_->weights), gemms,
      num_slots_, " state slots of ",
      absl::StrFormat("%.1f", static_cast<double>(state_bytes_per_slot()) / (1 << 20)), " MiB, ",
      graphs);
}

BackendInfo CudaBackend::info() const {
  BackendInfo i;
  i.device = absl::StrCat("cuda:", device_);
  i.device_name = device_name_;
  i.dtype = weights_->weights;
  i.slots = num_slots_;
  i.description = Describe();
  i.model_fingerprint = checkpoint_->fingerprint();
  return i;
}

int CudaBackend::graphs_captured() const {
  return static_cast<int>(
      std::count_if(graphs_.begin(), graphs_.end(), [](auto* g) { return g != nullptr; }));
}

// ---- Errors ----

absl::Status CudaBackend::Ready() {
  if (!broken_.ok()) return broken_;
  return CudaStatus(cudaSetDevice(device_), absl::StrCat("cudaSetDevice(", device_, ")"));
}

absl::Status CudaBackend::Fail(absl::Status s) {
  if (capturing_) return s;  // CaptureGraph reports it and falls back to eager steps
  engine::NamedLogger("cuda")->error("cuda:{}: {}", device_, std::string(s.message()));
  cudaGetLastError();  // clear a non-sticky error
  // A sticky error (e.g. an illegal address) makes every later call fail: remember it.
  if (const cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess) {
    broken_ = absl::InternalError(absl::StrCat("the CUDA engine on device ", device_,
                                               " is unusable after an earlier error (",
                                               cudaGetErrorName(e), "): ", s.message()));
    engine::NamedLogger("cuda")->error("cuda:{}: device context lost; every later step will fail",
                                       device_);
  }
  return s;
}

absl::Status CudaBackend::Launched(int cuda_error, const char* kernel, int64_t layer, Op op) {
  auto what = [&] {
    return layer >= 0 ? absl::StrCat("kernel ", kernel, " (layer ", layer, ")")
                      : absl::StrCat("kernel ", kernel);
  };
  if (cuda_error != 0) return Fail(CudaStatus(cuda_error, what()));
  if ((cuda_options_.sync_each_kernel || options_.profile) && !capturing_) {
    if (const cudaError_t e = cudaStreamSynchronize(stream_); e != cudaSuccess) {
      return Fail(CudaStatus(e, what()));
    }
    if (options_.profile && op < kNumOps) {
      const double now = Now();
      op_seconds_[op] += now - profile_mark_;
      profile_mark_ = now;
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Sync(const std::string& what) {
  if (const cudaError_t e = cudaStreamSynchronize(stream_); e != cudaSuccess) {
    return Fail(
        CudaStatus(e, cuda_options_.sync_each_kernel
                          ? what
                          : absl::StrCat(what,
                                         " (a kernel of this step failed; run with "
                                         "CudaBackendOptions::sync_each_kernel to name it)")));
  }
  return absl::OkStatus();
}

// ---- Slots ----

absl::Status CudaBackend::CheckSlot(SlotId slot) const {
  if (slot.value < 0 || slot.value >= num_slots_) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot.value, " out of range [0, ", num_slots_, ")"));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ZeroSlotAsync(int32_t slot) {
  if (conv_slot_floats_ > 0) {
    MAMBA_RETURN_IF_ERROR(
        Launched(cudaMemsetAsync(conv_state_.as<float>() + slot * conv_slot_floats_, 0,
                                 static_cast<size_t>(conv_slot_floats_) * 4, stream_),
                 "cudaMemsetAsync(conv state)", -1, kNumOps));
  }
  return Launched(cudaMemsetAsync(ssm_state_.as<float>() + slot * ssm_slot_floats_, 0,
                                  static_cast<size_t>(ssm_slot_floats_) * 4, stream_),
                  "cudaMemsetAsync(ssm state)", -1, kNumOps);
}

absl::Status CudaBackend::ResetSlot(SlotId slot) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(slot));
  MAMBA_RETURN_IF_ERROR(Ready());
  MAMBA_RETURN_IF_ERROR(ZeroSlotAsync(slot.value));
  return Sync(absl::StrCat("reset of slot ", slot.value));
}

absl::Status CudaBackend::CopySlot(SlotId from, SlotId to) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(from));
  MAMBA_RETURN_IF_ERROR(CheckSlot(to));
  if (from == to) return absl::OkStatus();
  MAMBA_RETURN_IF_ERROR(Ready());
  if (conv_slot_floats_ > 0) {
    float* base = conv_state_.as<float>();
    MAMBA_RETURN_IF_ERROR(Launched(
        cudaMemcpyAsync(base + to.value * conv_slot_floats_, base + from.value * conv_slot_floats_,
                        static_cast<size_t>(conv_slot_floats_) * 4, cudaMemcpyDeviceToDevice,
                        stream_),
        "cudaMemcpyAsync(conv state)", -1, kNumOps));
  }
  float* base = ssm_state_.as<float>();
  MAMBA_RETURN_IF_ERROR(Launched(
      cudaMemcpyAsync(base + to.value * ssm_slot_floats_, base + from.value * ssm_slot_floats_,
                      static_cast<size_t>(ssm_slot_floats_) * 4, cudaMemcpyDeviceToDevice, stream_),
      "cudaMemcpyAsync(ssm state)", -1, kNumOps));
  return Sync(absl::StrCat("copy of slot ", from.value, " to ", to.value));
}

// A slot's state on the device is [layers][conv floats] then [layers][ssm floats]; SaveSlot
// writes per layer the conv state then the SSM state, in the kernels' layouts.
absl::Status CudaBackend::SaveSlot(SlotId slot, std::vector<float>* state) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(slot));
  MAMBA_RETURN_IF_ERROR(Ready());
  state->resize(static_cast<size_t>(state_floats()));
  const int64_t L = config().num_hidden_layers;
  const int64_t conv = conv_layer_floats_, ssm = ssm_layer_floats_;
  const float* conv_base = conv_state_.as<float>() + slot.value * conv_slot_floats_;
  const float* ssm_base = ssm_state_.as<float>() + slot.value * ssm_slot_floats_;
  float* out = state->data();
  for (int64_t l = 0; l < L; ++l) {
    if (conv > 0) {
      MAMBA_RETURN_IF_ERROR(
          Launched(cudaMemcpyAsync(out, conv_base + l * conv, static_cast<size_t>(conv) * 4,
                                   cudaMemcpyDeviceToHost, stream_),
                   "cudaMemcpyAsync(conv state to host)", -1, kNumOps));
    }
    MAMBA_RETURN_IF_ERROR(
        Launched(cudaMemcpyAsync(out + conv, ssm_base + l * ssm, static_cast<size_t>(ssm) * 4,
                                 cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync(ssm state to host)", -1, kNumOps));
    out += conv + ssm;
  }
  return Sync(absl::StrCat("save of slot ", slot.value));
}

absl::Status CudaBackend::RestoreSlot(SlotId slot, std::span<const float> state) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(slot));
  MAMBA_RETURN_IF_ERROR(Ready());
  if (static_cast<int64_t>(state.size()) != state_floats()) {
    return absl::InvalidArgumentError(absl::StrCat("RestoreSlot: a state of ", state.size(),
                                                   " floats; this model's has ", state_floats()));
  }
  const int64_t L = config().num_hidden_layers;
  const int64_t conv = conv_layer_floats_, ssm = ssm_layer_floats_;
  float* conv_base = conv_state_.as<float>() + slot.value * conv_slot_floats_;
  float* ssm_base = ssm_state_.as<float>() + slot.value * ssm_slot_floats_;
  const float* in = state.data();
  for (int64_t l = 0; l < L; ++l) {
    if (conv > 0) {
      MAMBA_RETURN_IF_ERROR(
          Launched(cudaMemcpyAsync(conv_base + l * conv, in, static_cast<size_t>(conv) * 4,
                                   cudaMemcpyHostToDevice, stream_),
                   "cudaMemcpyAsync(conv state from host)", -1, kNumOps));
    }
    MAMBA_RETURN_IF_ERROR(
        Launched(cudaMemcpyAsync(ssm_base + l * ssm, in + conv, static_cast<size_t>(ssm) * 4,
                                 cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync(ssm state from host)", -1, kNumOps));
    in += conv + ssm;
  }
  return Sync(absl::StrCat("restore of slot ", slot.value));
}

// ---- Decode with sampling on the device ----

absl::Status CudaBackend::DecodeAndDraw(std::span<const SlotId> slots,
                                        std::span<const TokenId> tokens,
                                        std::span<const std::optional<DrawRule>> rules,
                                        std::vector<SampledToken>* drawn, Logits* logits) {
  if (rules.size() != slots.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DecodeAndDraw: ", slots.size(), " slots but ", rules.size(), " rules"));
  }
  for (size_t i = 0; i < rules.size(); ++i) {
    if (rules[i] && (rules[i]->top_logprobs < 0 || rules[i]->top_logprobs > kMaxTopLogprobs)) {
      return absl::InvalidArgumentError(absl::StrCat("DecodeAndDraw: row ", i, " asks for ",
                                                     rules[i]->top_logprobs,
                                                     " top log-probs; at most ", kMaxTopLogprobs));
    }
  }
  std::vector<ChunkInput> chunks;
  MAMBA_RETURN_IF_ERROR(CheckDecode(slots, tokens, &chunks));
  const auto B = static_cast<int64_t>(slots.size());
  if (B > max_tokens_ || B > max_logit_rows_) {
    return Backend::DecodeAndDraw(slots, tokens, rules, drawn, logits);  // several passes
  }
  const int64_t V = config().vocab_size;
  const auto host_rows = static_cast<int64_t>(
      std::count_if(rules.begin(), rules.end(), [](const auto& r) { return !r.has_value(); }));
  logits->Resize(host_rows, V);
  drawn->assign(rules.size(), SampledToken{});
  if (B == 0) return absl::OkStatus();
  const DrawLayout at(static_cast<size_t>(max_logit_rows_));
  auto* host = draw_host_.as<std::byte>();
  auto* dev = draw_dev_.as<std::byte>();
  auto* staged = reinterpret_cast<kc::DrawRow*>(host + at.rules);
  int64_t draws = 0;
  int top_stride = 0;
  for (int64_t i = 0; i < B; ++i) {
    const std::optional<DrawRule>& r = rules[static_cast<size_t>(i)];
    if (!r) continue;
    kc::DrawRow& d = staged[draws++];
    d = kc::DrawRow{};
    d.uniform = r->uniform;
    d.temperature = r->temperature;
    d.top_k = r->top_k;
    d.top_p = r->top_p;
    d.min_p = r->min_p;
    d.row = static_cast<int32_t>(i);
    d.top_n = r->top_logprobs;
    d.want_logprob = r->logprobs ? 1 : 0;
    top_stride = std::max(top_stride, static_cast<int>(r->top_logprobs));
  }
  // After the step's forward, before its synchronization: the draws, then the copies back.
  auto tail = [&]() -> absl::Status {
    if (draws > 0) {
      MAMBA_RETURN_IF_ERROR(
          Launched(cudaMemcpyAsync(dev + at.rules, host + at.rules,
                                   static_cast<size_t>(draws) * sizeof(kc::DrawRow),
                                   cudaMemcpyHostToDevice, stream_),
                   "cudaMemcpyAsync(draw rules)", -1, kNumOps));
      kc::DrawArgs a;
      a.logits = logits_.as<float>();
      a.logits_stride = V;
      a.logits_rows = B;
      a.vocab = V;
      a.rules = reinterpret_cast<const kc::DrawRow*>(dev + at.rules);
      a.draws = draws;
      a.top_stride = top_stride;
      a.token = reinterpret_cast<int32_t*>(dev + at.token);
      a.logprob = reinterpret_cast<float*>(dev + at.logprob);
      a.top_ids = reinterpret_cast<int32_t*>(dev + at.top_ids);
      a.top_logprobs = reinterpret_cast<float*>(dev + at.top_logprobs);
      MAMBA_RETURN_IF_ERROR(Launched(kc::DrawSample(a, stream_), "draw_sample", -1, kNumOps));
      const size_t n4 = static_cast<size_t>(draws) * 4,
                   top4 = static_cast<size_t>(draws * top_stride) * 4;
      const std::pair<size_t, size_t> copies[] = {
          {at.token, n4}, {at.logprob, n4}, {at.top_ids, top4}, {at.top_logprobs, top4}};
      for (const auto& [offset, bytes] : copies) {
        if (bytes == 0) continue;
        MAMBA_RETURN_IF_ERROR(Launched(
            cudaMemcpyAsync(host + offset, dev + offset, bytes, cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync(drawn tokens)", -1, kNumOps));
      }
    }
    // The rule-less rows' logits, one copy per run of consecutive rows.
    int64_t next = 0;
    for (int64_t i = 0; i < B;) {
      if (rules[static_cast<size_t>(i)]) {
        ++i;
        continue;
      }
      int64_t end = i + 1;
      while (end < B && !rules[static_cast<size_t>(end)]) ++end;
      MAMBA_RETURN_IF_ERROR(Launched(
          cudaMemcpyAsync(logits_host_.as<float>() + next * V, logits_.as<float>() + i * V,
                          static_cast<size_t>((end - i) * V) * 4, cudaMemcpyDeviceToHost, stream_),
          "cudaMemcpyAsync(logits)", -1, kNumOps));
      next += end - i;
      i = end;
    }
    return absl::OkStatus();
  };
  MAMBA_RETURN_IF_ERROR(DecodeStep(slots, tokens, tail));
  if (host_rows > 0) {
    std::memcpy(logits->data.data(), logits_host_.get(), static_cast<size_t>(host_rows * V) * 4);
  }
  const auto* tok = reinterpret_cast<const int32_t*>(host + at.token);
  const auto* lp = reinterpret_cast<const float*>(host + at.logprob);
  const auto* ids = reinterpret_cast<const int32_t*>(host + at.top_ids);
  const auto* tlp = reinterpret_cast<const float*>(host + at.top_logprobs);
  int64_t k = 0;
  for (size_t i = 0; i < rules.size(); ++i) {
    if (!rules[i]) continue;
    SampledToken& s = (*drawn)[i];
    s.id = tok[k];
    if (rules[i]->logprobs) s.logprob = lp[k];
    for (int32_t n = 0; n < rules[i]->top_logprobs; ++n) {
      const int64_t j = k * top_stride + n;
      if (ids[j] >= 0) s.top.push_back(TokenLogprob{ids[j], tlp[j]});
    }
    ++k;
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, double>> CudaBackend::OpSeconds() const {
  static constexpr const char* kNames[kNumOps] = {"embed",    "norm",    "in_proj", "conv",
                                                  "x_proj",   "dt_proj", "scan",    "gated_norm",
                                                  "out_proj", "head",    "lora"};
  std::vector<std::pair<std::string, double>> out;
  for (int i = 0; i < kNumOps; ++i)
    out.emplace_back(kNames[i], op_seconds_[static_cast<size_t>(i)]);
  return out;
}

}  // namespace mamba::engine::cuda
