// libFuzzer target: pytorch_model.bin parsing (ZIP archive, strict pickle interpreter, storage
// bounds) must never crash, run away or read outside the input, whatever the bytes. The first
// input byte picks the layer: the whole archive, or data.pkl bytes alone.
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/pickle_reader.h"
#include "engine/pytorch_bin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  if (data[0] & 1) {
    (void)mamba::engine::ParseTorchPickle(rest);
    return 0;
  }
  auto tensors = mamba::engine::ParsePytorchBin(rest, "fuzz.bin");
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
