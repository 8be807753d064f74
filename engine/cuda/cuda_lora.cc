#include "engine/cuda/cuda_lora.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace mamba::engine::cuda {
namespace {

namespace kc = kernels::cuda;

constexpr size_t kAlignFloats = 64;  // 256-byte aligned matrices

// (out, in) of a module on this model; in is the vocabulary for the embeddings.
std::pair<int64_t, int64_t> ExpectedShape(const ModelConfig& c, LoraTarget t) {
  switch (t) {
    case LoraTarget::kInProj:
      return {c.in_proj_size(), c.hidden_size};
    case LoraTarget::kXProj:
      return {c.time_step_rank + 2 * c.state_size, c.intermediate_size};
    case LoraTarget::kDtProj:
      return {c.intermediate_size, c.time_step_rank};
    case LoraTarget::kOutProj:
      return {c.hidden_size, c.mlp_size + c.intermediate_size};
    case LoraTarget::kEmbeddings:
      return {c.hidden_size, c.vocab_size};
    case LoraTarget::kLmHead:
      return {c.vocab_size, c.hidden_size};
  }
  return {0, 0};
}

absl::Status CheckModule(const LoraModule& m, const ModelConfig& c, LoraTarget t,
                         const std::string& where) {
  if (c.is_mamba2() && (t == LoraTarget::kXProj || t == LoraTarget::kDtProj)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA module ", where, ": Mamba-2 layers have no ", Name(t)));
  }
  if (m.rank < 1 || m.rank > kc::kMaxLoraRank) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA module ", where, ": rank ", m.rank,
                                                   "; the CUDA engine takes ranks 1..",
                                                   kc::kMaxLoraRank));
  }
  const auto [out, in] = ExpectedShape(c, t);
  if (m.out != out || m.in != in || m.a.size() != static_cast<size_t>(m.rank * m.in) ||
      m.b.size() != static_cast<size_t>(m.out * m.rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA module ", where, ": A [", m.rank, ", ", m.in, "] (", m.a.size(),
                     " values), B [", m.out, ", ", m.rank, "] (", m.b.size(),
                     " values) do not fit the model's [", out, ", ", in, "]"));
  }
  return absl::OkStatus();
}

// Restores the calling thread's current device when it goes out of scope.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    status_ = CudaStatus(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")"));
  }
  ~DeviceScope() {
    if (previous_ >= 0) cudaSetDevice(previous_);
    cudaGetLastError();
  }
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = -1;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const CudaAdapterWeights>> CudaAdapterWeights::Upload(
    const LoraAdapter& adapter, const ModelConfig& config, int device, const void* owner) {
  const int64_t L = config.num_hidden_layers;
  if (adapter.num_layers() != L) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA adapter ", adapter.path().string(),
                                                   " has ", adapter.num_layers(),
                                                   " layers; the model has ", L));
  }
  // Every module with its site, checked, then packed into one host image of the device block.
  struct Item {
    int64_t site;
    LoraTarget target;
    const LoraModule* m;
    size_t a_at = 0, b_at = 0;  // float offsets in the block
  };
  std::vector<Item> items;
  for (int64_t l = 0; l < L; ++l) {
    for (int t = 0; t < kNumLayerTargets; ++t) {
      const auto target = static_cast<LoraTarget>(t);
      if (const LoraModule* m = adapter.layer_module(l, target)) {
        items.push_back({LoraLayerSite(l, target), target, m});
      }
    }
  }
  if (adapter.embeddings()) {
    items.push_back({LoraEmbeddingsSite(L), LoraTarget::kEmbeddings, adapter.embeddings()});
  }
  if (adapter.lm_head()) items.push_back({LoraHeadSite(L), LoraTarget::kLmHead, adapter.lm_head()});
  size_t floats = 0;
  auto align = [](size_t v) { return (v + kAlignFloats - 1) / kAlignFloats * kAlignFloats; };
  for (Item& it : items) {
    const std::string where =
        it.site < LoraEmbeddingsSite(L)
            ? absl::StrCat("layers.", it.site / kNumLayerTargets, ".", Name(it.target))
            : std::string(Name(it.target));
    MAMBA_RETURN_IF_ERROR(CheckModule(*it.m, config, it.target, where));
    it.a_at = floats;
    floats = align(floats + it.m->a.size());
    it.b_at = floats;
    floats = align(floats + it.m->b.size());
  }
  std::shared_ptr<CudaAdapterWeights> w(new CudaAdapterWeights());
  w->device_ = device;
  w->owner_ = owner;
  w->modules_.assign(static_cast<size_t>(LoraNumSites(L)), CudaLoraModule{});
  if (items.empty()) return w;  // an adapter without modules: the base model

  std::vector<float> host(floats, 0.0f);
  for (const Item& it : items) {
    const LoraModule& m = *it.m;
    if (it.target == LoraTarget::kEmbeddings) {  // [rank, vocab] -> [vocab, rank]
      for (int64_t j = 0; j < m.rank; ++j) {
        for (int64_t v = 0; v < m.in; ++v) {
          host[it.a_at + static_cast<size_t>(v * m.rank + j)] =
              m.a[static_cast<size_t>(j * m.in + v)];
        }
      }
    } else {
      std::copy(m.a.begin(), m.a.end(), host.begin() + static_cast<std::ptrdiff_t>(it.a_at));
    }
    std::copy(m.b.begin(), m.b.end(), host.begin() + static_cast<std::ptrdiff_t>(it.b_at));
  }
  DeviceScope scope(device);
  MAMBA_RETURN_IF_ERROR(scope.status());
  MAMBA_ASSIGN_OR_RETURN(
      w->memory_,
      DeviceBuffer::Allocate(floats * 4, absl::StrCat("LoRA adapter ", adapter.path().string())));
  cudaStream_t stream = nullptr;
  MAMBA_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                   "cudaStreamCreateWithFlags (LoRA upload)"));
  absl::Status s = CudaStatus(
      cudaMemcpyAsync(w->memory_.get(), host.data(), floats * 4, cudaMemcpyHostToDevice, stream),
      "cudaMemcpyAsync (LoRA upload)");
  const cudaError_t synced = cudaStreamSynchronize(stream);
  if (s.ok()) s = CudaStatus(synced, "cudaStreamSynchronize (LoRA upload)");
  cudaStreamDestroy(stream);
  MAMBA_RETURN_IF_ERROR(s);

  const auto* base = w->memory_.as<float>();
  for (const Item& it : items) {
    w->modules_[static_cast<size_t>(it.site)] = CudaLoraModule{
        base + it.a_at, base + it.b_at, static_cast<int32_t>(it.m->rank), it.m->scale};
  }
  return w;
}

