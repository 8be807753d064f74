#include "engine/checkpoint_quantizer.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/checkpoint_writer.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"
#include "kernels/cpu/int8_gemm.h"

namespace mamba::engine {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Files of a model directory that are weights (rewritten), not carried over as they are.
bool IsWeightFile(const fs::path& p) {
  const std::string name = p.filename().string(), ext = p.extension().string();
  return ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth" ||
         ext == ".ckpt" || ext == ".gguf" || ext == ".h5" || ext == ".msgpack" ||
         name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json";
}
constexpr uintmax_t kMaxCopiedFileBytes = uintmax_t{256} << 20;  // tokenizers are a few MB

// One tensor of the output: as stored (`src` viewed), or a matrix to quantize into I8 + scale.
struct OutTensor {
  std::string name;
  const TensorInfo* src = nullptr;
  bool quantize = false;
  int64_t bytes = 0;  // written, scale included

  int64_t Rows() const { return src->shape[0]; }
  int64_t Cols() const { return src->NumElements() / src->shape[0]; }
};

std::vector<OutTensor> PlanTensors(const Checkpoint& in, int64_t group_size,
                                   std::vector<std::string>* modules) {
  const ModelConfig& c = in.config();
  std::map<const TensorInfo*, std::string> matrices;  // tensor -> module
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensors& L = in.layer(i);
    matrices[L.in_proj] = "in_proj";
    if (L.x_proj) matrices[L.x_proj] = "x_proj";
    if (L.dt_proj) matrices[L.dt_proj] = "dt_proj";
    matrices[L.out_proj] = "out_proj";
  }
  for (const char* m : kInt8QuantModules) {
    const bool present =
        std::string_view(m) == "lm_head" ||
        std::any_of(matrices.begin(), matrices.end(), [&](const auto& e) { return e.second == m; });
    if (present) modules->push_back(m);
  }
  std::vector<OutTensor> out;
  auto add_matrix = [&](std::string name, const TensorInfo* t) {
    OutTensor o{std::move(name), t, true, 0};
    o.bytes =
        o.Rows() * o.Cols() + o.Rows() * kernels::cpu::Int8GroupCount(o.Cols(), group_size) * 4;
    out.push_back(std::move(o));
  };
  for (const TensorInfo* t : in.tensors()) {
    // The head is written below (quantized from the embedding when tied); a torch.save'd tied
    // lm_head.weight (the embedding's bytes) is dropped with it.
    if (t->name == "lm_head.weight") continue;
    if (matrices.count(t)) {
      add_matrix(t->name, t);
    } else {
      out.push_back(OutTensor{t->name, t, false, static_cast<int64_t>(t->nbytes)});
    }
  }
  add_matrix("lm_head.weight", in.lm_head() ? in.lm_head() : &in.embedding());
  return out;
}

// The safetensors entries of `t` (q and scales kept alive in `keep`).
absl::Status Materialize(const OutTensor& t, int64_t group_size,
                         std::vector<std::vector<std::byte>>* keep,
                         std::vector<TensorToWrite>* entries) {
  if (!t.quantize) {
    entries->push_back(TensorToWrite{t.name, t.src->dtype, t.src->shape,
                                     std::span<const std::byte>(t.src->data, t.src->nbytes)});
    return absl::OkStatus();
  }
  const int64_t n = t.Rows(), k = t.Cols(), groups = kernels::cpu::Int8GroupCount(k, group_size);
  std::vector<std::byte>& q = keep->emplace_back(static_cast<size_t>(n * k));
  std::vector<std::byte>& s = keep->emplace_back(static_cast<size_t>(n * groups) * 4);
  std::vector<float> scales(static_cast<size_t>(n * groups));
  absl::Status st =
      kernels::cpu::QuantizeRowMajor(t.src->data, t.src->dtype, n, k, group_size,
                                     reinterpret_cast<int8_t*>(q.data()), scales.data());
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat(t.name, ": ", st.message()));
  std::memcpy(s.data(), scales.data(), s.size());
  entries->push_back(TensorToWrite{t.name, DType::kI8, {n, k}, std::span<const std::byte>(q)});
  entries->push_back(TensorToWrite{
      Int8ScaleName(t.name), DType::kF32, {n, groups}, std::span<const std::byte>(s)});
  return absl::OkStatus();
}

