#!/usr/bin/env bash
# Configures, builds and runs every test registered with ctest (GPU tests skip without a device).
# Usage: bash tests/run_all.sh [build-dir [cmake-option...]]   (default: build)
#   e.g. bash tests/run_all.sh build-ci -DMAMBA_WERROR=ON   (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(($# > 0 ? 1 : 0))
launcher=()
if command -v ccache >/dev/null; then
  # A cache shared by every checkout on this machine: paths are hashed relative to the tree.
  export CCACHE_DIR=${CCACHE_DIR:-/var/tmp/mamba-ccache} CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@"
cmake --build "$build" -j"$(nproc)"
# Serially: each test already uses every core (OpenMP), and oversubscribed OpenMP barriers
# turn milliseconds into seconds.
ctest --test-dir "$build" --output-on-failure --timeout 900
