#include "tests/engine/fake_backend.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/lora/lora_adapter.h"

namespace mamba::engine::testing {
namespace {

constexpr uint64_t kStart = 0x9e3779b97f4a7c15ull;

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// An adapter as the fake holds it: only the salt its tokens' steps are mixed with.
class FakeAdapterWeights : public AdapterWeights {
 public:
  explicit FakeAdapterWeights(uint64_t salt) : salt_(salt) {}
  int64_t bytes() const override { return 8; }
  uint64_t salt() const { return salt_; }

 private:
  uint64_t salt_;
};

}  // namespace

FakeBackend::FakeBackend(const FakeBackendOptions& options)
    : peak_(options.peak),
      record_calls_(options.record_calls),
      state_(static_cast<size_t>(options.num_slots), kStart) {
  config_.vocab_size = options.vocab_size;
  config_.eos_token_ids = options.eos_token_ids;
}

FakeBackend::FakeBackend(const ModelConfig& config, int num_slots)
    : config_(config), peak_(8.0f), state_(static_cast<size_t>(num_slots), kStart) {}

BackendInfo FakeBackend::info() const {
  BackendInfo i;
  i.device = "fake";
  i.model_fingerprint = "fake-backend";
  i.dtype = kernels::DType::kF32;
  i.slots = num_slots();
  i.description = Describe();
  return i;
}

uint64_t FakeBackend::Next(uint64_t state, TokenId token) {
  return Mix(state ^ (static_cast<uint64_t>(token) + 0x632be59bd9b4e019ull));
}

uint64_t FakeBackend::Next(uint64_t state, TokenId token, uint64_t salt) {
  return salt == 0 ? Next(state, token) : Mix(Next(state, token) ^ salt);
}

uint64_t FakeBackend::SaltOf(const std::string& fingerprint) {
  uint64_t h = 0x51ed27037c8a5d31ull;
  for (unsigned char c : fingerprint) h = Mix(h ^ c);
  return h == 0 ? 1 : h;
}

uint64_t FakeBackend::SaltOf(const AdapterWeights* weights) {
  return weights ? static_cast<const FakeAdapterWeights*>(weights)->salt() : 0;
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> FakeBackend::LoadAdapter(
    const LoraAdapter& adapter) {
  if (!lora_) return Backend::LoadAdapter(adapter);
  if (load_hook_) load_hook_();
  if (!fail_next_load_.ok()) {
    absl::Status s = std::move(fail_next_load_);
    fail_next_load_ = absl::OkStatus();
    return s;
  }
  return std::make_shared<FakeAdapterWeights>(SaltOf(adapter.fingerprint()));
}

void FakeBackend::LogitsOf(uint64_t state, std::span<float> row) const {
  const uint64_t h = Mix(state);
  for (size_t v = 0; v < row.size(); ++v) {
    row[v] = static_cast<float>(Mix(h + v) >> 40) / static_cast<float>(1ull << 24);
  }
  row[h % row.size()] += peak_;
}

absl::Status FakeBackend::Prefill(std::span<const ChunkInput> chunks, Logits* logits) {
  if (!fail_next_.ok()) {
    absl::Status s = std::move(fail_next_);
    fail_next_ = absl::OkStatus();
    return s;
  }
  if (absl::Status s = ValidateChunks(chunks, num_slots(), config_.vocab_size); !s.ok()) return s;
  Call call;
  int64_t rows = 0;
  for (const ChunkInput& c : chunks) rows += c.logit_rows();
  logits->Resize(rows, config_.vocab_size);
  int64_t row = 0;
  for (const ChunkInput& c : chunks) {
    if (record_calls_) {
      call.chunks.push_back(
          {c.slot.value, {c.tokens.begin(), c.tokens.end()}, c.start, c.want_logits, c.adapter});
    }
    const uint64_t salt = SaltOf(c.adapter);
    uint64_t& s = state_[static_cast<size_t>(c.slot.value)];
    if (c.start) s = kStart;
    for (TokenId t : c.tokens) {
      s = Next(s, t, salt);
      if (c.all_logits) LogitsOf(s, logits->Row(row++));  // one row per token
    }
    if (c.want_logits && !c.all_logits) LogitsOf(s, logits->Row(row++));
  }
  if (record_calls_) calls_.push_back(std::move(call));
  return absl::OkStatus();
}

absl::Status FakeBackend::Decode(std::span<const SlotId> slots, std::span<const TokenId> tokens,
                                 Logits* logits) {
  if (slots.size() != tokens.size()) return absl::InvalidArgumentError("slots != tokens");
  std::vector<ChunkInput> chunks;
  for (size_t i = 0; i < slots.size(); ++i) chunks.push_back({slots[i], tokens.subspan(i, 1)});
  return Prefill(chunks, logits);
}

absl::Status FakeBackend::ResetSlot(SlotId slot) {
  if (slot.value < 0 || slot.value >= num_slots()) {
    return absl::InvalidArgumentError(absl::StrCat("slot ", slot.value, " out of range"));
  }
  state_[static_cast<size_t>(slot.value)] = kStart;
  return absl::OkStatus();
}

absl::Status FakeBackend::CopySlot(SlotId from, SlotId to) {
  if (from.value < 0 || from.value >= num_slots() || to.value < 0 || to.value >= num_slots()) {
    return absl::InvalidArgumentError("slot out of range");
  }
  state_[static_cast<size_t>(to.value)] = state_[static_cast<size_t>(from.value)];
  return absl::OkStatus();
}

absl::Status FakeBackend::SaveSlot(SlotId slot, std::vector<float>* state) {
  if (slot.value < 0 || slot.value >= num_slots()) return absl::InvalidArgumentError("bad slot");
  state->resize(2);
  std::memcpy(state->data(), &state_[static_cast<size_t>(slot.value)], sizeof(uint64_t));
  return absl::OkStatus();
}

absl::Status FakeBackend::RestoreSlot(SlotId slot, std::span<const float> state) {
  if (slot.value < 0 || slot.value >= num_slots()) return absl::InvalidArgumentError("bad slot");
  if (state.size() != 2) return absl::InvalidArgumentError("a fake state has 2 floats");
  std::memcpy(&state_[static_cast<size_t>(slot.value)], state.data(), sizeof(uint64_t));
  return absl::OkStatus();
}

}  // namespace mamba::engine::testing
