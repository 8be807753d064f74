// Creating a backend by device name: the one place that knows every backend (the CPU engine and,
// when built, the CUDA engine). A library of its own (mamba_backends) above mamba_engine and
// mamba_engine_cuda, so that neither engine library depends on the other.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/checkpoint.h"

namespace mamba::engine {

// Picks and creates the backend for options.device ("auto": CUDA when a usable device exists,
// else CPU; the choice and the reason are logged).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::shared_ptr<const Checkpoint> checkpoint,
                                                       const BackendOptions& options);

}  // namespace mamba::engine
