#!/usr/bin/env bash
# Runs the GPU bundle (tests/gpu/make_bundle.sh) without CMake or CTest: every GPU test binary
# under MAMBA_REQUIRE_GPU=1 (a missing or unusable device fails, it does not skip), then smoke
# checks of the tools: mamba-make-checkpoint and mamba-make-lora write a tiny preset and adapter,
# mamba-cuda-bench times it, mamba-server serves the demo model on the GPU and answers one greedy
# completion over HTTP and over gRPC (mamba-client, the same text both ways) and a short
# mamba-loadgen run. Then (issue 18), with a GPU: the HF oracle (tests/gpu/hf_oracle.py: our CUDA
# and CPU engines against transformers + peft on tiny Mamba-1, FalconMamba, Mamba-2 checkpoints
# and a LoRA adapter), mamba-cuda-bench on the 130m, 1.4b and 2.8b bf16 presets (written in the
# background from the start; prefill 512/2048, decode b1/8/32/128/256) and mamba-server
# --device cuda on each under mamba-loadgen at concurrency 1, 32, 256 over gRPC and HTTP, and a
# results block for docs/PERF.md ("## GPU"). Every step has a timeout and the whole run a budget
# (8 minutes by default); a step the budget cannot fit is recorded as not run.
# Usage: bash tests/gpu/run_bundle.sh [build-gpu-bundle/mamba-gpu.tar.xz | bundle-dir]
# Results: $OUT/summary.txt (one line per step: PASS/FAIL/SKIP, exit code, seconds, detail; the
# environment: glibc, GPU, where cuBLAS came from; the PERF block) and $OUT/logs.tar.gz (every
# step's log, the gtest XML, the benchmarks' JSON). Env: OUT (default /tmp/mamba-gpu-out),
# MAMBA_REQUIRE_GPU (default 1; 0: a test or tool finding no device skips, for the CPU-only
# rehearsal in tests/gpu/check_bundle.sh), MAMBA_BUNDLE_DEVICE (server --device, default cuda),
# MAMBA_BUNDLE_TEST_TIMEOUT (s per test, default 240), MAMBA_BUNDLE_DEADLINE (s for the whole
# run, default 480: a step gets at most what is left, and a step left with under 10 s fails as
# not run), MAMBA_BUNDLE_BENCH=1 (also cuda_kernels_bench, ~2 min: its GEMM peak then replaces
# the nominal one in the PERF block), MAMBA_CUBLAS_DIR (where libcublas.so.13 is, if not found),
# MAMBA_BUNDLE_ONLY (the parts to run, of: tests tools oracle bench serve; default all: for a
# second, shorter device call), MAMBA_BUNDLE_PRESETS (default "130m 1.4b 2.8b").
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
only=" ${MAMBA_BUNDLE_ONLY:-tests tools oracle bench serve} "
want() { [[ $only == *" $1 "* ]]; }
declare -A ckpt_pid=()

finish() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  for pid in "${ckpt_pid[@]}"; do kill "$pid" 2>/dev/null; done
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
# Python (the HF oracle) keeps the device's own: the bundle's Debian 12 libstdc++, zlib, OpenSSL
# could shadow newer ones that PyTorch needs.
python_ld_path=${LD_LIBRARY_PATH:-}
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

# A GPU as nvidia-smi lists it. Without one (the CPU rehearsal) the issue-18 steps below are not
# run: SKIP, or FAIL under MAMBA_REQUIRE_GPU=1; they would write gigabytes for nothing.
# MAMBA_BUNDLE_HAVE_GPU=1 forces them (with MAMBA_BUNDLE_PRESETS=tiny and --device auto: a CPU
# rehearsal of these steps' plumbing).
have_gpu=0
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' && have_gpu=1
have_gpu=${MAMBA_BUNDLE_HAVE_GPU:-$have_gpu}
presets=(${MAMBA_BUNDLE_PRESETS:-130m 1.4b 2.8b})
# The bf16 presets, written in parallel in the background from the start (130m ~3 s, 2.8b about a
# minute on one core): the GPU tests run meanwhile. Each is waited for before its benchmark.
if [[ $have_gpu == 1 ]] && { want bench || want serve; }; then
  for p in "${presets[@]}"; do
    timeout -k 5 300 "$bin/mamba-make-checkpoint" --preset "$p" --dtype bfloat16 --out "$work/$p-bf16" \
      --tokenizer "$models/gpt-neox-20b/tokenizer.json" >"$logs/checkpoint-$p.log" 2>&1 &
    ckpt_pid[$p]=$!
  done
  note "writing the ${presets[*]} bf16 presets in the background"
fi

