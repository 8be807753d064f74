// CUDA device discovery, usable from host code compiled without nvcc.
#pragma once

#include <string>

namespace mamba::kernels::cuda {

// Our kernels are built for sm_80 and newer (bf16, cp.async-era shared memory sizes).
inline constexpr int kMinComputeCapability = 80;

// Number of CUDA devices; 0 with a reason in *error when there is no driver or device.
int DeviceCount(std::string* error);

// Number of devices the CUDA engine can run on (compute capability >= 8.0); 0 with a reason in
// *error otherwise (no driver, no device, or only older devices).
int UsableDeviceCount(std::string* error);

// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" for device `index`, or an error text.
std::string DeviceDescription(int index);

}  // namespace mamba::kernels::cuda
