// A Hugging Face Mamba model directory, opened as users download it: config.json,
// model.safetensors or a sharded index + shards, else pytorch_model.bin (sharded or not; read
// without running code, see pickle_reader.h) (F32/F16/BF16), optional generation_config.json.
// Files stay memory-mapped; every tensor is checked against the config before use.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
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
};

class Checkpoint {
 public:
  // Opens and validates a model directory. Errors name the file and tensor at fault.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(const std::filesystem::path& dir);

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& dir() const { return dir_; }
  const TensorInfo& embedding() const { return *embedding_; }  // [vocab, d_model]
  const TensorInfo& norm_f() const { return *norm_f_; }        // [d_model]
  const TensorInfo* lm_head() const { return lm_head_; }       // null when tied
  const LayerTensors& layer(int64_t i) const { return layers_[static_cast<size_t>(i)]; }
  // The dtype of the bulk of the weights (in_proj of layer 0): what dtype=auto computes in.
  DType weight_dtype() const { return layers_.front().in_proj->dtype; }
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

  void ComputeFingerprint(const nlohmann::json& config);

  std::filesystem::path dir_;
  ModelConfig config_;
  std::string fingerprint_;
  std::vector<std::unique_ptr<TensorFile>> files_;
  std::unordered_map<std::string, std::pair<const TensorInfo*, const TensorFile*>> by_name_;
  const TensorInfo* embedding_ = nullptr;
  const TensorInfo* norm_f_ = nullptr;
  const TensorInfo* lm_head_ = nullptr;
  std::vector<LayerTensors> layers_;
};

// Reads and parses a JSON file; errors name the file.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::filesystem::path& path);

}  // namespace mamba::engine
