#!/usr/bin/env bash
# Configures, builds and runs every test registered with ctest (GPU tests skip without a device).
# Usage: bash tests/run_all.sh [build-dir]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)"
# Serially: each test already uses every core (OpenMP), and oversubscribed OpenMP barriers
# turn milliseconds into seconds.
ctest --test-dir "$build" --output-on-failure --timeout 900