# wait_checkpoint PRESET: true once its background write succeeded (waits at most what is left).
wait_checkpoint() {
  local p=$1 pid=${ckpt_pid[$1]:-} rc
  [[ -n $pid ]] || return 1
  while kill -0 "$pid" 2>/dev/null && (($(time_left) > 10)); do sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    echo "still being written when the budget ran out" >>"$logs/checkpoint-$p.log"
  fi
  wait "$pid"
  rc=$?
  ckpt_pid[$p]=
  [[ $rc == 0 && -f $work/$p-bf16/config.json ]] && touch "$work/$p-bf16.ok"
  [[ -f $work/$p-bf16.ok ]]
}

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
# not_run NAME WHY: a step that cannot run here: FAIL under MAMBA_REQUIRE_GPU=1, else SKIP.
not_run() {
  local result=SKIP
  [[ $require == 1 ]] && { result=FAIL; failed=1; }
  printf '%-4s %-26s not run: %s\n' "$result" "$1" "$2" | tee -a "$summary"
}
# The seconds left of the budget.
time_left() { echo $((deadline - (SECONDS - t0))); }
# wait_for_ports LOG PID: sets http and grpc to the ports a server started with --http-port 0
# --grpc-port 0 logs it listens on (up to 60 s; empty if it exits or never says).
wait_for_ports() {
  http= grpc=
  for _ in $(seq 1 120); do
    http=$(sed -n 's/.*http: listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -1)
    grpc=$(sed -n 's/.*grpc: listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -1)
    [[ -n $http && -n $grpc ]] && return
    kill -0 "$2" 2>/dev/null || return
    sleep 0.5
  done
}
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
# cuda_engine_test (the CUDA engine against the CPU engine at the 130m and 1.4b shapes) runs last:
# it takes the bf16 1.4b preset the background writes (MAMBA_TEST_1P4B_CHECKPOINT) rather than
# spending ~30 s writing its own, and the other tests run meanwhile. Its "[real-shape]" lines
# (the largest logit differences, the tokens compared) go to the summary.
if want tests; then
  gpu_tests=$(sed -n 's/^gpu_tests: //p' "$root/MANIFEST.txt")
  for t in $gpu_tests; do
    [[ $t == cuda_engine_test ]] && continue
    step "$t" "$test_timeout" env MAMBA_REQUIRE_GPU="$require" "$bin/$t" --gtest_output="xml:$logs/$t.xml"
  done
  if [[ " $gpu_tests " == *" cuda_engine_test "* ]]; then
    ck_1p4b=
    if [[ -f $work/1.4b-bf16.ok ]] || wait_checkpoint 1.4b; then ck_1p4b=$work/1.4b-bf16; fi
    step cuda_engine_test "$test_timeout" env MAMBA_REQUIRE_GPU="$require" MAMBA_TEST_1P4B_CHECKPOINT="$ck_1p4b" \
      "$bin/cuda_engine_test" --gtest_output="xml:$logs/cuda_engine_test.xml"
    grep -h '^\[real-shape\]' "$logs/cuda_engine_test.log" | sed 's/^/  /' | tee -a "$summary"
  fi
fi
if [[ ${MAMBA_BUNDLE_BENCH:-0} == 1 ]]; then
  gpu_step cuda_kernels_bench 150 "$bin/cuda_kernels_bench"
fi

# ---- the tools ----
if want tools; then
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
wait_for_ports "$logs/server.log" "$server_pid"
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
fi  # tools

# ---- issue 18: the HF oracle ----
# Our engines' dumps (mamba-generate --dump-logits, fp32) against transformers + peft on the
# device's PyTorch. Seconds: tiny presets, a 12-token prompt, 16 greedy steps.
if want oracle; then
  oracle=$repo/tests/gpu/hf_oracle.py
  engines=cpu
  [[ $have_gpu == 1 || $require == 1 ]] && engines=cuda,cpu
  if [[ ! -x $bin/mamba-generate ]]; then
    not_run hf-oracle "the bundle has no mamba-generate (remake it: tests/gpu/make_bundle.sh)"
  elif [[ ! -f $oracle ]]; then
    not_run hf-oracle "no $oracle"
  elif ! why=$(LD_LIBRARY_PATH=$python_ld_path python3 -c 'import torch, transformers, peft' 2>&1); then
    not_run hf-oracle "python3 with torch, transformers and peft: $(tail -1 <<<"$why" | cut -c1-120)"
  else
    # The tools it runs get the bundle's libraries (MAMBA_TOOLS_LD_LIBRARY_PATH), Python not.
    gpu_step hf-oracle 150 env LD_LIBRARY_PATH="$python_ld_path" MAMBA_TOOLS_LD_LIBRARY_PATH="$LD_LIBRARY_PATH" \
      PYTHONUNBUFFERED=1 python3 "$oracle" --bin "$bin" --engines "$engines" --work "$work/oracle" \
      --log "$logs/hf-oracle-tools.log"
    grep -E '^(PASS|FAIL) hf-oracle ' "$logs/hf-oracle.log" | sed 's/^/  /' | tee -a "$summary"
  fi
fi

# ---- issue 18: mamba-cuda-bench on the real shapes ----
checkpoint_ok() {  # PRESET: written (waiting for it if needed), else a not-run line for STEP
  local p=$1 step=$2
  if [[ $have_gpu != 1 ]]; then
    not_run "$step" "no GPU (nvidia-smi -L lists none)"
    return 1
  fi
  [[ -f $work/$p-bf16.ok ]] && return 0
  if ! wait_checkpoint "$p"; then
    not_run "$step" "no $p checkpoint: $(tail -1 "$logs/checkpoint-$p.log" 2>/dev/null | cut -c1-120)"
    return 1
  fi
}
if want bench; then
  for p in "${presets[@]}"; do
    checkpoint_ok "$p" "cuda-bench-$p" || continue
    gpu_step "cuda-bench-$p" 120 "$bin/mamba-cuda-bench" --model "$work/$p-bf16" --label "$p" --slots 256 \
      --batches 1,8,32,128,256 --prefill 512,2048 --decode-steps 10 --json "$logs/cuda-bench-$p.json"
  done
fi

# ---- issue 18: the server on the GPU under load ----
# serve_shape PRESET [prefill]: mamba-server --device cuda on the preset (256 slots), then
# mamba-loadgen closed loops at concurrency 1, 32, 256 over gRPC (streaming: TTFT) and HTTP
# (OpenAI completions), each bounded in requests and seconds; SIGTERM and a clean exit. With
# "prefill": the server with --decode-path prefill (decode tokens as one-token prefill chunks,
# sampled on the host), gRPC at concurrency 32 only: what the decode path buys.
serve_shape() {
  local p=$1 path=${2:-auto} s=server-$1 pid http= grpc= c proto target tag= protos=(grpc http) levels=(1 32 256)
  if [[ $path == prefill ]]; then
    s=server-$p-prefill tag=-prefill protos=(grpc) levels=(32)
  fi
  if (($(time_left) < 40)); then
    not_run "$s" "under 40 s of the $deadline s budget left"
    return
  fi
  "$bin/mamba-server" --model "$work/$p-bf16" --device "$device" --host 127.0.0.1 --http-port 0 \
    --grpc-port 0 --slots 256 --max-step-tokens 4096 --max-queue 1024 --decode-path "$path" >"$logs/$s.log" 2>&1 &
  pid=$!
  server_pid=$pid
  wait_for_ports "$logs/$s.log" "$pid"
  if [[ -z $http || -z $grpc ]]; then
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    server_pid=
    printf '%-4s %-26s %s\n' FAIL "$s" "did not start (--device $device): $(tail -1 "$logs/$s.log" | cut -c1-160)" |
      tee -a "$summary"
    failed=1
    return
  fi
  # Random prompt ids below the model's vocabulary (over HTTP loadgen cannot ask the server).
  local vocab
  vocab=$(tr -d ' \n' <"$work/$p-bf16/config.json" | sed -n 's/.*"vocab_size":\([0-9]*\).*/\1/p')
  note "$s up on HTTP $http, gRPC $grpc: $(grep -m1 'engine: ' "$logs/$s.log" | sed 's/.*engine: /engine: /' | cut -c1-120)"
  for proto in "${protos[@]}"; do
    target=grpc://127.0.0.1:$grpc
    [[ $proto == http ]] && target=http://127.0.0.1:$http
    for c in "${levels[@]}"; do
      # Enough requests to hold the concurrency twice over, and at most 8 s of arrivals.
      step "loadgen-$p-$proto-c$c$tag" 45 "$bin/mamba-loadgen" --target "$target" -c "$c" -n $((c < 8 ? 16 : 2 * c)) \
        --duration 8 --input-len 128 --output-len 64 --request-timeout 30 --vocab-size "${vocab:-50280}" --no-progress --no-metrics \
        --json "$logs/loadgen-$p-$proto-c$c$tag.json"
    done
  done
  kill -TERM "$pid"
  local rc
  if timeout 30 tail --pid="$pid" -f /dev/null; then  # a drain that hangs must not eat the budget
    wait "$pid"
    rc=$?
  else
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=137
  fi
  server_pid=
  [[ $rc == 0 ]] && note "PASS $s drained and exited 0" || { note "FAIL $s exit code $rc"; failed=1; }
}
if want serve; then
  for p in "${presets[@]}"; do
    checkpoint_ok "$p" "server-$p" || continue
    serve_shape "$p"
    # The A/B against decode tokens as prefill chunks, on the smallest preset served.
    [[ $p == "${presets[0]}" ]] && serve_shape "$p" prefill
  done
fi

# ---- issue 18: the PERF block (docs/PERF.md "## GPU"), from the RESULT lines and loadgen ----
perf_block() {
  local gpu copy peak peak_src p cfg flops_tok line
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
  copy=$(sed -n 's/^D2D copy bandwidth: \([0-9.]*\) GB\/s.*/\1/p' "$logs"/cuda-bench-*.log 2>/dev/null | sort -n | tail -1)
  # The GEMM peak: cuda_kernels_bench's best bf16 GEMM when it ran, else the data sheet's dense
  # bf16 figure for an H100/H200 SXM (989 TFLOP/s).
  peak=$(sed -n 's/^RESULT kind=gemm name=gemm_bf16 .*tflops=\([0-9.]*\).*/\1/p' "$logs/cuda_kernels_bench.log" 2>/dev/null | sort -n | tail -1)
  peak_src="measured (cuda_kernels_bench)"
  [[ -z $peak ]] && { peak=989; peak_src="nominal (H100/H200 SXM dense bf16)"; }
  echo "== PERF (docs/PERF.md \"## GPU\"): device ${gpu:-?}; D2D copy ${copy:-?} GB/s; GEMM peak $peak TFLOP/s $peak_src"
  for p in "${presets[@]}"; do
    cfg=$work/$p-bf16/config.json
    [[ -f $cfg ]] || continue
    # GEMM FLOPs per prompt token: 2 x (in_proj + x_proj + dt_proj + out_proj) per layer.
    flops_tok=$(tr -d ' \n' <"$cfg" | awk -F'[,{}]' '{for (i = 1; i <= NF; i++) {split($i, kv, ":"); gsub(/"/, "", kv[1]); v[kv[1]] = kv[2]}}
      END {d = v["hidden_size"]; e = v["intermediate_size"]; n = v["state_size"]; r = v["time_step_rank"]; l = v["num_hidden_layers"];
           printf "%.0f", 2 * l * (d * 2 * e + e * (r + 2 * n) + r * e + e * d)}')
    grep -h '^RESULT kind=prefill' "$logs/cuda-bench-$p.log" 2>/dev/null | while read -r line; do
      awk -v l="$line" -v f="$flops_tok" -v pk="$peak" -v p="$p" 'BEGIN {
        n = split(l, a, " "); for (i = 1; i <= n; i++) {split(a[i], kv, "="); v[kv[1]] = kv[2]}
        printf "| %s | prefill %s | %s tok/s | %.1f %% of the GEMM floor (%.2f GFLOP/token) |\n", p, v["tokens"],
          v["tokens_per_s"], 100 * v["tokens_per_s"] * f / (pk * 1e12), f / 1e9}'
    done
    grep -h '^RESULT kind=decode' "$logs/cuda-bench-$p.log" 2>/dev/null | while read -r line; do
      awk -v l="$line" -v p="$p" 'BEGIN {
        n = split(l, a, " "); for (i = 1; i <= n; i++) {split(a[i], kv, "="); v[kv[1]] = kv[2]}
        printf "| %s | decode b%s | %s ms (host logits %s ms) | floor %s ms: %sx; %s tok/s |\n", p, v["batch"],
          v["device_sampling_step_ms"], v["step_ms"], v["floor_ms"], v["x_floor"], v["tokens_per_s"]}'
    done
    for proto in grpc http; do
      for c in 1 32 256 32-prefill; do
        line=$logs/loadgen-$p-$proto-c$c.log
        [[ -f $line ]] || continue
        printf '| %s | served %s c=%s | %s tok/s | TTFT median %s ms; failed %s |\n' "$p" "$proto" \
          "${c/-prefill/ (--decode-path prefill)}" \
          "$(sed -n 's/^Output token throughput (tok\/s): *//p' "$line")" \
          "$(awk '$1 == "TTFT" {print $3}' "$line")" "$(sed -n 's/^Failed requests: *//p' "$line")"
      done
    done
  done
}
if [[ $have_gpu == 1 ]] && { want bench || want serve; }; then
  perf_block | tee -a "$summary"
fi

note "done: $([[ $failed == 0 ]] && echo 'all passed' || echo 'FAILURES') (MAMBA_REQUIRE_GPU=$require)"
exit $failed
