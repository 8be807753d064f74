#!/usr/bin/env bash
# Runs the GPU bundle (tests/gpu/make_bundle.sh) without CMake or CTest: every GPU test binary
# under MAMBA_REQUIRE_GPU=1 (a missing or unusable device fails, it does not skip), then smoke
# checks of the tools: mamba-make-checkpoint and mamba-make-lora write a tiny preset and adapter,
# mamba-cuda-bench times it, mamba-server serves the demo model on the GPU and answers one greedy
# completion over HTTP and over gRPC (mamba-client, the same text both ways) and a short
# mamba-loadgen run. Every step has a timeout and the whole run a budget (8 minutes by default).
# Usage: bash tests/gpu/run_bundle.sh [build-gpu-bundle/mamba-gpu.tar.xz | bundle-dir]
# Results: $OUT/summary.txt (one line per step: PASS/FAIL/SKIP, exit code, seconds, detail; the
# environment: glibc, GPU, where cuBLAS came from) and $OUT/logs.tar.gz (every step's log and the
# gtest XML). Env: OUT (default /tmp/mamba-gpu-out), MAMBA_REQUIRE_GPU (default 1; 0: a test or
# tool finding no device skips, for the CPU-only rehearsal in tests/gpu/check_bundle.sh),
# MAMBA_BUNDLE_DEVICE (server --device, default cuda), MAMBA_BUNDLE_TEST_TIMEOUT (s per test,
# default 240), MAMBA_BUNDLE_DEADLINE (s for the whole run, default 480: a step gets at most what
# is left, and a step left with under 10 s fails as not run), MAMBA_BUNDLE_BENCH=1 (also
# cuda_kernels_bench, ~2 min), MAMBA_CUBLAS_DIR (where libcublas.so.13 is, if not found).
set -uo pipefail
src=${1:-$(dirname "$0")}
out=${OUT:-/tmp/mamba-gpu-out}
require=${MAMBA_REQUIRE_GPU-1}
device=${MAMBA_BUNDLE_DEVICE:-cuda}
test_timeout=${MAMBA_BUNDLE_TEST_TIMEOUT:-240}
deadline=${MAMBA_BUNDLE_DEADLINE:-480}  # seconds for the whole run
t0=$SECONDS
work=$(mktemp -d /tmp/mamba-gpu-run.XXXXXX)
logs=$out/logs
mkdir -p "$logs"
summary=$out/summary.txt
: >"$summary"
note() { printf '[run_bundle %4ds] %s\n' $((SECONDS - t0)) "$*" | tee -a "$summary"; }
failed=0
server_pid=

finish() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  # Only 8 files come back from $OUT: the logs travel as one archive.
  tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$logs"
  rm -rf "$work"
}
trap finish EXIT

# ---- the bundle: a directory, or the archive unpacked under /tmp ----
if [[ -f $src ]]; then
  note "unpacking $src"
  if command -v xz >/dev/null; then
    tar -C "$work" -xJf "$src"
  else  # no xz-utils: Python's lzma
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$src" "$work"
  fi || { note "FAIL unpack"; exit 1; }
  root=$work/mamba-gpu
else
  root=$(cd "$src" && pwd)
fi
[[ -x $root/bin/mamba-server ]] || { note "FAIL no bundle at $root (bin/mamba-server missing)"; exit 1; }
bin=$root/bin

# ---- libraries: the bundle's, then the device's cuBLAS 13 ----
# The bundled libstdc++ and libgcc_s need glibc 2.36 (arc4random, _dl_find_object); on an older
# glibc (>= 2.34, what the binaries themselves need) the system's are used if new enough.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
libpath=$root/lib
if [[ -n $glibc ]] && printf '2.36\n%s\n' "$glibc" | sort -C -V; then
  libpath=$libpath:$root/lib/gcc
fi
cublas=${MAMBA_CUBLAS_DIR:-}
if [[ -z $cublas ]] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13 '; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
    /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu; do
    [[ -e $d/libcublas.so.13 ]] && { cublas=$d; break; }
  done
  if [[ -z $cublas ]]; then  # PyTorch's pip wheels (nvidia-cublas)
    f=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name libcublas.so.13 -print 2>/dev/null | head -1)
    [[ -n $f ]] && cublas=$(dirname "$f")
  fi
