// The CUDA engine: the CPU engine's passes over packed chunks (engine/cpu/cpu_backend.h) on one
// GPU, with cuBLAS GEMMs and our kernels (kernels/cuda/), the state pool in device memory and
// decode steps replayed from CUDA graphs captured per bucketed batch size.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cuda/cuda_util.h"
#include "engine/cuda/cuda_weights.h"
#include "engine/sampling.h"
#include "kernels/packed_chunks.h"

struct CUstream_st;
struct CUgraphExec_st;

namespace mamba::kernels::cuda {
class CublasGemm;
}  // namespace mamba::kernels::cuda

namespace mamba::engine {
struct Pass;
}  // namespace mamba::engine

namespace mamba::engine::cuda {

class LoraPlan;
struct CudaLoraModule;

// CUDA-only knobs (BackendOptions covers the rest). num_slots == 0 in BackendOptions means:
// as many slots as fit in state_memory_fraction of the memory left after weights and scratch.
struct CudaBackendOptions {
  bool cuda_graphs = true;             // replay decode steps from captured graphs
  int max_graph_batch = 256;           // largest decode batch bucket that gets a graph
  double state_memory_fraction = 0.9;  // auto slots: share of the free memory for states
  int max_auto_slots = 1024;           // auto slots: upper bound
  bool sync_each_kernel = false;       // debugging: an asynchronous error names its kernel
};

class CudaBackend : public Backend {
 public:
  // Errors: InvalidArgument (options, device index), FailedPrecondition (no usable device),
  // ResourceExhausted (device memory), Internal (CUDA/cuBLAS failures).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options, int device,
      const CudaBackendOptions& cuda_options = {});
  ~CudaBackend() override;

