#include "engine/cpu/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/backend_internal.h"
#include "engine/logging.h"
#include "engine/status_macros.h"
#include "kernels/cpu/causal_conv.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/mamba2_scan.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/selective_scan.h"
#include "kernels/cpu/threading.h"
#include "spdlog/spdlog.h"

namespace mamba::engine::cpu {
namespace {

using kernels::DType;
using kernels::SeqChunk;
namespace kc = kernels::cpu;

// Times a scope into a slot of op_seconds_ when profiling.
class OpTimer {
 public:
  OpTimer(bool on, double* slot) : slot_(on ? slot : nullptr) {
    if (slot_) start_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (slot_)
      *slot_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  double* slot_;
  std::chrono::steady_clock::time_point start_;
};

absl::StatusOr<DType> ResolveDType(const Checkpoint& ckpt, ComputeDType want) {
  DType stored = ckpt.weight_dtype();
  DType dtype = want == ComputeDType::kFloat32    ? DType::kF32
                : want == ComputeDType::kBFloat16 ? DType::kBF16
                : want == ComputeDType::kFloat16  ? DType::kF16
                : want == ComputeDType::kInt8     ? DType::kI8
                                                  : stored;
  if (dtype == DType::kI8) {
    if (kc::Int8AutoPath() == kc::Int8Path::kScalar) {
      NamedLogger("engine")->warn(
          "cpu: this CPU has neither AVX-512 VNNI, AVX-VNNI nor AVX2; int8 weights use the "
          "portable scalar kernel (slow)");
    }
    return dtype;
  }
  std::string impl;
  if (dtype != DType::kF32 && !kc::PackedGemmSupported(dtype) &&
      !kc::GemmHasFastPath(dtype, &impl)) {
    if (want == ComputeDType::kFloat16) {
      return absl::FailedPreconditionError(
          absl::StrCat("float16 compute is not supported on this CPU (oneDNN offers only ", impl,
                       "); use --dtype float32 or bfloat16"));
    }
    NamedLogger("engine")->warn(
        "cpu: this CPU has no fast {} matmul (oneDNN: {}); computing in float32",
        kernels::Name(dtype), impl);
    dtype = DType::kF32;
  }
  return dtype;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(
    std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options) {
  if (options.num_slots < 0) {
    return absl::InvalidArgumentError("num_slots must be >= 0 (0 = automatic)");
  }
  if (options.max_step_tokens < 1)
    return absl::InvalidArgumentError("max_step_tokens must be >= 1");
  BackendOptions resolved = options;
  const int64_t per_slot = checkpoint->config().StateBytesPerSequence();
  if (resolved.num_slots == 0) {
    resolved.num_slots = kDefaultCpuSlots;
    if (options.memory_bytes > 0) {
      resolved.num_slots = static_cast<int>(
          std::clamp<int64_t>(options.memory_bytes / 4 / per_slot, 1, kDefaultCpuSlots));
    }
  } else if (options.memory_bytes > 0 && resolved.num_slots * per_slot > options.memory_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(resolved.num_slots, " state slots of ", per_slot >> 20, " MiB each (",
                     resolved.num_slots * per_slot >> 20, " MiB) exceed the ",
                     options.memory_bytes >> 20, " MiB this process may use: lower --slots"));
  }
  kc::SetNumThreads(resolved.num_threads);
  MAMBA_ASSIGN_OR_RETURN(DType dtype, ResolveDType(*checkpoint, resolved.dtype));
  // Weights are packed with OpenMP. libgomp keeps a thread pool per thread that opens a parallel
  // region, and once it manages more threads than there are cores it stops spinning between
  // regions and sleeps on a futex instead: a pool left behind in the loading thread made every
  // decode step of the engine's own pool slower (served tokens/s -15 % at 32 streams, measured).
  // So pack in a thread of its own, whose pool ends with it.
  absl::StatusOr<std::unique_ptr<CpuWeights>> weights = absl::UnknownError("not run");
  std::thread([&] {
    weights = PrepareCpuWeights(*checkpoint, dtype, resolved.int8_group_size);
  }).join();
  if (!weights.ok()) return weights.status();
  return std::unique_ptr<CpuBackend>(
      new CpuBackend(std::move(checkpoint), resolved, *std::move(weights)));
}

CpuBackend::CpuBackend(std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options,
                       std::unique_ptr<CpuWeights> weights)
    : checkpoint_(std::move(checkpoint)), options_(options), weights_(std::move(weights)) {
  const ModelConfig& c = config();
  const int64_t e = c.intermediate_size, L = c.num_hidden_layers, S = options_.num_slots;
  conv_slot_floats_ = (c.conv_kernel - 1) * c.conv_dim();
  ssm_slot_floats_ = c.ssm_state_floats();
  conv_state_.assign(static_cast<size_t>(L * S * conv_slot_floats_), 0.0f);
  ssm_state_.assign(static_cast<size_t>(L * S * ssm_slot_floats_), 0.0f);
  const auto T = static_cast<size_t>(options_.max_step_tokens);
  residual_.resize(T * c.hidden_size);
  normed_.resize(T * c.hidden_size);
  xz_.resize(T * c.in_proj_size());
  xc_.resize(T * std::max(c.conv_dim(), c.hidden_size));  // also the LM head's gather
  if (!c.is_mamba2()) {
    dbc_.resize(T * (c.time_step_rank + 2 * c.state_size));
    dt_.resize(T * e);
  }
  y_.resize(T * (c.mlp_size + e));
}

namespace {

// The GEMM the weights go through, for Describe().
std::string GemmName(const CpuWeights& w) {
  if (w.compute != DType::kI8) return w.packed ? "AVX-512 packed GEMM" : "oneDNN GEMM";
  const kc::Int8Weight& m = w.layers.front().in_proj.int8;
  return absl::StrCat("int8 GEMM ", kc::Int8PathName(kc::Int8AutoPath()),
                      m.groups == 1 ? ", a scale per row"
                                    : absl::StrCat(", a scale per ", m.group_size, " inputs"));
}

}  // namespace

std::string CpuBackend::Describe() const {
  return absl::StrCat("cpu: ", kernels::Name(weights_->compute), " weights (", GemmName(*weights_),
                      "), ", kc::NumThreads(), " threads, ", options_.num_slots, " state slots");
}

namespace {

// The "model name" line of /proc/cpuinfo (empty where there is none).
std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    const size_t begin = line.find_first_not_of(" \t", colon + 1);
    return begin == std::string::npos ? std::string() : line.substr(begin);
  }
  return {};
}

}  // namespace

BackendInfo CpuBackend::info() const {
  BackendInfo i;
  i.device = "cpu";
  i.device_name = CpuModelName();
  i.dtype = weights_->compute;
  i.slots = options_.num_slots;
  i.threads = kc::NumThreads();
  i.description = Describe();
  i.model_fingerprint = checkpoint_->fingerprint();
  return i;
}

absl::Status CpuBackend::CheckSlot(SlotId slot) const {
  if (slot.value < 0 || slot.value >= options_.num_slots) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot.value, " out of range [0, ", options_.num_slots, ")"));
  }
  return absl::OkStatus();
}

