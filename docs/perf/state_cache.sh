#!/usr/bin/env bash
# State cache (issue 13): the same workloads against two servers of one model, one with the
# state cache off (--state-cache-bytes 0) and one with it on (the default budget), measured in
# alternation so that both see the same host (the shared machines change speed from minute to
# minute). Workloads: multi-turn conversations (the history resent every turn), requests over
# shared prefixes, and random prompts with no reuse.
#   docs/perf/state_cache.sh [MODEL_DIR] [ROUNDS]
# MODEL_DIR defaults to the 130m bf16 preset that `mamba-bench --preset 130m --dtype bfloat16`
# writes (with tokenizer.json copied in; prompts use the 50,277 ids the tokenizer knows). Prints each run's loadgen figures and the servers' prompt-token counters.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/mamba-bench-models/130m-bfloat16}
rounds=${2:-2}
bin=./build/bin
declare -A port=([off]=18300 [on]=18310)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
for mode in off on; do
  bytes=0
  [ "$mode" = on ] && bytes=-1
  "$bin/mamba-server" --model "$model" --dtype bfloat16 --http-port "${port[$mode]}" --grpc-port -1 \
    --slots 16 --state-cache-bytes $bytes >"/tmp/state_cache.$mode.log" 2>&1 &
  pids+=($!)
done
for mode in off on; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${port[$mode]}/health" >/dev/null && break; sleep 0.3; done
done
counters() {  # prompt tokens computed by engine steps, and restored from the cache
  curl -s "http://127.0.0.1:$1/metrics" |
    awk '/^mamba_engine_prefill_tokens_total/ {c=$2} /^mamba_state_cache_tokens_reused_total/ {r=$2}
         END {printf "computed %d reused %d", c, r}'
}
run() {  # name, loadgen args...
  local name=$1
  shift
  for mode in off on; do
    local before after out
    before=$(counters "${port[$mode]}")
    out=$("$bin/mamba-loadgen" --target "http://127.0.0.1:${port[$mode]}" --api openai \
      --no-progress --vocab-size 50277 "$@")
    after=$(counters "${port[$mode]}")
    echo "$name cache $mode: TTFT median $(awk '/^TTFT/ {print $3}' <<<"$out") ms," \
      "p99 $(awk '/^TTFT/ {print $NF}' <<<"$out") ms; output $(awk '/Output token throughput/ {print $NF}' <<<"$out") tok/s;" \
      "duration $(awk '/Benchmark duration/ {print $NF}' <<<"$out") s; before [$before] after [$after]"
  done
}
for r in $(seq 1 "$rounds"); do
  echo "--- round $r"
  run "8-turn x 4 conversations, 512 new tokens/turn, c1" -c 1 -n 32 --turns 8 --input-len 512 \
    --output-len 32 --range-ratio 0 --seed "$r"
  run "64 requests, 2 shared 1024-token prefixes + 64, c8" -c 8 -n 64 --shared-prefix-len 1024 \
    --num-prefixes 2 --input-len 64 --output-len 16 --range-ratio 0 --seed "$r"
  run "no reuse, random 256-token prompts, c8" -c 8 -n 64 --input-len 256 --output-len 64 \
    --range-ratio 0 --seed "$((r + 100))"
done
