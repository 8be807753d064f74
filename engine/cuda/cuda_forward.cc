// CudaBackend's passes: Prefill packs chunks into passes of at most max_step_tokens tokens (as
// the CPU engine does) and runs each through the model; Decode runs one token per slot with the
// decode kernels, replayed from a CUDA graph captured for the batch's bucket.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/backend_internal.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_lora.h"
#include "engine/logging.h"
#include "engine/status_macros.h"
#include "kernels/cuda/causal_conv.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/int8_gemm.h"
#include "kernels/cuda/packed_chunks.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/selective_scan.h"
#include "spdlog/spdlog.h"

namespace mamba::engine::cuda {
namespace {

using kernels::DType;
using kernels::SeqChunk;
namespace kc = kernels::cuda;

static_assert(sizeof(kc::ChunkDesc) == sizeof(SeqChunk) &&
                  offsetof(kc::ChunkDesc, begin) == offsetof(SeqChunk, begin) &&
                  offsetof(kc::ChunkDesc, length) == offsetof(SeqChunk, length) &&
                  offsetof(kc::ChunkDesc, slot) == offsetof(SeqChunk, slot),
              "ChunkDesc mirrors SeqChunk");

}  // namespace

absl::Status CudaBackend::Gemm(const DeviceMatrix& w, const void* x, int64_t ldx, float* y,
                               int64_t ldy, int64_t rows, const char* name, int64_t layer, Op op) {
  absl::Status s;
  if (w.dtype == DType::kI8) {
    kc::Int8GemmArgs a;
    a.x = x;
    a.ldx = ldx;
    a.x_dtype = w.x_dtype;
    a.q = static_cast<const int8_t*>(w.data);
    a.scales = w.scales;
    a.group_size = w.group_size;
    a.n = w.n;
    a.k = w.k;
    a.y = y;
    a.ldy = ldy;
    a.m = rows;
    a.workspace = int8_workspace_.get();
    a.workspace_bytes = int8_workspace_.bytes();
    s = kc::Int8Gemm(a, *gemm_, stream_);
  } else {
    s = gemm_->Run({x, ldx, w.data, w.dtype, w.n, w.k, y, ldy, rows, false});
  }
  if (!s.ok()) {
    return Fail(absl::InternalError(
        absl::StrCat(name, layer >= 0 ? absl::StrCat(" (layer ", layer, ")") : std::string(), ": ",
                     s.message())));
  }
  return Launched(0, name, layer, op);
}

// ---- Prefill ----

absl::Status CudaBackend::Prefill(std::span<const ChunkInput> chunks, Logits* logits) {
  MAMBA_RETURN_IF_ERROR(ValidateChunks(chunks, num_slots_, config().vocab_size));
  MAMBA_RETURN_IF_ERROR(CheckAdapters(chunks));
  MAMBA_RETURN_IF_ERROR(Ready());
  int64_t rows = 0;
  for (const ChunkInput& c : chunks) rows += c.logit_rows();
  logits->Resize(rows, config().vocab_size);
  // Slots are distinct within a call, so new sequences can all be zeroed up front.
  for (const ChunkInput& c : chunks) {
    if (c.start) MAMBA_RETURN_IF_ERROR(ZeroSlotAsync(c.slot.value));
  }
  // ForEachPass caps a pass's logit rows at max_logit_rows_ (all-logits chunks are split).
  return ForEachPass(
      chunks, max_tokens_, [&](const Pass& pass) { return RunPrefillPass(pass, logits); },
      max_logit_rows_);
}

absl::Status CudaBackend::RunPrefillPass(const Pass& pass, Logits* logits) {
  const std::span<const SeqChunk> chunks = pass.chunks;
  const std::span<const TokenId> tokens = pass.tokens;
  const std::span<const int32_t> logit_rows = pass.logit_rows;
  const int64_t first_row = pass.first_row;
  const auto T = static_cast<int64_t>(tokens.size());
  const auto C = static_cast<int64_t>(chunks.size());
  const auto R = static_cast<int64_t>(logit_rows.size());
  if (T > max_tokens_ || C > max_tokens_ || R > max_logit_rows_) {
    return absl::InternalError(absl::StrCat("prefill pass of ", T, " tokens, ", C, " chunks and ",
                                            R, " logit rows exceeds the scratch"));
  }
  auto* stage = staging_.as<std::byte>();
  std::memcpy(stage + stage_tokens_, tokens.data(), static_cast<size_t>(T) * 4);
  auto* table = reinterpret_cast<kc::ChunkDesc*>(stage + stage_chunks_);
  for (int64_t i = 0; i < C; ++i) {
    const SeqChunk& ch = chunks[static_cast<size_t>(i)];
    table[i] = kc::ChunkDesc{ch.begin, ch.length, ch.slot};
  }
  auto* rows = reinterpret_cast<int32_t*>(stage + stage_rows_);
  std::copy(logit_rows.begin(), logit_rows.end(), rows);
  const struct {
    void* dst;
    size_t at, bytes;
  } uploads[] = {{tokens_dev_.get(), stage_tokens_, static_cast<size_t>(T) * 4},
                 {chunks_dev_.get(), stage_chunks_, static_cast<size_t>(C) * sizeof(kc::ChunkDesc)},
                 {rows_dev_.get(), stage_rows_, static_cast<size_t>(R) * 4}};
  for (const auto& u : uploads) {
    if (u.bytes == 0) continue;
    MAMBA_RETURN_IF_ERROR(
        Launched(cudaMemcpyAsync(u.dst, stage + u.at, u.bytes, cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync(pass inputs)", -1, kNumOps));
  }
  lora_modules_.clear();  // CheckAdapters made sure they are this engine's
  for (const AdapterWeights* a : pass.adapters) {
    lora_modules_.push_back(a ? static_cast<const CudaAdapterWeights*>(a)->modules() : nullptr);
  }
  lora_plan_->Build(chunks, lora_modules_, logit_rows, config().num_hidden_layers);
  MAMBA_RETURN_IF_ERROR(UploadLoraPlan());
  MAMBA_RETURN_IF_ERROR(EnqueueForward(PassShape{
      T, false, static_cast<int>(C), R, lora_plan_->empty() ? nullptr : lora_plan_.get()}));
  if (R > 0) {
    const int64_t V = config().vocab_size;
    MAMBA_RETURN_IF_ERROR(
        Launched(cudaMemcpyAsync(logits->data.data() + first_row * V, logits_.get(),
                                 static_cast<size_t>(R * V) * 4, cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync(logits)", -1, kNumOps));
  }
  return Sync(absl::StrCat("prefill pass of ", T, " tokens in ", C, " chunks"));
}

// ---- Decode ----

absl::Status CudaBackend::CheckDecode(std::span<const SlotId> slots,
                                      std::span<const TokenId> tokens,
                                      std::vector<ChunkInput>* chunks) {
  if (slots.size() != tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Decode: ", slots.size(), " slots but ", tokens.size(), " tokens"));
  }
  chunks->resize(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    (*chunks)[i] = ChunkInput{slots[i], tokens.subspan(i, 1), false, true};
  }
  MAMBA_RETURN_IF_ERROR(ValidateChunks(*chunks, num_slots_, config().vocab_size));
  return Ready();
}

absl::Status CudaBackend::Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                                 Logits* logits) {
  std::vector<ChunkInput> chunks;
  MAMBA_RETURN_IF_ERROR(CheckDecode(slots, tokens, &chunks));
  const auto B = static_cast<int64_t>(slots.size());
  const int64_t V = config().vocab_size;
  if (B == 0) {
    logits->Resize(0, V);
    return absl::OkStatus();
  }
  // More rows than the scratch holds: the prefill path splits it into passes.
  if (B > max_tokens_ || B > max_logit_rows_) return Prefill(chunks, logits);
  return DecodeStep(slots, tokens, [&] {
    logits->Resize(B, V);
    return Launched(
        cudaMemcpyAsync(logits->data.data(), logits_.get(), static_cast<size_t>(B * V) * 4,
                        cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync(logits)", -1, kNumOps);
  });
}

absl::Status CudaBackend::DecodeStep(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                                     const std::function<absl::Status()>& tail) {
  const auto B = static_cast<int64_t>(slots.size());
  int bucket = -1;
  if (graphs_enabled_) {
    for (size_t i = 0; i < buckets_.size(); ++i) {
      if (buckets_[i] >= B) {
        bucket = static_cast<int>(i);
        break;
      }
    }
  }
  const int64_t T = bucket >= 0 ? buckets_[static_cast<size_t>(bucket)] : B;
  // Padding rows: token 0 of slot -1 (zero state, never written); their logits are dropped.
  auto* stage = staging_.as<std::byte>();
  auto* tok = reinterpret_cast<int32_t*>(stage + stage_tokens_);
  auto* sl = reinterpret_cast<int32_t*>(stage + stage_slots_);
  for (int64_t i = 0; i < T; ++i) {
    tok[i] = i < B ? tokens[static_cast<size_t>(i)] : 0;
    sl[i] = i < B ? slots[static_cast<size_t>(i)].value : -1;
  }
  MAMBA_RETURN_IF_ERROR(Launched(cudaMemcpyAsync(tokens_dev_.get(), tok, static_cast<size_t>(T) * 4,
                                                 cudaMemcpyHostToDevice, stream_),
                                 "cudaMemcpyAsync(decode tokens)", -1, kNumOps));
  MAMBA_RETURN_IF_ERROR(Launched(cudaMemcpyAsync(slots_dev_.get(), sl, static_cast<size_t>(T) * 4,
                                                 cudaMemcpyHostToDevice, stream_),
                                 "cudaMemcpyAsync(decode slots)", -1, kNumOps));
  cudaGraphExec_t graph = bucket >= 0 ? graphs_[static_cast<size_t>(bucket)] : nullptr;
  if (graph != nullptr) {
    MAMBA_RETURN_IF_ERROR(Launched(cudaGraphLaunch(graph, stream_),
                                   absl::StrCat("cudaGraphLaunch (decode batch ", T, ")").c_str(),
                                   -1, kNumOps));
  } else {
    MAMBA_RETURN_IF_ERROR(EnqueueForward(PassShape{T, true, 0, T}));
  }
  MAMBA_RETURN_IF_ERROR(tail());
  MAMBA_RETURN_IF_ERROR(Sync(absl::StrCat("decode step of batch ", B)));
  // The first step of a bucket ran eagerly (loading kernels, choosing cuBLAS algorithms);
  // capture its graph for the next ones.
  if (bucket >= 0 && graph == nullptr) CaptureGraph(static_cast<size_t>(bucket));
  return absl::OkStatus();
}

void CudaBackend::CaptureGraph(size_t bucket) {
  const int64_t T = buckets_[bucket];
  auto give_up = [&](const std::string& why) {
    cudaGetLastError();
    graphs_enabled_ = false;
    engine::NamedLogger("cuda")->warn(
        "cuda:{}: capturing the decode graph for batch {} failed ({}); decode steps run "
        "without CUDA graphs",
        device_, T, why);
  };
  if (const cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
      e != cudaSuccess) {
    return give_up(cudaGetErrorString(e));
  }
  capturing_ = true;
  const absl::Status s = EnqueueForward(PassShape{T, true, 0, T});
  cudaGraph_t g = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &g);
  capturing_ = false;
  cudaGraphExec_t exec = nullptr;
  cudaError_t inst = cudaErrorUnknown;
  if (s.ok() && end == cudaSuccess && g != nullptr) inst = cudaGraphInstantiate(&exec, g, 0);
  if (g != nullptr) cudaGraphDestroy(g);
  if (!s.ok()) return give_up(std::string(s.message()));
  if (end != cudaSuccess) return give_up(cudaGetErrorString(end));
  if (inst != cudaSuccess) return give_up(cudaGetErrorString(inst));
  graphs_[bucket] = exec;
  engine::NamedLogger("cuda")->debug("cuda:{}: captured the decode graph for batch {}", device_, T);
}

// ---- The model ----

absl::Status CudaBackend::EnqueueForward(const PassShape& p) {
  const ModelConfig& c = config();
  if (options_.profile) {
    MAMBA_RETURN_IF_ERROR(Sync("profiling"));
    profile_mark_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  kc::EmbeddingArgs emb;
  emb.tokens = tokens_dev_.as<int32_t>();
  emb.table = weights_->embedding;
  emb.dtype = weights_->embedding_dtype;
  emb.vocab = c.vocab_size;
  emb.dim = c.hidden_size;
  emb.out = residual_.as<float>();
  emb.out_stride = c.hidden_size;
  emb.rows = p.tokens;
  MAMBA_RETURN_IF_ERROR(Launched(kc::Embedding(emb, stream_), "embedding", -1, kEmbed));
  MAMBA_RETURN_IF_ERROR(ApplyEmbeddingLora(p));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) MAMBA_RETURN_IF_ERROR(EnqueueLayer(l, p));
  return EnqueueHead(p);
}

absl::Status CudaBackend::EnqueueLayer(int64_t l, const PassShape& p) {
  const ModelConfig& c = config();
  if (c.is_mamba2()) return EnqueueMamba2Layer(l, p);
  const CudaLayerWeights& w = weights_->layers[static_cast<size_t>(l)];
  const int64_t T = p.tokens, d = c.hidden_size, e = c.intermediate_size, n = c.state_size,
                r = c.time_step_rank, dbc_width = r + 2 * n;
  const DType wt = weights_->compute;
  const bool lowp = wt != DType::kF32;

  // The previous layer's out_proj output joins the residual stream here, fused with the norm.
  kc::AddRmsNormArgs norm;
  norm.residual = residual_.as<float>();
  norm.residual_stride = d;
  if (l > 0) {
    norm.delta = delta_.as<float>();
    norm.delta_stride = d;
    norm.delta_bias = weights_->layers[static_cast<size_t>(l - 1)].out_proj_bias;
  }
  norm.weight = w.norm;
  norm.out = normed_.get();
  norm.out_dtype = wt;
  norm.out_stride = d;
  norm.rows = T;
  norm.dim = d;
  norm.eps = c.layer_norm_epsilon;
  MAMBA_RETURN_IF_ERROR(Launched(kc::AddRmsNorm(norm, stream_), "add_rms_norm", l, kNorm));

  MAMBA_RETURN_IF_ERROR(
      Gemm(w.in_proj, normed_.get(), d, xz_.as<float>(), 2 * e, T, "in_proj", l, kInProj));
  MAMBA_RETURN_IF_ERROR(ApplyLora(p, LoraLayerSite(l, LoraTarget::kInProj), normed_.get(), wt, d, d,
                                  xz_.as<float>(), 2 * e, 2 * e, "in_proj LoRA", l));

  kc::CausalConvArgs cv;
  cv.x = xz_.as<float>();
  cv.x_stride = 2 * e;
  cv.x_bias = w.in_proj_bias;  // its first d_inner entries belong to x
  cv.weight = w.conv;
  cv.bias = w.conv_bias;
  cv.state = conv_state_.as<float>() + l * conv_layer_floats_;
  cv.state_slot_stride = conv_slot_floats_;
  cv.out = xc_.as<float>();
  cv.out_stride = e;
  cv.out_lowp = lowp ? xc_lowp_.get() : nullptr;
  cv.out_lowp_dtype = wt;
  cv.out_lowp_stride = e;
  cv.dim = e;
  cv.width = static_cast<int>(c.conv_kernel);
  cv.tokens = T;
  if (p.decode) {
    cv.slots = slots_dev_.as<int32_t>();
    MAMBA_RETURN_IF_ERROR(
        Launched(kc::CausalConvDecode(cv, stream_), "causal_conv_decode", l, kConv));
  } else {
    cv.chunks = chunks_dev_.as<kc::ChunkDesc>();
    cv.num_chunks = p.num_chunks;
    MAMBA_RETURN_IF_ERROR(Launched(kc::CausalConv(cv, stream_), "causal_conv", l, kConv));
  }

  MAMBA_RETURN_IF_ERROR(Gemm(w.x_proj, lowp ? xc_lowp_.get() : xc_.get(), e, dbc_.as<float>(),
                             dbc_width, T, "x_proj", l, kXProj));
  // Before FalconMamba's mixer norms: the LoRA changes x_proj's output, which they normalise.
  MAMBA_RETURN_IF_ERROR(ApplyLora(p, LoraLayerSite(l, LoraTarget::kXProj),
                                  lowp ? xc_lowp_.get() : xc_.get(), lowp ? wt : DType::kF32, e, e,
                                  dbc_.as<float>(), dbc_width, dbc_width, "x_proj LoRA", l));
  if (c.mixer_rms_norm()) {  // FalconMamba: dt, B and C each RMS-normalised in place
    for (auto [at, len] : {std::pair{int64_t{0}, r}, {r, n}, {r + n, n}}) {
      kc::AddRmsNormArgs mn;
      mn.residual = dbc_.as<float>() + at;  // no delta: read, normalised, written back
      mn.residual_stride = dbc_width;
      mn.weight = weights_->mixer_norm_ones;
      mn.out = dbc_.as<float>() + at;
      mn.out_dtype = DType::kF32;
      mn.out_stride = dbc_width;
      mn.rows = T;
      mn.dim = len;
      mn.eps = c.mixer_rms_eps;
      MAMBA_RETURN_IF_ERROR(Launched(kc::AddRmsNorm(mn, stream_), "mixer_rms_norm", l, kXProj));
    }
  }
  MAMBA_RETURN_IF_ERROR(
      Gemm(w.dt_proj, dbc_.get(), dbc_width, dt_.as<float>(), e, T, "dt_proj", l, kDtProj));
  // The linear output: the scan adds dt_proj's bias and applies softplus after.
  MAMBA_RETURN_IF_ERROR(ApplyLora(p, LoraLayerSite(l, LoraTarget::kDtProj), dbc_.get(), DType::kF32,
                                  dbc_width, r, dt_.as<float>(), e, e, "dt_proj LoRA", l));

  kc::SelectiveScanArgs sc;
  sc.x = xc_.as<float>();
  sc.x_stride = e;
  sc.dt = dt_.as<float>();
  sc.dt_stride = e;
  sc.dt_bias = w.dt_bias;
  sc.a = w.a;
  sc.b = dbc_.as<float>() + r;
  sc.c = dbc_.as<float>() + r + n;
  sc.bc_stride = dbc_width;
  sc.d_skip = w.d;
  sc.z = xz_.as<float>() + e;
  sc.z_stride = 2 * e;
  sc.z_bias = w.in_proj_bias ? w.in_proj_bias + e : nullptr;
  sc.state = ssm_state_.as<float>() + l * ssm_layer_floats_;
  sc.state_slot_stride = ssm_slot_floats_;
  sc.out = y_.get();
  sc.out_dtype = wt;
  sc.out_stride = e;
  sc.dim = e;
  sc.d_state = n;
  sc.tokens = T;
  if (p.decode) {
    sc.slots = slots_dev_.as<int32_t>();
    MAMBA_RETURN_IF_ERROR(
        Launched(kc::SelectiveScanDecode(sc, stream_), "selective_scan_decode", l, kScan));
  } else {
    sc.chunks = chunks_dev_.as<kc::ChunkDesc>();
    sc.num_chunks = p.num_chunks;
    MAMBA_RETURN_IF_ERROR(Launched(kc::SelectiveScan(sc, stream_), "selective_scan", l, kScan));
  }

  // out_proj writes delta_; the next norm (or the final one) adds it to the residual.
  MAMBA_RETURN_IF_ERROR(
      Gemm(w.out_proj, y_.get(), e, delta_.as<float>(), d, T, "out_proj", l, kOutProj));
  return ApplyLora(p, LoraLayerSite(l, LoraTarget::kOutProj), y_.get(), wt, e, e,
                   delta_.as<float>(), d, d, "out_proj LoRA", l);
}

absl::Status CudaBackend::EnqueueHead(const PassShape& p) {
  const ModelConfig& c = config();
  const int64_t R = p.logit_rows, d = c.hidden_size;
  if (R == 0) return absl::OkStatus();
  kc::AddRmsNormArgs fn;
  fn.residual = residual_.as<float>();
  fn.residual_stride = d;
  if (c.num_hidden_layers > 0) {
    fn.delta = delta_.as<float>();
    fn.delta_stride = d;
    fn.delta_bias = weights_->layers.back().out_proj_bias;
  }
  fn.weight = weights_->norm_f;
  fn.out = head_in_.get();
  fn.out_dtype = weights_->compute;
  fn.out_stride = d;
  fn.rows_index = p.decode ? nullptr : rows_dev_.as<int32_t>();
  fn.rows = R;
  fn.dim = d;
  fn.eps = c.layer_norm_epsilon;
  MAMBA_RETURN_IF_ERROR(Launched(kc::AddRmsNorm(fn, stream_), "final_norm", -1, kHead));
  MAMBA_RETURN_IF_ERROR(Gemm(weights_->lm_head, head_in_.get(), d, logits_.as<float>(),
                             c.vocab_size, R, "lm_head", -1, kHead));
  // Over the logit rows (the head's input is compacted to them; the plan's head site indexes
  // them). Only an lm_head LoRA changes the head, an embeddings one never does.
  return ApplyLora(p, LoraHeadSite(c.num_hidden_layers), head_in_.get(), weights_->compute, d, d,
                   logits_.as<float>(), c.vocab_size, c.vocab_size, "lm_head LoRA", -1);
}

}  // namespace mamba::engine::cuda
