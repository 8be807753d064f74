#!/usr/bin/env bash
# Mamba-2 against Mamba-1 of similar size on the CPU engine (issue 16): random-weight presets,
# bf16 weights, 2 threads, alternated run by run (the shared machines change speed from minute
# to minute; each family first in half the rounds), then one --profile run of each Mamba-2 shape
# for where the time goes.
#   docs/perf/mamba2.sh [ROUNDS] [PAIRS...]   pairs as mamba1:mamba2 presets
#   (default: 130m:mamba2-130m 1.4b:mamba2-1.3b)
# Prints per run and the range over rounds: prefill 512 tokens/s, decode tokens/s at batch 1 and
# 32, peak RSS; then the profiles (ms per op).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
shift || true
pairs=("$@")
[ ${#pairs[@]} -gt 0 ] || pairs=(130m:mamba2-130m 1.4b:mamba2-1.3b)
bench=./build/bin/mamba-bench
out=${MAMBA2_BENCH_OUT:-/tmp/mamba2-bench}
mkdir -p "$out"
common=(--dtype bfloat16 --threads 2 --slots 32 --prefill 512 --batches 1 32 --decode-steps 20
  --no-roofline --log-level warn)
for pair in "${pairs[@]}"; do
  a=${pair%%:*}
  b=${pair##*:}
  for r in $(seq 1 "$rounds"); do
    order=("$a" "$b")
    [ $((r % 2)) = 1 ] || order=("$b" "$a")
    for p in "${order[@]}"; do
      "$bench" --preset "$p" "${common[@]}" --json "$out/$p.$r.json" >/dev/null
    done
  done
  "$bench" --preset "$b" "${common[@]}" --profile --json "$out/$b.profile.json" >/dev/null
done
python3 - "$out" "$rounds" "${pairs[@]}" <<'PY'
import json, sys
out, rounds, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cols = [("prefill 512", lambda j: j["prefill"]["512"]["tokens_per_s"]),
        ("decode b1", lambda j: j["decode"]["1"]["tokens_per_s"]),
        ("decode b32", lambda j: j["decode"]["32"]["tokens_per_s"]),
        ("peak RSS MiB", lambda j: j["peak_rss_mib"])]
def rng(vals):
    lo, hi = min(vals), max(vals)
    return "%.0f" % lo if round(lo) == round(hi) else "%.0f-%.0f" % (lo, hi)
for pair in pairs:
    for p in pair.split(":"):
        runs = [json.load(open("%s/%s.%d.json" % (out, p, r))) for r in range(1, rounds + 1)]
        print("%-12s " % p + "  ".join("%s %s" % (n, rng([f(j) for j in runs])) for n, f in cols))
for pair in pairs:
    p = pair.split(":")[1]
    j = json.load(open("%s/%s.profile.json" % (out, p)))
    for what, key in (("prefill 512 (ms per prompt)", ("prefill", "512", "op_seconds_per_run")),
                      ("decode b1 (ms per step)", ("decode", "1", "op_seconds_per_step")),
                      ("decode b32 (ms per step)", ("decode", "32", "op_seconds_per_step"))):
        ops = j[key[0]][key[1]].get(key[2], {})
        print("%s %s: " % (p, what) + ", ".join("%s %.2f" % (k, v * 1e3) for k, v in ops.items() if v > 0))
PY
