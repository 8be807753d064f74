#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds the CUDA engine for sm_90, runs every ctest `gpu` test,
# the kernel benchmarks and the engine benchmarks (130m, 1.4b, 2.8b and mamba2-130m random-weight
# presets in bfloat16; 130m and 1.4b also with int8 weights quantized at load), and prints a short
# table: kernel bandwidth against the device-to-device copy bandwidth, decode step time at batch
# 1/8/64/256, prefill tokens/s for a 2048-token prompt, and the 130m's rate under rank-8 LoRA
# adapters against the base model's (prefill 512; one-token steps at batch 1 and 32 over 4).
# Bounded to fit ~8 minutes on an H100/H200 with 16 cores (every step has a timeout).
# Usage: bash tests/gpu/run_all.sh [build-dir]      (default build-gpu; logs in <build>/gpu-results)
# Env: MAMBA_CUDA_ARCHITECTURES (default 90), MAMBA_GPU_MODELS (default /tmp/mamba-gpu-models).
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-gpu}
arch=${MAMBA_CUDA_ARCHITECTURES:-90}
models=${MAMBA_GPU_MODELS:-/tmp/mamba-gpu-models}
jobs=$(nproc)
res=$build/gpu-results
t0=$SECONDS
log() { printf '[run_all %4ds] %s\n' $((SECONDS - t0)) "$*"; }
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || log "nvidia-smi not found"

# ---- configure ----
mkdir -p "$res" "$models"
log "configure ($arch)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMAMBA_CUDA=ON \
  -DMAMBA_CUDA_ARCHITECTURES="$arch" >"$res/configure.log" 2>&1 || { tail -20 "$res/configure.log"; exit 1; }

# ---- checkpoints, written in the background while the rest builds ----
log "build mamba-make-checkpoint"
cmake --build "$build" -j"$jobs" --target mamba-make-checkpoint >"$res/build.log" 2>&1 || { tail -30 "$res/build.log"; exit 1; }
presets=(130m 1.4b 2.8b mamba2-130m)
pids=()
for p in "${presets[@]}"; do
  dir=$models/$p-bf16
  if [[ -f $dir/config.json ]]; then continue; fi
  (timeout 300 "$build/bin/mamba-make-checkpoint" --preset "$p" --dtype bfloat16 --out "$dir.tmp" >"$res/checkpoint-$p.log" 2>&1 &&
    rm -rf "$dir" && mv "$dir.tmp" "$dir") &
  pids+=($!)
done

log "build engine, tests and benchmarks (-j$jobs)"
# Every test labelled gpu (each named after its binary): what ctest -L gpu runs below.
mapfile -t gpu_tests < <(ctest --test-dir "$build" -N -L '^gpu$' | sed -n 's/^ *Test *#[0-9]*: //p')
if ! cmake --build "$build" -j"$jobs" --target "${gpu_tests[@]}" cuda_kernels_bench mamba-cuda-bench >>"$res/build.log" 2>&1; then
  tail -40 "$res/build.log"
  exit 1
fi

log "ctest -L gpu"
# MAMBA_REQUIRE_GPU=1: a test that finds no usable device fails instead of skipping.
if ! MAMBA_REQUIRE_GPU=1 timeout 300 ctest --test-dir "$build" -L gpu --output-on-failure --timeout 240 >"$res/ctest.log" 2>&1; then
  status=1
  grep -E 'FAILED|Failure|Expected|got .* want|error' "$res/ctest.log" | head -40
fi
grep -E 'tests passed|Passed|Failed|\*\*\*' "$res/ctest.log" | tail -6

log "kernel benchmarks"
timeout 120 "$build/bin/cuda_kernels_bench" >"$res/kernels.log" 2>&1 || { status=1; tail -5 "$res/kernels.log"; }

log "waiting for checkpoints"
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for p in "${presets[@]}"; do
  dir=$models/$p-bf16
  if [[ ! -f $dir/config.json ]]; then
    log "no checkpoint for $p"; tail -3 "$res/checkpoint-$p.log"; status=1; continue
  fi
  log "engine benchmark $p"
  timeout 150 "$build/bin/mamba-cuda-bench" --model "$dir" --label "$p" --slots 256 --batches 1,8,64,256 \
    --prefill 2048 --decode-steps 10 --json "$res/engine-$p.json" >"$res/engine-$p.log" 2>&1 ||
    { status=1; tail -5 "$res/engine-$p.log"; }