void CpuBackend::ZeroSlot(int32_t slot) {
  const int64_t S = options_.num_slots;
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    std::fill_n(conv_state_.begin() + (l * S + slot) * conv_slot_floats_, conv_slot_floats_, 0.0f);
    std::fill_n(ssm_state_.begin() + (l * S + slot) * ssm_slot_floats_, ssm_slot_floats_, 0.0f);
  }
}

absl::Status CpuBackend::ResetSlot(SlotId slot) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(slot));
  ZeroSlot(slot.value);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopySlot(SlotId from, SlotId to) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(from));
  MAMBA_RETURN_IF_ERROR(CheckSlot(to));
  if (from == to) return absl::OkStatus();
  const int64_t S = options_.num_slots;
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    std::copy_n(conv_state_.begin() + (l * S + from.value) * conv_slot_floats_, conv_slot_floats_,
                conv_state_.begin() + (l * S + to.value) * conv_slot_floats_);
    std::copy_n(ssm_state_.begin() + (l * S + from.value) * ssm_slot_floats_, ssm_slot_floats_,
                ssm_state_.begin() + (l * S + to.value) * ssm_slot_floats_);
  }
  return absl::OkStatus();
}

// Per layer: the conv state [d_conv-1, d_inner], then the SSM state [d_state, d_inner].
int64_t CpuBackend::state_floats() const {
  return config().num_hidden_layers * (conv_slot_floats_ + ssm_slot_floats_);
}

