// Writing pytorch_model.bin files byte for byte as torch.save (torch 1.13) writes a plain dict
// of contiguous tensors, each with its own storage: for tests and mamba-make-checkpoint.
// (Compared with torch 1.13: 1100 mixed-dtype tensors, and a 4.4 GB archive with ZIP64 fields.)
#pragma once

#include <filesystem>
#include <span>

#include "absl/status/status.h"
#include "engine/safetensors.h"

namespace mamba::engine {

struct PytorchBinWriteOptions {
  // ZIP64 extra fields on every entry, as archives over 4 GiB need them; for tests of the
  // reader's ZIP64 path with small files. (The ZIP64 end records are always written, as torch
  // does.)
  bool force_zip64 = false;
};

// Writes {name: tensor} in the order given. The archive's folder is the file name's stem, as
// torch names it.
absl::Status WritePytorchBin(const std::filesystem::path& path,
                             std::span<const TensorToWrite> tensors,
                             const PytorchBinWriteOptions& options = {});

}  // namespace mamba::engine
