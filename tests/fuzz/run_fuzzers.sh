#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan and runs each for a bounded time over
# its committed seed corpus (tests/fuzz/corpus/<target>/). New inputs go to a scratch corpus;
# a crash leaves its input in the build folder: commit it as a regression seed with the fix.
# Usage: bash tests/fuzz/run_fuzzers.sh [seconds-per-target]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
build=build-fuzz
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAMBA_FUZZ=ON -DMAMBA_SANITIZE=address,undefined -DMAMBA_CUDA=OFF \
  -DMAMBA_BUILD_TESTS=OFF -DMAMBA_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target safetensors_fuzz tokenizer_fuzz
export MAMBA_SOURCE_DIR=$PWD
for t in safetensors tokenizer; do
  scratch=$(mktemp -d)
  echo "== ${t}_fuzz for ${seconds}s"
  (cd "$build" && ./bin/"${t}_fuzz" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 "$scratch" "$MAMBA_SOURCE_DIR/tests/fuzz/corpus/$t")
  rm -rf "$scratch"
done
