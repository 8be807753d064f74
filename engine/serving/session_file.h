// The session file: one safetensors file holds a session's tokens and recurrent state, for
// export / import and for the session directory (engine/serving/session_store.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/serving/state_store.h"
#include "engine/types.h"

namespace mamba::engine {

// The largest JSON header a session file may have.
inline constexpr int64_t kMaxSessionHeaderBytes = 1 << 20;

// What a session file describes and is checked against: the model it belongs to and the shape
// of its state (per layer: conv [d_conv-1, d_inner], then SSM [d_state, d_inner], fp32; Mamba-2:
// conv [d_conv-1, conv_dim], SSM [heads, d_state, head_dim]).
struct SessionModel {
  std::string fingerprint;  // Checkpoint::fingerprint()
  std::string dtype;        // the compute dtype of the server that wrote it (informational)
  int64_t layers = 0, d_inner = 0, conv_rows = 0, d_state = 0;  // conv_rows = d_conv - 1
  int64_t conv_dim = 0;  // conv channels when not d_inner (Mamba-2's x|B|C)
  int64_t heads = 0;     // Mamba-2: d_inner = heads * head_dim
  int64_t vocab_size = 0;
  int64_t conv_channels() const { return conv_dim > 0 ? conv_dim : d_inner; }
  int64_t conv_floats() const { return conv_rows * conv_channels(); }  // per layer
  int64_t ssm_floats() const { return d_state * d_inner; }             // per layer
  std::vector<int64_t> ssm_shape() const {
    if (heads > 0) return {heads, d_state, d_inner / heads};
    return {d_state, d_inner};
  }
  int64_t state_floats() const { return layers * (conv_floats() + ssm_floats()); }
};

// A session's content: the tokens and the state after the first `state_tokens` of them.
struct SessionContent {
  std::vector<TokenId> tokens;
  std::shared_ptr<const StateSnapshot> state;  // null when the session holds no token yet
  int64_t state_tokens = 0;
  // The LoRA adapter the state was computed under (LoraAdapter::fingerprint()); empty: the base
  // model. A turn under another is refused (Engine::Submit).
  std::string adapter;
};

// Encodes a session as a safetensors file: per layer `layers.{i}.conv_state` [d_conv-1, d_inner]
// and `layers.{i}.ssm_state` [d_state, d_inner] (F32; Mamba-2's shapes above), `tokens` [n] (I32),
// `logits` [vocab] (F32) when the state covers every token; metadata: format, session id, model
// fingerprint, dtype, token and state-token counts, created/last used times, a checksum of the
// data and, for a session under a LoRA adapter, `adapter_fingerprint` (absent: the base model, as
// in files written before adapters existed).
std::string EncodeSessionFile(const SessionModel& model, std::string_view id,
                              const SessionContent& content, int64_t created_ms,
                              int64_t last_used_ms);
// The inverse; every field checked (InvalidArgument naming what is wrong; a model mismatch names
// both fingerprints).
struct DecodedSession {
  std::string id;
  SessionContent content;
  int64_t created_ms = 0, last_used_ms = 0;
};
absl::StatusOr<DecodedSession> DecodeSessionFile(const SessionModel& model, std::string_view bytes);

}  // namespace mamba::engine
