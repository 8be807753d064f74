#!/usr/bin/env bash
# Serving overhead (issue 4): aggregate streamed tokens/s at 32 concurrent streams against the
# engine's own batch-32 decode rate, measured in alternation so that both see the same host
# (the shared development machines change speed from minute to minute).
#   docs/perf/serving_overhead.sh [MODEL_DIR] [ROUNDS]
# MODEL_DIR defaults to the 130m bf16 preset that `mamba-bench --preset 130m --dtype bfloat16`
# writes (with tokenizer.json copied in). Odd rounds use HTTP (OpenAI SSE), even ones gRPC.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/mamba-bench-models/130m-bfloat16}
rounds=${2:-4}
bin=./build/bin
http=18200 grpc=18201
"$bin/mamba-server" --model "$model" --http-port $http --grpc-port $grpc --slots 32 \
  --max-step-tokens 512 >/tmp/serving_overhead.server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.3; done
"$bin/mamba-loadgen" --target "http://127.0.0.1:$http" --api openai -c 32 -n 32 --input-len 16 \
  --output-len 64 --seed 1 >/dev/null  # warm-up
for r in $(seq 1 "$rounds"); do
  engine=$("$bin/mamba-bench" --model "$model" --slots 32 --batches 32 --prefill 16 --no-roofline \
    --decode-steps 100 2>&1 | awk '/decode batch/ {print $4}')
  if [ $((r % 2)) = 1 ]; then api=openai target=http://127.0.0.1:$http; else api=grpc target=grpc://127.0.0.1:$grpc; fi
  out=$("$bin/mamba-loadgen" --target "$target" --api $api -c 32 -n 32 --input-len 16 --output-len 384 --seed "$r")
  served=$(awk '/Output token throughput/ {print $NF}' <<<"$out")
  echo "round $r: engine batch-32 decode $engine tok/s; $api, 32 streams: $served tok/s" \
       "($(awk -v s="$served" -v e="$engine" 'BEGIN {printf "%.0f", 100 * s / e}')%);" \
       "TTFT median $(awk '/^TTFT/ {print $3}' <<<"$out") ms, TPOT median $(awk '/^TPOT/ {print $3}' <<<"$out") ms"
done
