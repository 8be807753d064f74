#include "engine/cpu/cpu_lora.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/lora.h"

namespace mamba::engine::cpu {
namespace {

namespace kc = kernels::cpu;

CpuLoraModule Layout(const LoraModule& m, bool embedding) {
  CpuLoraModule c;
  c.rank = m.rank;
  c.in = m.in;
  c.out = m.out;
  if (embedding) {  // [rank, vocab] -> [vocab, rank]: a token's row is contiguous
    c.a.resize(m.a.size());
    for (int64_t j = 0; j < m.rank; ++j) {
      for (int64_t v = 0; v < m.in; ++v) c.a[v * m.rank + j] = m.a[j * m.in + v];
    }
  } else {
    c.a = m.a;
  }
  c.bt.resize(m.b.size());
  for (int64_t o = 0; o < m.out; ++o) {
    for (int64_t j = 0; j < m.rank; ++j) c.bt[j * m.out + o] = m.b[o * m.rank + j] * m.scale;
  }
  return c;
}

int64_t Bytes(const CpuLoraModule& m) { return static_cast<int64_t>(m.a.size() + m.bt.size()) * 4; }

}  // namespace

absl::StatusOr<std::shared_ptr<const CpuAdapterWeights>> CpuAdapterWeights::Make(
    const LoraAdapter& adapter, const ModelConfig& config) {
  if (adapter.num_layers() != config.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("the adapter has ", adapter.num_layers(),
                                                   " layers; the model has ",
                                                   config.num_hidden_layers));
  }
  auto w = std::shared_ptr<CpuAdapterWeights>(new CpuAdapterWeights());
  w->layers_.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    for (int t = 0; t < kNumLayerTargets; ++t) {
      if (const LoraModule* m = adapter.layer_module(l, static_cast<LoraTarget>(t))) {
        auto& slot = w->layers_[static_cast<size_t>(l)][static_cast<size_t>(t)];
        slot = Layout(*m, false);
        w->bytes_ += Bytes(*slot);
      }
    }
  }
  if (const LoraModule* m = adapter.embeddings()) {
    w->embeddings_ = Layout(*m, true);
    w->bytes_ += Bytes(*w->embeddings_);
  }
  if (const LoraModule* m = adapter.lm_head()) {
    w->lm_head_ = Layout(*m, false);
    w->bytes_ += Bytes(*w->lm_head_);
  }
  return std::shared_ptr<const CpuAdapterWeights>(std::move(w));
}

absl::Status LoraRowGroups::Build(std::span<const kernels::SeqChunk> chunks,
                                  std::span<const AdapterWeights* const> adapters) {
  groups_.clear();
  head_groups_.clear();
  row_adapter_.clear();
  for (size_t i = 0; i < chunks.size(); ++i) {
    const AdapterWeights* given = i < adapters.size() ? adapters[i] : nullptr;
    const auto* a = dynamic_cast<const CpuAdapterWeights*>(given);
    if (given != nullptr && a == nullptr) {
      return absl::InvalidArgumentError(
          "a chunk's LoRA adapter was not loaded by the CPU engine (Backend::LoadAdapter)");
    }
    const kernels::SeqChunk& c = chunks[i];
    if (row_adapter_.size() < static_cast<size_t>(c.begin + c.length)) {
      row_adapter_.resize(static_cast<size_t>(c.begin + c.length), nullptr);
    }
    if (a == nullptr) continue;
    auto it =
        std::find_if(groups_.begin(), groups_.end(), [&](const auto& g) { return g.first == a; });
    if (it == groups_.end()) it = groups_.insert(groups_.end(), {a, {}});
    for (int64_t r = c.begin; r < c.begin + c.length; ++r) {
      it->second.push_back(static_cast<int32_t>(r));
      row_adapter_[static_cast<size_t>(r)] = a;
    }
  }
  return absl::OkStatus();
}

void LoraRowGroups::BuildHead(std::span<const int32_t> logit_rows, int64_t tokens) {
  head_groups_.clear();
  if (groups_.empty()) return;
  row_adapter_.resize(std::max<size_t>(row_adapter_.size(), static_cast<size_t>(tokens)), nullptr);
  for (size_t i = 0; i < logit_rows.size(); ++i) {
    const CpuAdapterWeights* a = row_adapter_[static_cast<size_t>(logit_rows[i])];
    if (a == nullptr || a->lm_head() == nullptr) continue;
    auto it = std::find_if(head_groups_.begin(), head_groups_.end(),
                           [&](const auto& g) { return g.first == a; });
    if (it == head_groups_.end()) it = head_groups_.insert(head_groups_.end(), {a, {}});
    it->second.push_back(static_cast<int32_t>(i));
  }
}

void LoraRowGroups::Apply(int64_t layer, LoraTarget t, const float* x, int64_t ldx, float* y,
                          int64_t ldy) {
  updates_.clear();
  for (const auto& [a, rows] : groups_) {
    if (const CpuLoraModule* m = a->layer(layer, t)) {
      updates_.push_back({x, ldx, m->a.data(), m->bt.data(), y, ldy, m->in, m->out, m->rank, rows});
    }
  }
  if (!updates_.empty()) kc::LoraAddRows(updates_);
}

void LoraRowGroups::ApplyEmbeddings(std::span<const TokenId> tokens, float* y, int64_t ldy) const {
  for (const auto& [a, rows] : groups_) {
    const CpuLoraModule* m = a->embeddings();
    if (m == nullptr) continue;
    kc::LoraAddEmbeddingRows(
        {m->a.data(), m->bt.data(), tokens.data(), y, ldy, m->out, m->rank, rows});
  }
}

void LoraRowGroups::ApplyHead(const float* x, int64_t ldx, float* y, int64_t ldy) {
  updates_.clear();
  for (const auto& [a, rows] : head_groups_) {
    const CpuLoraModule& m = *a->lm_head();
    updates_.push_back({x, ldx, m.a.data(), m.bt.data(), y, ldy, m.in, m.out, m.rank, rows});
  }
  if (!updates_.empty()) kc::LoraAddRows(updates_);
}

}  // namespace mamba::engine::cpu