CudaAdapterWeights::~CudaAdapterWeights() {
  if (memory_.get() == nullptr) return;
  DeviceScope scope(device_);
  memory_ = DeviceBuffer();
}

void LoraPlan::Build(std::span<const kernels::SeqChunk> chunks,
                     std::span<const CudaLoraModule* const> modules,
                     std::span<const int32_t> logit_rows, int64_t layers) {
  segments_.clear();
  sites_.assign(static_cast<size_t>(LoraNumSites(layers)), LoraSiteSegments{});
  if (std::none_of(modules.begin(), modules.end(), [](auto* m) { return m != nullptr; })) return;
  // Appends `rows` rows from `row` under `m` to the site being built (the last one), joining
  // the previous segment when it is the same module and ends where these rows begin.
  auto add = [&](LoraSiteSegments& site, const CudaLoraModule& m, int64_t row, int64_t rows) {
    if (m.rank == 0 || rows == 0) return;
    if (site.count > 0) {
      kc::LoraSegment& last = segments_.back();
      if (last.a == m.a && last.row_begin + last.rows == row) {
        last.rows += rows;
        site.max_rows = std::max(site.max_rows, last.rows);
        return;
      }
    }
    kc::LoraSegment s;
    s.row_begin = row;
    s.rows = rows;
    s.a = m.a;
    s.b = m.b;
    s.rank = m.rank;
    s.scale = m.scale;
    segments_.push_back(s);
    ++site.count;
    site.max_rows = std::max(site.max_rows, rows);
  };
  const int64_t head = LoraHeadSite(layers);
  for (int64_t s = 0; s < head; ++s) {
    LoraSiteSegments& site = sites_[static_cast<size_t>(s)];
    site.offset = static_cast<int64_t>(segments_.size());
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (const CudaLoraModule* m = modules[i]) add(site, m[s], chunks[i].begin, chunks[i].length);
    }
  }
  // The head's rows are the logit rows, in their order; each belongs to the chunk holding it.
  LoraSiteSegments& site = sites_[static_cast<size_t>(head)];
  site.offset = static_cast<int64_t>(segments_.size());
  for (size_t r = 0; r < logit_rows.size(); ++r) {
    const auto it =
        std::upper_bound(chunks.begin(), chunks.end(), static_cast<int64_t>(logit_rows[r]),
                         [](int64_t row, const kernels::SeqChunk& c) { return row < c.begin; });
    if (it == chunks.begin()) continue;
    const auto i = static_cast<size_t>(it - chunks.begin() - 1);
    if (const CudaLoraModule* m = modules[i]) add(site, m[head], static_cast<int64_t>(r), 1);
  }
}

}  // namespace mamba::engine::cuda