fi
export LD_LIBRARY_PATH=$libpath${cublas:+:$cublas}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The models come from the repository this script lives in (the device call's working tree).
repo=${MAMBA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
models=$repo/models
[[ -f $models/kjv-mamba-4x192/config.json && -f $models/gpt-neox-20b/tokenizer.json ]] ||
  { note "FAIL no models/ at $repo (set MAMBA_SOURCE_DIR to the repository root)"; exit 1; }
export MAMBA_SOURCE_DIR=$repo OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
{
  echo "bundle: $(head -1 "$root/MANIFEST.txt")"
  grep -E '^(cuda_architectures|glibc_needed|expected_from_device):' "$root/MANIFEST.txt"
  echo "device glibc: ${glibc:-unknown}; LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "cuBLAS: ${cublas:-from ldconfig}"
  echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
} | tee -a "$summary"
missing=$(for b in "$bin"/*; do ldd "$b" 2>&1 | grep 'not found' | sed "s|^|$(basename "$b"): |"; done | sort -u)
if [[ -n $missing ]]; then
  note "FAIL libraries not found:"; echo "$missing" | tee -a "$summary"
  exit 1
fi

# gtest's closing counts: "[  PASSED  ] 3 tests.", "[  SKIPPED ] 2 tests, listed below:".
gtest_count() {  # PASSED|SKIPPED|FAILED log
  local n
  n=$(grep -E "^\[ +$1 +\] [0-9]+ tests?[,.]" "$2" | tail -1 | sed -E 's/^\[[^]]*\] ([0-9]+).*/\1/')
  echo "${n:-0}"
}
# step NAME TIMEOUT_S CMD...: runs CMD with its log in $logs/NAME.log, records a summary line.
# gpu_step: the same, but a failure is a SKIP when MAMBA_REQUIRE_GPU is not 1 (no device here).
step() { run_step FAIL "$@"; }
gpu_step() { run_step "$([[ $require == 1 ]] && echo FAIL || echo SKIP)" "$@"; }
run_step() {
  local on_error=$1 name=$2 limit=$3 s=$SECONDS rc detail= result=PASS
  shift 3
  # The whole run stays inside one device call: a step gets at most the time left.
  local left=$((deadline - (SECONDS - t0)))
  if ((left < 10)); then
    printf '%-4s %-26s not run: the %d s budget is spent\n' FAIL "$name" "$deadline" | tee -a "$summary"
    failed=1
    return 1
  fi
  ((limit > left)) && limit=$left
  timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  if [[ $rc != 0 ]]; then
    result=$on_error
    [[ $result == FAIL ]] && failed=1
  fi
  [[ $rc == 124 || $rc == 137 ]] && detail="timed out after ${limit} s"
  if grep -qE '^\[  (PASSED|FAILED)  \]' "$logs/$name.log"; then
    detail="$(gtest_count PASSED "$logs/$name.log") passed, $(gtest_count SKIPPED "$logs/$name.log") skipped, $(gtest_count FAILED "$logs/$name.log") failed $detail"
  elif [[ $rc != 0 ]]; then
    detail="${detail:-$(tail -1 "$logs/$name.log" | cut -c1-160)}"
  fi
  printf '%-4s %-26s rc=%-3s %4ds  %s\n' "$result" "$name" "$rc" $((SECONDS - s)) "$detail" | tee -a "$summary"
  return "$rc"
}

# ---- the GPU tests ----
for t in $(sed -n 's/^gpu_tests: //p' "$root/MANIFEST.txt"); do
  step "$t" "$test_timeout" env MAMBA_REQUIRE_GPU="$require" "$bin/$t" --gtest_output="xml:$logs/$t.xml"
done
if [[ ${MAMBA_BUNDLE_BENCH:-0} == 1 ]]; then
  gpu_step cuda_kernels_bench 150 "$bin/cuda_kernels_bench"
fi

# ---- the tools ----
step make-checkpoint 60 "$bin/mamba-make-checkpoint" --preset tiny --out "$work/tiny" \
  --tokenizer "$models/gpt-neox-20b/tokenizer.json"
step make-lora 60 "$bin/mamba-make-lora" --base "$work/tiny" --out "$work/tiny-lora" --rank 4
[[ -f $work/tiny/config.json ]] &&
  gpu_step cuda-bench-tiny 60 "$bin/mamba-cuda-bench" --model "$work/tiny" --label tiny --slots 8 \
    --batches 1,8 --prefill 64 --decode-steps 4

# The server on the demo model, any free ports (read back from its log).
"$bin/mamba-server" --model "$models/kjv-mamba-4x192" --device "$device" --host 127.0.0.1 --http-port 0 --grpc-port 0 --slots 8 \
  >"$logs/server.log" 2>&1 &
server_pid=$!
http= grpc=
for _ in $(seq 1 120); do
  http=$(sed -n 's/.*http: listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logs/server.log" | head -1)
  grpc=$(sed -n 's/.*grpc: listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$logs/server.log" | head -1)
  [[ -n $http && -n $grpc ]] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.5
done
if [[ -n $http && -n $grpc ]]; then
  note "server up on HTTP $http, gRPC $grpc: $(grep -i -m1 'engine' "$logs/server.log" | cut -c1-160)"
  gen=(generate "And God said" --max-tokens 12 --temperature 0)
  step client-http 60 "$bin/mamba-client" --target "http://127.0.0.1:$http" "${gen[@]}"
  step client-grpc 60 "$bin/mamba-client" --target "grpc://127.0.0.1:$grpc" "${gen[@]}"
  if cmp -s "$logs/client-http.log" "$logs/client-grpc.log" && [[ -s $logs/client-http.log ]]; then
    note "PASS HTTP and gRPC gave the same completion: $(head -c 120 "$logs/client-http.log" | tr '\n' ' ')"
  else
    note "FAIL HTTP and gRPC completions differ (or are empty)"; failed=1
  fi
  step loadgen 90 "$bin/mamba-loadgen" --target "grpc://127.0.0.1:$grpc" -c 4 -n 16 --input-len 32 \
    --output-len 16
  kill -TERM "$server_pid"
  wait "$server_pid"
  rc=$?
  server_pid=
  [[ $rc == 0 ]] && note "PASS server drained and exited 0" || { note "FAIL server exit code $rc"; failed=1; }
else
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=
  printf '%-4s %-26s %s\n' FAIL server "did not start (--device $device): $(tail -1 "$logs/server.log" | cut -c1-160)" |
    tee -a "$summary"
  failed=1
fi

note "done: $([[ $failed == 0 ]] && echo 'all passed' || echo 'FAILURES') (MAMBA_REQUIRE_GPU=$require)"
exit $failed
