#include "kernels/cpu/memory.h"

#include <sys/mman.h>

namespace mamba::kernels::cpu {

std::byte* AllocateStreamed(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  if (bytes < kHugePage) {
    return static_cast<std::byte*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
  }
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);  // a hint; failure changes nothing
  return static_cast<std::byte*>(p);
}

}  // namespace mamba::kernels::cpu
