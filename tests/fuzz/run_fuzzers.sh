#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan and runs each for a bounded time over
# a scratch corpus plus its committed seeds (tests/fuzz/corpus/<target>/; make_seeds.sh writes
# the request fuzzers' seeds). A crash, leak or timeout leaves its input in
# build-fuzz/artifacts/<target>/: commit it as a regression seed (regress_*) with the fix.
# Exits non-zero if any target fails; prints each target's executed runs.
# Usage: bash tests/fuzz/run_fuzzers.sh [--ci] [seconds-per-target]   (default 60)
#   --ci: compile through ccache when installed (cache shared with tests/run_all.sh), and keep
#         going after a failing target so that every target reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
ci=0
if [ "${1:-}" = "--ci" ]; then
  ci=1
  shift
fi
seconds=${1:-60}
build=build-fuzz
targets=(safetensors pytorch_bin tokenizer http_request grpc_request)

launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=)
if [ "$ci" = 1 ] && command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-/var/tmp/mamba-ccache} CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
start=$(date +%s)
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAMBA_FUZZ=ON -DMAMBA_SANITIZE=address,undefined -DMAMBA_CUDA=OFF \
  -DMAMBA_BUILD_TESTS=OFF -DMAMBA_BUILD_BENCHMARKS=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" --target "${targets[@]/%/_fuzz}"
echo "== fuzz build: $(( $(date +%s) - start ))s"

export MAMBA_SOURCE_DIR=$PWD
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=()
summary=()
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)
  artifacts=$PWD/$build/artifacts/$t/
  mkdir -p "$artifacts"
  log=$PWD/$build/fuzz-$t.log
  echo "== ${t}_fuzz for ${seconds}s"
  rc=0
  (cd "$build" && ./bin/"${t}_fuzz" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$artifacts" \
      "$scratch" "$MAMBA_SOURCE_DIR/tests/fuzz/corpus/$t") >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(ls "$scratch" | wc -l)
  rm -rf "$scratch"
  if [ "$rc" -ne 0 ]; then
    tail -60 "$log"
    echo "== ${t}_fuzz FAILED (exit $rc); input(s) in $artifacts; log $log"
    failed+=("$t")
    summary+=("$(printf '%-14s FAILED  runs %s' "$t" "${runs:-?}")")
    [ "$ci" = 1 ] || break
  else
    grep -E '^(#[0-9]+ +DONE|stat::)' "$log" || true
    summary+=("$(printf '%-14s ok      runs %-9s new corpus inputs %s' "$t" "${runs:-?}" "$corpus")")
  fi
done
echo "== fuzz summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "== failing fuzz targets: ${failed[*]}"
  exit 1
fi
