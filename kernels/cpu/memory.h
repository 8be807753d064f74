// Memory for large arrays the CPU kernels stream through (packed weights, benchmark buffers).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace mamba::kernels::cpu {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// 64-byte aligned memory of at least `bytes` bytes, or nullptr when out of memory. Arrays of
// 2 MiB or more are 2 MiB-aligned and hinted for transparent huge pages: a decode step streams
// every weight once, and with 4 KiB pages the TLB misses cost ~15% of the 130m model's batch-1
// decode rate (docs/PERF.md). The price: a large array is rounded up to whole huge pages,
// which the kernel backs in full (130m model: peak RSS 1.05 -> 1.15 GiB). Where THP is off the
// hint changes nothing; small arrays are not rounded up.
std::byte* AllocateStreamed(size_t bytes);

template <typename T>
using StreamedArray = std::unique_ptr<T[], FreeDeleter>;

template <typename T>
StreamedArray<T> MakeStreamedArray(size_t n) {
  return StreamedArray<T>(reinterpret_cast<T*>(AllocateStreamed(n * sizeof(T))));
}

}  // namespace mamba::kernels::cpu