absl::Status CpuBackend::SaveSlot(SlotId slot, std::vector<float>* state) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(slot));
  state->resize(static_cast<size_t>(state_floats()));
  const int64_t S = options_.num_slots;
  float* out = state->data();
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    out = std::copy_n(conv_state_.begin() + (l * S + slot.value) * conv_slot_floats_,
                      conv_slot_floats_, out);
    out = std::copy_n(ssm_state_.begin() + (l * S + slot.value) * ssm_slot_floats_,
                      ssm_slot_floats_, out);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RestoreSlot(SlotId slot, std::span<const float> state) {
  MAMBA_RETURN_IF_ERROR(CheckSlot(slot));
  if (static_cast<int64_t>(state.size()) != state_floats()) {
    return absl::InvalidArgumentError(absl::StrCat("RestoreSlot: a state of ", state.size(),
                                                   " floats; this model's has ", state_floats()));
  }
  const int64_t S = options_.num_slots;
  const float* in = state.data();
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    std::copy_n(in, conv_slot_floats_,
                conv_state_.begin() + (l * S + slot.value) * conv_slot_floats_);
    in += conv_slot_floats_;
    std::copy_n(in, ssm_slot_floats_, ssm_state_.begin() + (l * S + slot.value) * ssm_slot_floats_);
    in += ssm_slot_floats_;
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                                Logits* logits) {
  if (slots.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Decode: ", slots.size(), " slots but ", tokens.size(), " tokens"));
  }
  std::vector<ChunkInput> chunks(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    chunks[i] = ChunkInput{slots[i], tokens.subspan(i, 1), false, true};
  }
  return Prefill(chunks, logits);
}