  const ModelConfig& config() const override { return checkpoint_->config(); }
  std::string Describe() const override;
  BackendInfo info() const override;
  kernels::DType compute_dtype() const override { return weights_->weights; }
  int num_slots() const override { return num_slots_; }
  // A CUDA error fails the call with Internal naming the kernel (or the step, for errors found
  // at synchronization); an error that leaves the device unusable fails every later call too.
  absl::Status Prefill(std::span<const ChunkInput> chunks, Logits* logits) override;
  absl::Status Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                      Logits* logits) override;
  absl::Status ResetSlot(SlotId slot) override;
  absl::Status CopySlot(SlotId from, SlotId to) override;
  int64_t state_floats() const override { return conv_slot_floats_ + ssm_slot_floats_; }
  absl::Status SaveSlot(SlotId slot, std::vector<float>* state) override;
  absl::Status RestoreSlot(SlotId slot, std::span<const float> state) override;
  std::vector<std::pair<std::string, double>> OpSeconds() const override;
  // Uploads the adapter (engine/cuda/cuda_lora.h: on a stream of its own, any thread, while steps
  // run). Prefill applies it to the chunks that name it; Decode takes no adapters.
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> LoadAdapter(
      const LoraAdapter& adapter) override;

  // The fast decode path (engine/backend.h): the decode step as Decode runs it (graphs
  // included), with the logits left on the device; rows with a rule are drawn there
  // (kernels/cuda/sampling.h's DrawSample: DrawByRule's definition, float64 masses in another
  // order than the host's) and only their tokens and requested log-probs come back; the other
  // rows' logits come back through pinned memory. A batch larger than one pass goes through
  // Backend::DecodeAndDraw. InvalidArgument as Decode, and for rules.size() != slots.size() or
  // a rule's top_logprobs outside [0, kMaxTopLogprobs].
  bool fast_decode() const override { return true; }
  absl::Status DecodeAndDraw(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                             std::span<const std::optional<DrawRule>> rules,
                             std::vector<SampledToken>* drawn, Logits* logits) override;

  int device() const { return device_; }
  int64_t weight_bytes_per_token() const { return weights_->gemm_bytes; }
  int64_t state_bytes_per_slot() const { return (conv_slot_floats_ + ssm_slot_floats_) * 4; }
  // Decode batch sizes that get a graph, and how many graphs were captured so far.
  const std::vector<int>& graph_buckets() const { return buckets_; }
  int graphs_captured() const;

 private:
  enum Op {
    kEmbed,
    kNorm,
    kInProj,
    kConv,
    kXProj,
    kDtProj,
    kScan,
    kGatedNorm,
    kOutProj,
    kHead,
    kLora,  // LoRA shrink/expand at every site
    kNumOps
  };
  // One pass over `tokens` rows. Decode: row i is a token of slot slots_dev_[i] (-1: padding),
  // logits for every row. Prefill: chunk table in chunks_dev_, logits for the rows listed in
  // rows_dev_.
  struct PassShape {
    int64_t tokens = 0;
    bool decode = false;
    int num_chunks = 0;
    int64_t logit_rows = 0;
    // Prefill: the pass's LoRA segments (uploaded to lora_segments_dev_); null: no adapter.
    const LoraPlan* lora = nullptr;
  };

  CudaBackend(std::shared_ptr<const Checkpoint> checkpoint, const BackendOptions& options,
              const CudaBackendOptions& cuda_options, int device);
  absl::Status Init(kernels::DType dtype);
  absl::Status AllocateScratch();
  absl::Status AllocateSlotsAndLogits();
  void ChooseBuckets();

  absl::Status EnqueueForward(const PassShape& p);
  absl::Status EnqueueLayer(int64_t l, const PassShape& p);
  // Mamba-2's mixer (cuda_mamba2.cc): in_proj -> conv over x|B|C -> multi-head scan -> gated
  // RMS norm per group (+ the MLP split) -> out_proj.
  absl::Status EnqueueMamba2Layer(int64_t l, const PassShape& p);
  absl::Status EnqueueHead(const PassShape& p);
  absl::Status RunPrefillPass(const Pass& pass, Logits* logits);
  // LoRA (cuda_lora.cc's plan, kernels/cuda/lora.h): every chunk's adapter is one this backend
  // loaded (InvalidArgument otherwise); the plan's segments to the device (buffers grow as
  // needed, between passes); at one site, y[rows] += scale * (x A^T) B^T for the plan's rows.
  absl::Status CheckAdapters(std::span<const ChunkInput> chunks) const;
  absl::Status UploadLoraPlan();
  absl::Status ApplyLora(const PassShape& p, int64_t site, const void* x, kernels::DType x_dtype,
                         int64_t ldx, int64_t in, float* y, int64_t ldy, int64_t out,
                         const char* name, int64_t layer);
  absl::Status ApplyEmbeddingLora(const PassShape& p);
  // Validates a decode batch; *chunks receives it as 1-token chunks.
  absl::Status CheckDecode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                           std::vector<ChunkInput>* chunks);
  // One decode pass; `tail` enqueues what reads its logits (rows [0, slots.size()) of
  // logits_) before the step synchronizes.
  absl::Status DecodeStep(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                          const std::function<absl::Status()>& tail);
  void CaptureGraph(size_t bucket);

  // Error plumbing: Launched checks one enqueued op (and times it when profiling, unless op is
  // kNumOps); Gemm enqueues y[rows, w.n] = x[rows, w.k] W^T (x in w.x_dtype, y fp32) through
  // cuBLAS or the int8 GEMM and does the same; Sync
  // waits for the stream; Fail logs, and marks the engine broken when the context is lost.
  absl::Status Launched(int cuda_error, const char* kernel, int64_t layer, Op op);
  absl::Status Gemm(const DeviceMatrix& w, const void* x, int64_t ldx, float* y, int64_t ldy,
                    int64_t rows, const char* name, int64_t layer, Op op);
  absl::Status Sync(const std::string& what);
  absl::Status Fail(absl::Status s);
  absl::Status Ready();  // broken_ or cudaSetDevice failure
  absl::Status CheckSlot(SlotId slot) const;
  absl::Status ZeroSlotAsync(int32_t slot);

  std::shared_ptr<const Checkpoint> checkpoint_;
  BackendOptions options_;
  CudaBackendOptions cuda_options_;
  int device_ = 0;
  std::string device_name_;
  int num_slots_ = 0;
  CUstream_st* stream_ = nullptr;
  std::unique_ptr<kernels::cuda::CublasGemm> gemm_;
  std::unique_ptr<CudaWeights> weights_;
  // State pool, slot-major so that one slot's whole state is one contiguous block (cheap
  // reset, copy and future snapshots): conv [slots, layers, d_conv-1, d_inner] and
  // ssm [slots, layers, d_state, d_inner], fp32 (Mamba-2: conv [slots, layers, d_conv-1,
  // conv_dim] and ssm [slots, layers, heads, d_state, head_dim]).
  DeviceBuffer conv_state_, ssm_state_;
  int64_t conv_layer_floats_ = 0, ssm_layer_floats_ = 0;  // one layer of one slot
  int64_t conv_slot_floats_ = 0, ssm_slot_floats_ = 0;    // all layers of one slot
  // Per-pass scratch for max_tokens_ rows ("lowp" = compute dtype: GEMM inputs). Mamba-2 has
  // no xc_lowp_, dbc_ or dt_ (empty) and ssm_y_, the fp32 scan output the gated norm reads.
  int64_t max_tokens_ = 0, max_logit_rows_ = 0;
  DeviceBuffer residual_, delta_, normed_, xz_, xc_, xc_lowp_, dbc_, dt_, ssm_y_, y_, head_in_,
      logits_;
  DeviceBuffer int8_workspace_;  // int8 weights, more than kInt8GemvMaxRows rows: dequantized tiles
  // LoRA: the shrink's output [max_tokens_, kMaxLoraRank] fp32; the current pass's plan and its
  // segment table (pinned staging and device copy, grown when a pass needs more).
  DeviceBuffer lora_t_, lora_segments_dev_;
  PinnedBuffer lora_segments_stage_;
  std::unique_ptr<LoraPlan> lora_plan_;
  std::vector<const CudaLoraModule*> lora_modules_;  // the pass's chunks' module tables
  DeviceBuffer tokens_dev_, slots_dev_, chunks_dev_, rows_dev_;
  PinnedBuffer staging_;  // host side of tokens / slots / chunk table / logit rows
  size_t stage_tokens_ = 0, stage_slots_ = 0, stage_chunks_ = 0, stage_rows_ = 0;  // offsets
  // DecodeAndDraw: rules then results, [max_logit_rows_] each (DrawLayout in cuda_backend.cc),
  // on the device and in pinned memory; the rule-less rows' logits in pinned memory.
  DeviceBuffer draw_dev_;
  PinnedBuffer draw_host_, logits_host_;
  // Decode graphs: buckets_[i] rows, graphs_[i] null until captured.
  std::vector<int> buckets_;
  std::vector<CUgraphExec_st*> graphs_;
  bool graphs_enabled_ = false;
  bool capturing_ = false;
  absl::Status broken_;
  std::array<double, kNumOps> op_seconds_{};
  double profile_mark_ = 0;  // profiling: when the previous op finished (steady clock, s)
};

}  // namespace mamba::engine::cuda
