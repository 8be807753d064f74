// CudaBackend's Mamba-2 layer (HF Mamba2Mixer; CPU twin: CpuBackend::RunMamba2Mixer). Prefill
// and decode differ only in the conv and scan launchers (chunk table or slot array), so decode
// steps are captured in graphs as Mamba-1's are.
#include "absl/strings/str_cat.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_lora.h"
#include "engine/status_macros.h"
#include "kernels/cuda/causal_conv.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/mamba2_scan.h"
#include "kernels/cuda/rms_norm.h"

namespace mamba::engine::cuda {
namespace {

using kernels::DType;
namespace kc = kernels::cuda;

}  // namespace

absl::Status CudaBackend::EnqueueMamba2Layer(int64_t l, const PassShape& p) {
  const ModelConfig& c = config();
  const CudaLayerWeights& w = weights_->layers[static_cast<size_t>(l)];
  const int64_t T = p.tokens, d = c.hidden_size, e = c.intermediate_size, mlp = c.mlp_size,
                cd = c.conv_dim(), ip = c.in_proj_size(), gn = c.n_groups * c.state_size,
                yw = mlp + e;
  const DType wt = weights_->compute;
  // in_proj's row: z0 | x0 (mlp each) | z (e) | x B C (cd) | dt (heads).
  float* const xz = xz_.as<float>();
  float* const z = xz + 2 * mlp;
  float* const xbc = z + e;
  float* const dt = xbc + cd;

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

  MAMBA_RETURN_IF_ERROR(Gemm(w.in_proj, normed_.get(), d, xz, ip, T, "in_proj", l, kInProj));
  MAMBA_RETURN_IF_ERROR(ApplyLora(p, LoraLayerSite(l, LoraTarget::kInProj), normed_.get(), wt, d, d,
                                  xz, ip, ip, "in_proj LoRA", l));
  if (w.in_proj_bias != nullptr) {  // five consumers read the row: add the bias once
    MAMBA_RETURN_IF_ERROR(Launched(kc::AddBias({xz, ip, w.in_proj_bias, T, ip}, stream_),
                                   "in_proj_bias", l, kInProj));
  }

  kc::CausalConvArgs cv;  // over the x | B | C channels
  cv.x = xbc;
  cv.x_stride = ip;
  cv.weight = w.conv;
  cv.bias = w.conv_bias;
  cv.state = conv_state_.as<float>() + l * conv_layer_floats_;
  cv.state_slot_stride = conv_slot_floats_;
  cv.out = xc_.as<float>();
  cv.out_stride = cd;
  cv.dim = cd;
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

  kc::Mamba2ScanArgs sc;
  sc.x = xc_.as<float>();
  sc.x_stride = cd;
  sc.dt = dt;
  sc.dt_stride = ip;
  sc.dt_bias = w.dt_bias;
  sc.a = w.a;
  sc.b = xc_.as<float>() + e;
  sc.c = xc_.as<float>() + e + gn;
  sc.bc_stride = cd;
  sc.d_skip = w.d;
  sc.z = z;
  sc.z_stride = ip;
  sc.state = ssm_state_.as<float>() + l * ssm_layer_floats_;
  sc.state_slot_stride = ssm_slot_floats_;
  sc.out = ssm_y_.as<float>();
  sc.out_stride = e;
  sc.heads = c.num_heads;
  sc.head_dim = c.head_dim;
  sc.d_state = c.state_size;
  sc.groups = c.n_groups;
  sc.dt_min = static_cast<float>(c.time_step_min_limit);
  sc.dt_max = static_cast<float>(c.time_step_max_limit);
  sc.tokens = T;
  if (p.decode) {
    sc.slots = slots_dev_.as<int32_t>();
    MAMBA_RETURN_IF_ERROR(
        Launched(kc::Mamba2ScanDecode(sc, stream_), "mamba2_scan_decode", l, kScan));
  } else {
    sc.chunks = chunks_dev_.as<kc::ChunkDesc>();
    sc.num_chunks = p.num_chunks;
    MAMBA_RETURN_IF_ERROR(Launched(kc::Mamba2Scan(sc, stream_), "mamba2_scan", l, kScan));
  }

  // RMSNormGated(norm_before_gate=False) per group of d_inner / n_groups channels (the scan's
  // output already carries silu(z)), written as out_proj's input after the MLP split's columns.
  auto* const y = static_cast<std::byte*>(y_.get());
  const auto ws = static_cast<int64_t>(kernels::SizeOf(wt));
  kc::GroupRmsNormArgs gnorm;
  gnorm.in = ssm_y_.as<float>();
  gnorm.in_stride = e;
  gnorm.weight = w.gated_norm;
  gnorm.out = y + mlp * ws;
  gnorm.out_dtype = wt;
  gnorm.out_stride = yw;
  gnorm.rows = T;
  gnorm.groups = c.n_groups;
  gnorm.group_size = e / c.n_groups;
  gnorm.eps = c.layer_norm_epsilon;
  MAMBA_RETURN_IF_ERROR(
      Launched(kc::GroupRmsNorm(gnorm, stream_), "gated_rms_norm", l, kGatedNorm));
  if (mlp > 0) {  // mamba_ssm's d_ssm < d_inner: silu(z0) * x0 in the first mlp columns
    kc::SiluMulArgs mg;
    mg.gate = xz;
    mg.x = xz + mlp;
    mg.in_stride = ip;
    mg.out = y;
    mg.out_dtype = wt;
    mg.out_stride = yw;
    mg.rows = T;
    mg.dim = mlp;
    MAMBA_RETURN_IF_ERROR(Launched(kc::SiluMul(mg, stream_), "mlp_gate", l, kGatedNorm));
  }

  // out_proj writes delta_; the next norm (or the final one) adds it to the residual.
  MAMBA_RETURN_IF_ERROR(
      Gemm(w.out_proj, y_.get(), yw, delta_.as<float>(), d, T, "out_proj", l, kOutProj));
  return ApplyLora(p, LoraLayerSite(l, LoraTarget::kOutProj), y_.get(), wt, yw, yw,
                   delta_.as<float>(), d, d, "out_proj LoRA", l);
}

}  // namespace mamba::engine::cuda
