#!/usr/bin/env bash
# Installs the build into PREFIX with `cmake --install` (the tools, the bundled models under
# share/mamba-serve/models, the docs; binaries stripped), then copies into PREFIX/lib every
# shared library the tools load that the base image does not have (found with ldd).
# Usage: stage.sh BUILD_DIR PREFIX [EXTRA_LIB_DIR...]
set -euo pipefail
build=$1
prefix=$2
shift 2
cmake --install "$build" --prefix "$prefix" --strip
mkdir -p "$prefix/lib"
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