// Writes one weight file of `tensors`: wider dtypes first, so that every tensor's data starts
// aligned to its element size (I8 matrices of odd sizes last).
absl::Status WriteShard(const fs::path& path, const std::vector<const OutTensor*>& tensors,
                        int64_t group_size, json* weight_map) {
  std::vector<std::vector<std::byte>> keep;
  keep.reserve(2 * tensors.size());
  std::vector<TensorToWrite> entries;
  for (const OutTensor* t : tensors) {
    MAMBA_RETURN_IF_ERROR(Materialize(*t, group_size, &keep, &entries));
  }
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return kernels::SizeOf(a.dtype) > kernels::SizeOf(b.dtype);
  });
  for (const TensorToWrite& e : entries) (*weight_map)[e.name] = path.filename().string();
  return WriteSafetensors(path, entries);
}

absl::Status CopySmallFiles(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(from, ec)) {
    const fs::path& p = e.path();
    if (!e.is_regular_file() || IsWeightFile(p) || p.filename() == "config.json" ||
        e.file_size() > kMaxCopiedFileBytes) {
      continue;
    }
    fs::copy_file(p, to / p.filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat(p.string(), ": ", ec.message()));
  }
  if (ec) return absl::InternalError(absl::StrCat(from.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// The files of WriteInt8Checkpoint into the (empty) directory `out`.
absl::StatusOr<QuantizeCheckpointResult> WriteFiles(const Checkpoint& in, const fs::path& out,
                                                    const QuantizeCheckpointOptions& o) {
  MAMBA_RETURN_IF_ERROR(CopySmallFiles(in.dir(), out));

  std::vector<std::string> modules;
  const std::vector<OutTensor> tensors = PlanTensors(in, o.group_size, &modules);
  MAMBA_ASSIGN_OR_RETURN(json cfg, ReadJsonFile(in.dir() / "config.json"));
  cfg["quantization_config"] = {{"quant_method", kInt8QuantMethod},
                                {"bits", 8},
                                {"symmetric", true},
                                {"group_size", o.group_size},
                                {"modules", modules}};
  MAMBA_RETURN_IF_ERROR(WriteJsonFile(out / "config.json", cfg));

  // Shards as save_pretrained cuts them: a new file when the next tensor would pass the limit.
  std::vector<std::vector<const OutTensor*>> shards(1);
  int64_t in_shard = 0;
  QuantizeCheckpointResult r;
  for (const OutTensor& t : tensors) {
    if (!shards.back().empty() && in_shard + t.bytes > o.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.bytes;
    r.bytes_after += t.bytes;
    r.matrices += t.quantize;
  }
  r.bytes_before = in.stored_bytes();
  r.shards = static_cast<int>(shards.size());
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shards.size() == 1 ? std::string("model.safetensors")
                                                : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                                                  s + 1, shards.size());
    MAMBA_RETURN_IF_ERROR(WriteShard(out / name, shards[s], o.group_size, &weight_map));
  }
  if (shards.size() > 1) {
    MAMBA_RETURN_IF_ERROR(WriteJsonFile(
        out / "model.safetensors.index.json",
        json{{"metadata", {{"total_size", r.bytes_after}}}, {"weight_map", weight_map}}));
  }
  return r;
}

}  // namespace

absl::StatusOr<QuantizeCheckpointResult> WriteInt8Checkpoint(const Checkpoint& in,
                                                             const fs::path& out,
                                                             const QuantizeCheckpointOptions& o) {
  if (in.quantization().int8) {
    return absl::FailedPreconditionError(absl::StrCat(
        in.dir().string(), " is already quantized (", kInt8QuantMethod, ", group size ",
        in.quantization().group_size, "): quantize the unquantized checkpoint"));
  }
  if (kernels::cpu::Int8GroupCount(1, o.group_size) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group size must be 0 (one scale per row) or a positive multiple of 4, got ",
                     o.group_size));
  }
  std::error_code ec;
  if (fs::exists(out, ec) && (!fs::is_directory(out, ec) || !fs::is_empty(out, ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat(out.string(), ": exists and is not an empty directory"));
  }
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat(out.string(), ": ", ec.message()));
  absl::StatusOr<QuantizeCheckpointResult> r = WriteFiles(in, out, o);
  if (!r.ok()) {  // leave `out` empty, as it was, so that a rerun is not refused
    for (const auto& entry : fs::directory_iterator(out, ec)) fs::remove_all(entry.path(), ec);
  }
  return r;
}

}  // namespace mamba::engine
