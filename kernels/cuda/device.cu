#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/cuda/device.h"

namespace mamba::kernels::cuda {

int DeviceCount(std::string* error) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error for later callers
    if (error) *error = cudaGetErrorString(e);
    return 0;
  }
  if (n == 0 && error) *error = "no CUDA devices";
  return n;
}

int UsableDeviceCount(std::string* error) {
  const int n = DeviceCount(error);
  int usable = 0;
  std::string older;
  for (int i = 0; i < n; ++i) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    if (major * 10 + minor >= kMinComputeCapability) {
      ++usable;
    } else {
      older +=
          (older.empty() ? "" : ", ") + std::string("sm_") + std::to_string(major * 10 + minor);
    }
  }
  if (n > 0 && usable == 0 && error) {
    *error = "no device with compute capability >= 8.0 (found " + older + ")";
  }
  return usable;
}

std::string DeviceDescription(int index) {
  cudaDeviceProp p{};
  const cudaError_t e = cudaGetDeviceProperties(&p, index);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(e);
  }
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
                static_cast<double>(p.totalGlobalMem) / (1u << 30));
  return buf;
}

}  // namespace mamba::kernels::cuda