done
# int8 weights (issue 17): the bf16 checkpoints quantized at load, one scale per row.
for p in 130m 1.4b; do
  dir=$models/$p-bf16
  [[ -f $dir/config.json ]] || continue
  log "engine benchmark $p int8"
  timeout 150 "$build/bin/mamba-cuda-bench" --model "$dir" --label "$p-int8" --dtype int8 --slots 256 \
    --batches 1,8,64,256 --prefill 2048 --decode-steps 10 --json "$res/engine-$p-int8.json" \
    >"$res/engine-$p-int8.log" 2>&1 || { status=1; tail -5 "$res/engine-$p-int8.log"; }
done
# LoRA (issue 15): 130m, rank 8 on in_proj, x_proj, out_proj, embeddings, against the base model
# (one-token steps go through Prefill, as the engine runs decodes under adapters).
if [[ -f $models/130m-bf16/config.json ]]; then
  log "engine benchmark 130m LoRA r8"
  timeout 120 "$build/bin/mamba-cuda-bench" --model "$models/130m-bf16" --label 130m-lora --slots 64 \
    --batches 1,32 --prefill 512 --decode-steps 10 --lora-rank 8 --json "$res/engine-130m-lora.json" \
    >"$res/engine-130m-lora.log" 2>&1 || { status=1; tail -5 "$res/engine-130m-lora.log"; }
fi

# ---- summary ----
results() { cat "$res"/kernels.log "$res"/engine-*.log 2>/dev/null | grep '^RESULT '; }
val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
echo
echo "== device-to-device copy: $(results | grep 'kind=copy' | val gbps) GB/s (read + write)"
echo "== kernels (bandwidth vs copy)"
printf '%-22s %-26s %10s %8s %8s\n' kernel shape us GB/s '%copy'
results | grep 'kind=kernel' | while read -r line; do
  printf '%-22s %-26s %10s %8s %8s\n' "$(val name <<<"$line")" "$(val shape <<<"$line")" \
    "$(val us <<<"$line")" "$(val gbps <<<"$line")" "$(val pct_of_copy <<<"$line")"
done
echo "== decode step, bfloat16 and int8 (*-int8) weights (ms; 'host' copies [batch, vocab] logits to the host as Backend::Decode does, 'device' samples greedily on the GPU)"
printf '%-6s %6s %10s %10s %10s %8s %12s\n' model batch host_ms device_ms floor_ms x_floor tokens/s
results | grep 'kind=decode' | while read -r line; do
  printf '%-6s %6s %10s %10s %10s %8s %12s\n' "$(val model <<<"$line")" "$(val batch <<<"$line")" \
    "$(val step_ms <<<"$line")" "$(val device_sampling_step_ms <<<"$line")" "$(val floor_ms <<<"$line")" \
    "$(val x_floor <<<"$line")" "$(val tokens_per_s <<<"$line")"
done
echo "== prefill, 2048-token prompt"
results | grep 'kind=prefill' | while read -r line; do
  printf '%-6s %10s tokens/s (%s s)\n' "$(val model <<<"$line")" "$(val tokens_per_s <<<"$line")" "$(val seconds <<<"$line")"
done
echo "== LoRA r8 (130m): rate with adapters as % of the base model's (same path)"
results | grep -E 'kind=lora_(prefill|step)' | while read -r line; do
  printf '%-13s %-12s %8s%%\n' "$(val kind <<<"$line")" "tokens/batch=$(val tokens <<<"$line")$(val batch <<<"$line")" \
    "$(val lora_rate_pct <<<"$line")"
done
echo "== goals"
b1=$(results | grep 'kind=decode model=2.8b batch=1 ' | val x_floor)
echo "2.8b decode batch 1 within 1.5x of the weight-read floor: ${b1:-?}x"
echo "scan/conv at >= 50% of copy bandwidth on 2048-token prompts:" \
  "$(results | grep -E 'name=(selective_scan|causal_conv) shape=[^ ]*_T2048_chunks1' | sed 's/.*name=\([^ ]*\) shape=\([^ ]*\).* pct_of_copy=\([^ ]*\).*/\2 \1 \3%/' | tr '\n' ';')"
s1=$(results | grep 'kind=decode model=130m batch=1 ' | val tokens_per_s)
s256=$(results | grep 'kind=decode model=130m batch=256 ' | val tokens_per_s)
if [[ -n $s1 && -n $s256 ]]; then
  echo "130m batch-256 tokens/s over batch 1 (>= 30x): $(awk -v a="$s256" -v b="$s1" 'BEGIN{printf "%.1fx", a/b}')"
fi
log "done (exit $status); logs in $res"
exit $status
