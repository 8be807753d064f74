#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

#include <cstdio>

namespace mamba::kernels::cuda {

int DeviceCount(std::string* error) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (error) *error = cudaGetErrorString(e);
    return 0;
  }
  if (n == 0 && error) *error = "no CUDA devices";
  return n;
}

std::string DeviceDescription(int index) {
  cudaDeviceProp p{};
  const cudaError_t e = cudaGetDeviceProperties(&p, index);
  if (e != cudaSuccess) return cudaGetErrorString(e);
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
                static_cast<double>(p.totalGlobalMem) / (1u << 30));
  return buf;
}

}  // namespace mamba::kernels::cuda
