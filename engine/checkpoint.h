// A Hugging Face Mamba model directory, opened as users download it: config.json,
// model.safetensors or a sharded index + shards, else pytorch_model.bin (sharded or not; read
// without running code, see pickle_reader.h) (F32/F16/BF16), optional generation_config.json.
// Also MambaServe's own int8 checkpoints (mamba-quantize; docs/ARCHITECTURE.md, "Quantized
// checkpoints"): I8 matrices with F32 `.weight_scale` tensors. Files stay memory-mapped; every
// tensor is checked against the config before use.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_config.h"
#include "engine/safetensors.h"  // TensorToWrite etc. for users of checkpoints
#include "engine/tensor_file.h"

namespace mamba::engine {

// One mixer layer's tensors (HF names under backbone.layers.N.); optional ones may be null.
// Shapes are Mamba-1's; Mamba-2's differ where noted (H heads, conv_dim = d_inner + 2*G*d_state).
struct LayerTensors {
  const TensorInfo* norm = nullptr;     // [d_model]
  const TensorInfo* in_proj = nullptr;  // [2*d_inner, d_model]; Mamba-2 [in_proj_size, d_model]
  const TensorInfo* in_proj_bias = nullptr;
  const TensorInfo* conv = nullptr;          // [d_inner, 1, d_conv]; Mamba-2 [conv_dim, 1, d_conv]
  const TensorInfo* conv_bias = nullptr;     // [d_inner]; Mamba-2 [conv_dim]
  const TensorInfo* x_proj = nullptr;        // [dt_rank + 2*d_state, d_inner]; not in Mamba-2
  const TensorInfo* dt_proj = nullptr;       // [d_inner, dt_rank]; not in Mamba-2
  const TensorInfo* dt_proj_bias = nullptr;  // [d_inner]; Mamba-2: mixer.dt_bias [H]
  const TensorInfo* a_log = nullptr;         // [d_inner, d_state]; Mamba-2 [H]
  const TensorInfo* d = nullptr;             // [d_inner]; Mamba-2 [H]
  const TensorInfo* gated_norm = nullptr;    // Mamba-2 only: mixer.norm.weight [d_inner]
  const TensorInfo* out_proj = nullptr;      // [d_model, d_inner]; Mamba-2 [d_model, mlp+d_inner]
  const TensorInfo* out_proj_bias = nullptr;
  // A quantized checkpoint's scales of the I8 matrices above: F32 [rows, groups] (see
  // kernels::cpu::Int8GroupCount); null unless that matrix is stored as int8.
  const TensorInfo* in_proj_scale = nullptr;
  const TensorInfo* x_proj_scale = nullptr;
  const TensorInfo* dt_proj_scale = nullptr;
  const TensorInfo* out_proj_scale = nullptr;
};

// How a checkpoint's matrices are quantized (config.json's quantization_config).
struct QuantizationInfo {
  bool int8 = false;       // quant_method "mambaserve_int8": symmetric int8 + fp32 scales
  int64_t group_size = 0;  // inputs per scale (0: one scale per row)
};

// The quant_method of MambaServe's int8 checkpoints, and the modules they may quantize.
inline constexpr char kInt8QuantMethod[] = "mambaserve_int8";
inline constexpr const char* kInt8QuantModules[] = {"in_proj", "x_proj", "dt_proj", "out_proj",
                                                    "lm_head"};

class Checkpoint {
 public:
  // Opens and validates a model directory. Errors name the file and tensor at fault.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(const std::filesystem::path& dir);

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& dir() const { return dir_; }
  const TensorInfo& embedding() const { return *embedding_; }  // [vocab, d_model]
  const TensorInfo& norm_f() const { return *norm_f_; }        // [d_model]
  // Null when tied. In a quantized checkpoint that lists lm_head, the int8 head (written for
  // tied models too: the embedding lookup stays the float table) with its scale.
  const TensorInfo* lm_head() const { return lm_head_; }
  const TensorInfo* lm_head_scale() const { return lm_head_scale_; }
  const QuantizationInfo& quantization() const { return quantization_; }
  const LayerTensors& layer(int64_t i) const { return layers_[static_cast<size_t>(i)]; }
  // The dtype of the bulk of the weights (in_proj of layer 0; int8 for a quantized checkpoint):
  // what dtype=auto computes in.
  DType weight_dtype() const {
    return quantization_.int8 ? DType::kI8 : layers_.front().in_proj->dtype;
  }
  // Every tensor, files in order and each file's in its order (for tools that rewrite one).
  std::vector<const TensorInfo*> tensors() const;
  // Bytes of all tensors as stored.
  int64_t stored_bytes() const;
  // Identifies the model across processes (32 hex digits): a hash of config.json (and the
  // generation config's special tokens), every tensor's name, dtype and shape, and samples of
  // its data (first, middle and last 4 KiB). Exported states carry it; an import checks it.
  const std::string& fingerprint() const { return fingerprint_; }
  // An engine that has copied `t` (packed, converted or uploaded it) lets its mapped pages go
  // (TensorFile::ReleasePages); reading `t` afterwards stays valid, only slower.
  void ReleasePages(const TensorInfo& t) const;
  void ReleaseAllPages() const;  // every tensor's (an engine that uploaded them all)

 private:
  Checkpoint() = default;
  absl::Status LoadFiles();
  absl::Status Bind();
  absl::Status BindQuantized(std::set<std::string>* used);
  bool Quantizes(std::string_view module) const;

  void ComputeFingerprint(const nlohmann::json& config);

  std::filesystem::path dir_;
  ModelConfig config_;
  std::string fingerprint_;
  std::vector<std::unique_ptr<TensorFile>> files_;
  std::unordered_map<std::string, std::pair<const TensorInfo*, const TensorFile*>> by_name_;
  const TensorInfo* embedding_ = nullptr;
  const TensorInfo* norm_f_ = nullptr;
  const TensorInfo* lm_head_ = nullptr;
  const TensorInfo* lm_head_scale_ = nullptr;
  std::vector<LayerTensors> layers_;
  QuantizationInfo quantization_;
  std::vector<std::string> quant_modules_;  // quantization_config.modules
};

// "X.weight" -> "X.weight_scale": the name of an int8 matrix's scales.
std::string Int8ScaleName(const std::string& weight_name);

// Reads and parses a JSON file; errors name the file.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::filesystem::path& path);

}  // namespace mamba::engine