absl::Status CpuBackend::Prefill(std::span<const ChunkInput> chunks, Logits* logits) {
  MAMBA_RETURN_IF_ERROR(ValidateChunks(chunks, options_.num_slots, config().vocab_size));
  int64_t rows = 0;
  for (const ChunkInput& c : chunks) rows += c.logit_rows();
  logits->Resize(rows, config().vocab_size);
  for (const ChunkInput& c : chunks) {
    if (c.start) ZeroSlot(c.slot.value);  // slots are distinct, so zeroing up front is safe
  }
  return ForEachPass(chunks, options_.max_step_tokens, [&](const Pass& pass) {
    return Forward(pass.chunks, pass.adapters, pass.tokens, pass.logit_rows, logits,
                   pass.first_row);
  });
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> CpuBackend::LoadAdapter(
    const LoraAdapter& adapter) {
  return CpuAdapterWeights::Make(adapter, config());
}

absl::Status CpuBackend::Forward(std::span<const SeqChunk> chunks,
                                 std::span<const AdapterWeights* const> adapters,
                                 std::span<const TokenId> tokens,
                                 std::span<const int32_t> logit_rows, Logits* logits,
                                 int64_t first_row) {
  const ModelConfig& c = config();
  const int64_t T = static_cast<int64_t>(tokens.size()), d = c.hidden_size;
  MAMBA_RETURN_IF_ERROR(lora_.Build(chunks, adapters));
  {
    OpTimer timer(options_.profile, &op_seconds_[kEmbed]);
    const TensorInfo& emb = *weights_->embedding;
    const size_t row_bytes = static_cast<size_t>(d) * kernels::SizeOf(emb.dtype);
    for (int64_t t = 0; t < T; ++t) {
      kernels::ConvertToF32(emb.data + tokens[t] * row_bytes, emb.dtype, residual_.data() + t * d,
                            d);
    }
  }
  if (!lora_.empty()) {
    OpTimer timer(options_.profile, &op_seconds_[kLora]);
    lora_.ApplyEmbeddings(tokens, residual_.data(), d);
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) MAMBA_RETURN_IF_ERROR(RunLayer(l, chunks, T));
  if (logit_rows.empty()) return absl::OkStatus();
  OpTimer timer(options_.profile, &op_seconds_[kHead]);
  // Only the rows asked for pass the final norm and the LM head (gathered into xc_, which holds
  // at least T x d floats).
  const auto R = static_cast<int64_t>(logit_rows.size());
  for (int64_t i = 0; i < R; ++i) {
    std::memcpy(xc_.data() + i * d, residual_.data() + int64_t{logit_rows[i]} * d,
                static_cast<size_t>(d) * 4);
  }
  kc::RmsNorm(
      {xc_.data(), d, weights_->norm_f.data(), normed_.data(), d, R, d, c.layer_norm_epsilon});
  float* out = logits->data.data() + first_row * c.vocab_size;
  MAMBA_RETURN_IF_ERROR(
      weights_->lm_head.MatMul(normed_.data(), d, nullptr, out, c.vocab_size, R, false));
  if (!lora_.empty()) {
    lora_.BuildHead(logit_rows, T);
    lora_.ApplyHead(normed_.data(), d, out, c.vocab_size);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RunLayer(int64_t l, std::span<const SeqChunk> chunks, int64_t T) {
  const ModelConfig& c = config();
  const CpuLayerWeights& w = weights_->layers[static_cast<size_t>(l)];
  const int64_t d = c.hidden_size, e = c.intermediate_size, n = c.state_size, r = c.time_step_rank,
                S = options_.num_slots;
  const int64_t dbc_width = r + 2 * n;
  const bool prof = options_.profile;
  auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
  {
    OpTimer timer(prof, &op_seconds_[kNorm]);
    kc::RmsNorm(
        {residual_.data(), d, w.norm.data(), normed_.data(), d, T, d, c.layer_norm_epsilon});
  }
  {
    OpTimer timer(prof, &op_seconds_[kInProj]);
    MAMBA_RETURN_IF_ERROR(w.in_proj.MatMul(normed_.data(), d, bias(w.in_proj_bias), xz_.data(),
                                           c.in_proj_size(), T, false));
  }
  Lora(l, LoraTarget::kInProj, normed_.data(), d, xz_.data(), c.in_proj_size());
  if (c.is_mamba2()) return RunMamba2Mixer(l, chunks, T);
  {
    OpTimer timer(prof, &op_seconds_[kConv]);
    kc::CausalConv({xz_.data(), 2 * e, w.conv.data(), bias(w.conv_bias),
                    conv_state_.data() + l * S * conv_slot_floats_, xc_.data(), e, e,
                    static_cast<int>(c.conv_kernel), chunks});
  }
  {
    OpTimer timer(prof, &op_seconds_[kXProj]);
    MAMBA_RETURN_IF_ERROR(
        w.x_proj.MatMul(xc_.data(), e, nullptr, dbc_.data(), dbc_width, T, false));
  }
  Lora(l, LoraTarget::kXProj, xc_.data(), e, dbc_.data(), dbc_width);  // before the mixer norms
  {
    OpTimer timer(prof, &op_seconds_[kXProj]);
    if (c.mixer_rms_norm()) {  // FalconMamba: dt, B and C each RMS-normalised in place
      const float* ones = weights_->mixer_norm_ones.data();
      for (auto [at, len] : {std::pair{int64_t{0}, r}, {r, n}, {r + n, n}}) {
        kc::RmsNorm({dbc_.data() + at, dbc_width, ones, dbc_.data() + at, dbc_width, T, len,
                     c.mixer_rms_eps});
      }
    }
  }
  {
    OpTimer timer(prof, &op_seconds_[kDtProj]);
    MAMBA_RETURN_IF_ERROR(
        w.dt_proj.MatMul(dbc_.data(), dbc_width, nullptr, dt_.data(), e, T, false));
  }
  Lora(l, LoraTarget::kDtProj, dbc_.data(), dbc_width, dt_.data(), e);
  {
    OpTimer timer(prof, &op_seconds_[kScan]);
    kc::SelectiveScan({xc_.data(), e, dt_.data(), e, w.dt_bias.data(), w.a.data(), dbc_.data() + r,
                       dbc_.data() + r + n, dbc_width, w.d.data(), xz_.data() + e, 2 * e,
                       ssm_state_.data() + l * S * ssm_slot_floats_, y_.data(), e, e, n, chunks});
  }
  {
    OpTimer timer(prof, &op_seconds_[kOutProj]);
    MAMBA_RETURN_IF_ERROR(
        w.out_proj.MatMul(y_.data(), e, bias(w.out_proj_bias), residual_.data(), d, T, true));
  }
  Lora(l, LoraTarget::kOutProj, y_.data(), e, residual_.data(), d);
  return absl::OkStatus();
}

absl::Status CpuBackend::RunMamba2Mixer(int64_t l, std::span<const SeqChunk> chunks, int64_t T) {
  const ModelConfig& c = config();
  const CpuLayerWeights& w = weights_->layers[static_cast<size_t>(l)];
  const int64_t d = c.hidden_size, e = c.intermediate_size, mlp = c.mlp_size, cd = c.conv_dim(),
                ip = c.in_proj_size(), gn = c.n_groups * c.state_size, yw = mlp + e,
                S = options_.num_slots;
  // in_proj's row: z0 | x0 (mlp each) | z (e) | x B C (cd) | dt (heads).
  float* const z = xz_.data() + 2 * mlp;
  float* const xbc = z + e;
  float* const dt = xbc + cd;
  const bool prof = options_.profile;
  auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
  {
    OpTimer timer(prof, &op_seconds_[kConv]);
    kc::CausalConv({xbc, ip, w.conv.data(), bias(w.conv_bias),
                    conv_state_.data() + l * S * conv_slot_floats_, xc_.data(), cd, cd,
                    static_cast<int>(c.conv_kernel), chunks});
  }
  {
    OpTimer timer(prof, &op_seconds_[kScan]);
    kc::Mamba2Scan({xc_.data(),
                    cd,
                    dt,
                    ip,
                    w.dt_bias.data(),
                    w.a.data(),
                    xc_.data() + e,
                    xc_.data() + e + gn,
                    cd,
                    w.d.data(),
                    z,
                    ip,
                    ssm_state_.data() + l * S * ssm_slot_floats_,
                    y_.data() + mlp,
                    yw,
                    c.num_heads,
                    c.head_dim,
                    c.state_size,
                    c.n_groups,
                    c.time_step_min_limit,
                    c.time_step_max_limit,
                    chunks});
  }
  {
    OpTimer timer(prof, &op_seconds_[kGatedNorm]);
    // RMSNormGated(norm_before_gate=False): the scan's y * silu(z) normalised per group of
    // d_inner / n_groups channels (mamba_ssm's and HF's group_size), in place.
    const int64_t gs = e / c.n_groups;
    for (int64_t g = 0; g < c.n_groups; ++g) {
      float* y = y_.data() + mlp + g * gs;
      kc::RmsNorm({y, yw, w.gated_norm.data() + g * gs, y, yw, T, gs, c.layer_norm_epsilon});
    }
    for (int64_t t = 0; t < T && mlp > 0; ++t) {  // mamba_ssm's d_ssm < d_inner: silu(z0) * x0
      const float* zx = xz_.data() + t * ip;
      for (int64_t i = 0; i < mlp; ++i) {
        y_[static_cast<size_t>(t * yw + i)] = zx[mlp + i] * (zx[i] / (1.0f + std::exp(-zx[i])));
      }
    }
  }
  {
    OpTimer timer(prof, &op_seconds_[kOutProj]);
    MAMBA_RETURN_IF_ERROR(
        w.out_proj.MatMul(y_.data(), yw, bias(w.out_proj_bias), residual_.data(), d, T, true));
  }
  Lora(l, LoraTarget::kOutProj, y_.data(), yw, residual_.data(), d);
  return absl::OkStatus();
}

void CpuBackend::Lora(int64_t l, LoraTarget t, const float* x, int64_t ldx, float* y, int64_t ldy) {
  if (lora_.empty()) return;
  OpTimer timer(options_.profile, &op_seconds_[kLora]);
  lora_.Apply(l, t, x, ldx, y, ldy);
}

std::vector<std::pair<std::string, double>> CpuBackend::OpSeconds() const {
  static constexpr const char* kNames[kNumOps] = {"embed",    "norm",    "in_proj", "conv",
                                                  "x_proj",   "dt_proj", "scan",    "gated_norm",
                                                  "out_proj", "head",    "lora"};
  std::vector<std::pair<std::string, double>> out;
  for (int i = 0; i < kNumOps; ++i)
    out.emplace_back(kNames[i], op_seconds_[static_cast<size_t>(i)]);
  return out;
}

}  // namespace mamba::engine::cpu
