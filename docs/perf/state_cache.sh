#!/usr/bin/env bash
# State cache and sessions (issue 13): the same workloads against servers of one model, measured
# in alternation so that all see the same host (the shared machines change speed from minute to
# minute):
#   off   --state-cache-bytes 0 --session-bytes 0
#   on    the defaults (state cache on; sessions on); also used for the --session runs
#   cost  --state-cache-bytes $SMALL --state-cache-policy cost   (eviction under pressure)
#   lru   --state-cache-bytes $SMALL --state-cache-policy lru
# Workloads: multi-turn conversations (history resent, or on a session: only the new text),
# requests over shared prefixes, random prompts with no reuse.
#   docs/perf/state_cache.sh [MODEL_DIR] [ROUNDS] [SMALL_BYTES]
# MODEL_DIR: the 130m bf16 preset (`mamba-make-checkpoint --preset 130m --dtype bfloat16 --out
# DIR`, GPT-NeoX tokenizer.json copied in; prompts use the 50,277 ids the tokenizer knows).
# Prints one line per run: TTFT p50/p99, TTFT p50 at turn 1 and at the last turn, output
# throughput, duration, and the server's prompt tokens computed and reused during the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/m130}
rounds=${2:-1}
small=${3:-$((32 << 20))}
bin=./build/bin
declare -A port=([off]=18300 [on]=18310 [cost]=18320 [lru]=18330)
declare -A flags=([off]="--state-cache-bytes 0 --session-bytes 0" [on]=""
  [cost]="--state-cache-bytes $small --state-cache-policy cost"
  [lru]="--state-cache-bytes $small --state-cache-policy lru")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
for mode in off on cost lru; do
  # shellcheck disable=SC2086
  "$bin/mamba-server" --model "$model" --dtype bfloat16 --http-port "${port[$mode]}" --grpc-port -1 \
    --slots 16 ${flags[$mode]} >"/tmp/state_cache.$mode.log" 2>&1 &
  pids+=($!)
done
for mode in off on cost lru; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${port[$mode]}/health" >/dev/null && break; sleep 0.3; done
done
summary() {  # the loadgen JSON -> one line
  python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
turns = j.get("ttft_by_turn", [])
srv = j.get("server_metrics", {})
def fig(k):
    v = srv.get(k)
    return "n/a" if v is None else "%d" % v
def turn(t):
    return "%.0f" % t["median_ttft_ms"]
by_turn = " | turn 1 p50 %s ms, turn %d p50 %s ms" % (turn(turns[0]), len(turns), turn(turns[-1])) if turns else ""
print("TTFT p50 %.0f ms p99 %.0f ms%s | %.1f tok/s | %.1f s | computed %s reused %s | ok %d failed %d" % (
    j["median_ttft_ms"], j.get("p99_ttft_ms", 0), by_turn, j["output_throughput"], j["duration"],
    fig("prompt_tokens_computed"), fig("state_cache_tokens_reused"), j["completed"], j["failed"]))
' "$1"
}
run() {  # name, mode, loadgen args...
  local name=$1 mode=$2
  shift 2
  "$bin/mamba-loadgen" --target "http://127.0.0.1:${port[$mode]}" --api openai --no-progress \
    --vocab-size 50277 --json /tmp/state_cache.run.json "$@" >/tmp/state_cache.run.txt
  echo "$name [$mode${session:+ session}]: $(summary /tmp/state_cache.run.json)"
}
for r in $(seq 1 "$rounds"); do
  echo "--- round $r ($(date -u +%H:%M))"
  # Every run on one server gets its own seed: a run must not hit what an earlier one cached.
  s=$((10 * r))
  conv=(--turns 8 --input-len 512 --output-len 32 --range-ratio 0)
  for mode in off on; do run "8-turn conversations, c1" $mode -c 1 -n 32 "${conv[@]}" --seed $((s + 1)); done
  session=1 run "8-turn conversations, c1" on -c 1 -n 32 "${conv[@]}" --seed $((s + 2)) --session
  for mode in off on cost lru; do
    run "8-turn conversations, c8" $mode -c 8 -n 64 "${conv[@]}" --seed $((s + 3))
  done
  session=1 run "8-turn conversations, c8" on -c 8 -n 64 "${conv[@]}" --seed $((s + 4)) --session
  shared=(-c 8 -n 64 --shared-prefix-len 1024 --num-prefixes 2 --input-len 64 --output-len 16
    --range-ratio 0 --seed $((s + 5)))
  for mode in off on cost lru; do run "64 requests, 2 shared 1024-token prefixes + 64, c8" $mode "${shared[@]}"; done
  for mode in off on; do
    run "no reuse, random 256-token prompts, c8" $mode -c 8 -n 64 --input-len 256 --output-len 64 \
      --range-ratio 0 --seed $((s + 6))
  done
done
for mode in on cost lru; do
  echo "$mode server: $(curl -s "http://127.0.0.1:${port[$mode]}/metrics" |
    grep -E '^mamba_state_(cache_(evictions|entries|bytes)|restore_seconds_(sum|count)|snapshot_seconds_(sum|count))' |
    tr '\n' ' ')"
done
