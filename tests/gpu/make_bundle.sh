#!/usr/bin/env bash
# Collects a self-contained GPU bundle from a built Release tree with CUDA, for a device machine
# that has the CUDA 13 runtime (cuBLAS) and a driver but none of our apt dependencies:
#   <out>-tree/mamba-gpu/bin   stripped copies of the GPU tests, mamba-cuda-bench, cuda_kernels_bench
#                              and the server tools (server, client, loadgen, make-checkpoint, make-lora,
#                              generate)
#   <out>-tree/mamba-gpu/lib   every shared library they load that is neither glibc nor CUDA's (the
#                              ldd closure: abseil, gRPC, protobuf, oneDNN, spdlog, fmt, OpenSSL,
#                              libgomp...), stripped; lib/gcc: libstdc++ and libgcc_s
#   <out>-tree/mamba-gpu/MANIFEST.txt   files, sizes, the glibc versions needed, the test list, the
#                              libraries expected from the device; run_bundle.sh (a copy)
#   <out>/mamba-gpu.tar.xz     the same tree, compressed, alone in <out>: what the device call
#                              carries (tests/gpu/README.md); with the working tree it must stay
#                              under 64 MiB, which this script checks
# The models (the demo model, the GPT-NeoX tokenizer) are not copied: the device call's working
# tree has models/ already, and run_bundle.sh passes their paths (23 MiB less to carry).
# Usage: bash tests/gpu/make_bundle.sh [build-dir] [out-dir]   (defaults: build, build-gpu-bundle)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out=${2:-build-gpu-bundle}
stage=$out-tree  # the unpacked tree, beside (not in) the folder the device call carries
root=$stage/mamba-gpu
limit=$((64 * 1024 * 1024))  # what one device call may carry, the working tree included

# Every test labelled `gpu` (tests/CMakeLists.txt's mamba_test names a test after its binary), so
# that a new GPU test is shipped and run without being added here.
mapfile -t gpu_tests < <(ctest --test-dir "$build" -N -L '^gpu$' | sed -n 's/^ *Test *#[0-9]*: //p')
((${#gpu_tests[@]} > 0)) || { echo "make_bundle: ctest lists no test labelled gpu in $build" >&2; exit 1; }
# mamba-generate: the engines' logits dumps for the HF oracle (tests/gpu/hf_oracle.py).
tools=(cuda_kernels_bench mamba-cuda-bench mamba-server mamba-client mamba-loadgen
  mamba-make-checkpoint mamba-make-lora mamba-generate)
# Loaded from the system on any Linux (glibc) or from the device's CUDA installation / driver.
system_lib='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libutil|libresolv|libanl)\.so'
cuda_lib='^lib(cuda|cublas|cublasLt|cudart|nvidia-|nvrtc|nvJitLink)'

for b in "${gpu_tests[@]}" "${tools[@]}"; do
  [[ -x $build/bin/$b ]] || { echo "make_bundle: $build/bin/$b is missing (build it first)" >&2; exit 1; }
done
[[ $(ldd "$build/bin/cuda_backend_test") == *libcublas* ]] ||
  { echo "make_bundle: $build/bin/cuda_backend_test does not link cuBLAS (not a CUDA build?)" >&2; exit 1; }

rm -rf "$root" "$out/mamba-gpu.tar.xz"
mkdir -p "$root/bin" "$root/lib/gcc"

for b in "${gpu_tests[@]}" "${tools[@]}"; do
  strip --strip-unneeded -o "$root/bin/$b" "$build/bin/$b"
done

# The ldd closure of every binary, by soname; glibc and CUDA are left to the device.
declare -A libs=() expected=()
for b in "${gpu_tests[@]}" "${tools[@]}"; do
  while read -r name _ path _; do
    if [[ $name =~ $system_lib ]]; then continue; fi
    if [[ $name =~ $cuda_lib ]]; then expected[$name]=1; continue; fi
    [[ $path == /* && -f $path ]] || { echo "make_bundle: $b needs $name, not found here" >&2; exit 1; }
    libs[$name]=$path
  done < <(ldd "$build/bin/$b" | grep '=>')
done
for name in "${!libs[@]}"; do
  # GCC's runtime apart: it alone needs glibc 2.36, and run_bundle.sh leaves it out on an older one.
  dir=$root/lib
  [[ $name == libstdc++.so.* || $name == libgcc_s.so.* ]] && dir=$root/lib/gcc
  strip --strip-unneeded -o "$dir/$name" "$(readlink -f "${libs[$name]}")"
done

cp tests/gpu/run_bundle.sh "$root/run_bundle.sh"

# The newest glibc symbol version the files need: the device's glibc must be at least this, with
# and without the bundled GCC runtime (lib/gcc: then the device's libstdc++ must have GLIBCXX_*).
newest() {  # PREFIX FILES...
  local prefix=$1
  shift
  for f in "$@"; do objdump -T "$f"; done | grep -o "${prefix}_[0-9.]*" | sort -u -V | tail -1
}
glibc_max=$(newest GLIBC "$root"/bin/* "$root"/lib/*.so* "$root"/lib/gcc/*)
glibc_no_gcc=$(newest GLIBC "$root"/bin/* "$root"/lib/*.so*)
glibcxx_max=$(newest GLIBCXX "$root"/bin/* "$root"/lib/*.so*)
{
  echo "mamba-gpu bundle from $(readlink -f "$build") ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "cuda_architectures: $(sed -n 's/^MAMBA_CUDA_ARCHITECTURES:STRING=//p' "$build/CMakeCache.txt")"
  echo "glibc_needed: $glibc_max (built on $(ldd --version | head -1))"
  echo "glibc_needed_without_lib_gcc: $glibc_no_gcc (the bundled libstdc++/libgcc_s need the rest)"
  echo "glibcxx_needed: $glibcxx_max (from libstdc++: the bundled one, or the device's if its glibc is older)"
  echo "expected_from_device: ${!expected[*]} libcuda.so.1 (the driver, loaded by the static CUDA runtime)"
  echo "gpu_tests: ${gpu_tests[*]}"
  echo "tools: ${tools[*]}"
  echo "sizes (bytes):"
  (cd "$root" && find . -type f -printf '%s %p\n' | sort -k2)
} >"$root/MANIFEST.txt"

mkdir -p "$out"
tar -C "$stage" -cf - mamba-gpu | xz -T0 -6 >"$out/mamba-gpu.tar.xz"
raw=$(du -sb "$root" | cut -f1)
packed=$(stat -c %s "$out/mamba-gpu.tar.xz")
echo "make_bundle: $root: $((raw / 1024 / 1024)) MiB ($(ls "$root/bin" | wc -l) binaries," \
  "$(ls "$root/lib" | wc -l) libraries); $out/mamba-gpu.tar.xz: $((packed / 1024 / 1024)) MiB;" \
  "needs $glibc_max; expects ${!expected[*]} on the device"
du -b "$root"/lib/*.so* "$root"/bin/* | sort -n | tail -5 | awk '{printf "  largest: %6.1f MiB %s\n", $1 / 1048576, $2}'
# What a device call sends: the working tree (tracked and untracked-not-ignored files) + the archive.
tree=$( (git ls-files -z && git ls-files -z --others --exclude-standard) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "make_bundle: with the working tree ($((tree / 1024 / 1024)) MiB) a device call carries" \
  "$(((tree + packed) / 1024 / 1024)) MiB of the 64 MiB allowed"
if ((tree + packed > limit)); then
  echo "make_bundle: over the 64 MiB a device call may carry" >&2
  exit 1
fi
