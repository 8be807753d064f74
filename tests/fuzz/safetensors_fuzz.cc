// libFuzzer target: safetensors parsing and config.json parsing must never crash or read
// outside the input, whatever the bytes. The first input byte picks the parser.
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/model_config.h"
#include "engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool config = data[0] & 1;
  std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  if (config) {
    auto j = nlohmann::json::parse(reinterpret_cast<const char*>(data + 1),
                                   reinterpret_cast<const char*>(data + size), nullptr, false);
    if (!j.is_discarded()) (void)mamba::engine::ModelConfig::FromJson(j);
    return 0;
  }
  auto tensors = mamba::engine::ParseSafetensors(rest, "fuzz.safetensors");
  if (tensors.ok()) {
    for (const auto& t : *tensors) {
      // Touch the first and last byte of every accepted tensor: ASan flags any escape.
      if (t.nbytes > 0) {
        volatile std::byte a = t.data[0];
        volatile std::byte b = t.data[t.nbytes - 1];
        (void)a;
        (void)b;
      }
    }
  }
  return 0;
}
