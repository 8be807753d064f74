// A strict interpreter for the pickle that torch.save writes for a state dict (data.pkl in a
// pytorch_model.bin): only the opcodes and globals a dict of tensors needs. Nothing is ever
// called or imported: any other global (os.system, builtins.eval, ...) is refused by name, so
// loading a model file can never run code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace mamba::engine {

// One tensor of the state dict, contiguous (validated), as a view of a storage.
struct PickledTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  std::string storage_key;      // the storage's archive entry is <prefix>/data/<storage_key>
  uint64_t storage_numel = 0;   // elements of the whole storage, as its persistent id says
  uint64_t storage_offset = 0;  // first element of the tensor in the storage
};

// Interprets `pickle` (protocol 2-5 opcodes) and returns the top-level dict's tensors in order.
// Allowed globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_tensor /
// _rebuild_parameter and the torch.<Type>Storage classes (as persistent ids
// ('storage', type, key, location, numel)). Refused, with a clear error: any other global or
// opcode, a value that is not a tensor, dtypes other than F32/F16/BF16 (naming the tensor),
// non-contiguous strides, a tensor past its storage's end, and inputs over the size limits.
absl::StatusOr<std::vector<PickledTensor>> ParseTorchPickle(std::span<const std::byte> pickle);

}  // namespace mamba::engine
