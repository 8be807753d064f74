// CUDA device discovery, usable from host code compiled without nvcc.
#pragma once

#include <string>

namespace mamba::kernels::cuda {

// Number of usable CUDA devices; 0 with a reason in *error when there is no driver or device.
int DeviceCount(std::string* error);

// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" for device `index`, or an error text.
std::string DeviceDescription(int index);

}  // namespace mamba::kernels::cuda
