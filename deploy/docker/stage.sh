#!/usr/bin/env bash
# Copies what the runtime image needs into PREFIX: the tools, the bundled demo model, and every
# shared library they load that the base image does not have (found with ldd).
# Usage: stage.sh BUILD_DIR PREFIX [EXTRA_LIB_DIR...]
set -euo pipefail
build=$1
prefix=$2
shift 2
mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/share/mamba-serve/models"
for b in mamba-server mamba-client mamba-loadgen mamba-generate mamba-bench; do
  [ -x "$build/bin/$b" ] && install -m 0755 -s "$build/bin/$b" "$prefix/bin/$b"
done
cp -r models/kjv-mamba-4x192 "$prefix/share/mamba-serve/models/"
# glibc and the GCC runtime are in every Debian 12 base image.
skip='^(linux-vdso|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|ld-linux|libgcc_s|libstdc\+\+)'
for b in "$prefix"/bin/*; do
  ldd "$b" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    if ! [[ $name =~ $skip ]]; then cp -Lu "$path" "$prefix/lib/$name"; fi
  done
done
# cuBLAS is loaded by the CUDA engine (cudart itself is linked statically).
for dir in "$@"; do
  cp -Lu "$dir"/libcublas.so.* "$dir"/libcublasLt.so.* "$prefix/lib/" 2>/dev/null || true
done
ls -la "$prefix/bin" "$prefix/lib" | sed 's/^/  /'
du -sh "$prefix"
