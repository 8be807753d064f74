// One suite for every backend, as CTranslate2's ops tests do: each case runs on each available
// device with the same expectations and per-dtype tolerances, against the float64 reference
// model and against itself (chunkings, split steps, copied slots, batch neighbours). A device's
// test binary instantiates BackendTest with BackendCases(device) and BackendErrorsTest with the
// device: tests/engine/cpu_backend_test.cc, and
// tests/engine/cuda/cuda_backend_test.cc when CUDA is built. Compile backend_suite.cc into that
// binary (a static library would drop its unreferenced test registrations).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/engine/reference_model.h"
#include "tests/engine/test_support.h"
#include "tests/support/gpu_required.h"

namespace mamba::engine::testing {

// A backend under test.
struct BackendDevice {
  std::string name;  // "cpu", "cuda"
  // Empty when this machine can run the device; else why not.
  std::function<std::string()> unavailable;
  // Empty when the device computes in `compute` here; else why not (e.g. no fp16 GEMM on this CPU).
  std::function<std::string(kernels::DType compute)> unsupported;
  std::function<absl::StatusOr<std::unique_ptr<Backend>>(std::shared_ptr<const Checkpoint>,
                                                         const BackendOptions&)>
      create;
  // Whether a row's logits are bitwise the same whatever else is in the step (CPU packed GEMM);
  // else they agree within the consistency tolerance.
  std::function<bool(const Backend&)> batch_invariant;
  // How the device computes with int8 weights (the reference follows it; `int8` and the group
  // size are set per variant).
  ReferenceOptions int8_scheme;
  // The tolerances (TolerancesFor) of int8 variants: kI8 where activations stay fp32 and are
  // quantized per row as the reference does (CPU); kBF16 where the GEMM inputs are bf16 (CUDA).
  kernels::DType int8_tolerances = kernels::DType::kI8;
};

// The one place the backend tests decide to skip: GTEST_SKIP()s the current test (or fails it,
// under MAMBA_REQUIRE_GPU=1, tests/support/gpu_required.h) when `device` cannot run here.
#define MAMBA_SKIP_UNLESS_AVAILABLE(device)                                           \
  do {                                                                                \
    const std::string mamba_why_ = (device).unavailable();                            \
    if (!mamba_why_.empty()) {                                                        \
      if (::mamba::testing::GpuRequired()) {                                          \
        FAIL() << (device).name << " required (MAMBA_REQUIRE_GPU=1): " << mamba_why_; \
      }                                                                               \
      GTEST_SKIP() << (device).name << " unavailable: " << mamba_why_;                \
    }                                                                                 \
  } while (0)

// Tolerances by compute dtype, the same on every device.
struct BackendTolerances {
  Tolerance reference;    // against the float64 reference model
  Tolerance consistency;  // a backend against itself: chunkings, split steps, copies, batches
};
// fp32 compute is checked tightly; 16-bit compute rounds activations at every GEMM, and a GEMM
// implementation may pick other kernels for other shapes.
BackendTolerances TolerancesFor(kernels::DType compute);

// The dtype a variant computes in (its compute dtype, or its stored one for kAuto).
kernels::DType ComputeOf(const BackendVariant& v);

// Same logits: bitwise when `bitwise` (a backend that promises batch invariance), else within
// `tol`.
::testing::AssertionResult SameLogits(bool bitwise, std::span<const float> a,
                                      std::span<const float> b, const Tolerance& tol);

// The random-checkpoint configurations every device runs.
std::vector<BackendVariant> BackendVariants();

struct BackendCase {
  BackendDevice device;
  BackendVariant variant;
};
std::vector<BackendCase> BackendCases(const BackendDevice& device);
void PrintTo(const BackendCase& c, std::ostream* os);
void PrintTo(const BackendDevice& d, std::ostream* os);

class BackendTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override;
  // Null (with a test failure) if the backend cannot be created.
  std::unique_ptr<Backend> MakeBackend(int slots, int64_t step_tokens);
  const BackendTolerances& tol() const { return tol_; }
  int64_t vocab() const { return checkpoint_->config().vocab_size; }
  // Same logits: bitwise where the backend promises it, else within tol().consistency.
  ::testing::AssertionResult Same(std::span<const float> a, std::span<const float> b) const;

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<ReferenceModel> reference_;
  std::unique_ptr<Backend> backend_;
  BackendTolerances tol_;
};

// Argument checks, per device (a default random checkpoint, 2 slots).
class BackendErrorsTest : public ::testing::TestWithParam<BackendDevice> {
 protected:
  void SetUp() override;

  TempDir dir_;
  std::shared_ptr<const Checkpoint> checkpoint_;
};

// Test names of the instantiations: the variant, the device.
std::string CaseName(const ::testing::TestParamInfo<BackendCase>& info);
std::string DeviceName(const ::testing::TestParamInfo<BackendDevice>& info);

}  // namespace mamba::engine::testing
