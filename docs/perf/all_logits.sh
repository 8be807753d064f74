#!/usr/bin/env bash
# Prompt log-probs (issue 14): do requests that do not ask for logits at every position pay for
# the ability? The engine before it (574bea9^, built outside the repository) and now, on the same
# shape, alternated round by round (the shared machines change speed from minute to minute);
# then what asking costs (mamba-bench --all-logits: the same prefill with logits at every
# position).
#   git worktree add /tmp/old_574 574bea9^ && cmake -S /tmp/old_574 -B /tmp/old_574/build -G Ninja \
#     -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/old_574/build --target mamba-bench
#   docs/perf/all_logits.sh /tmp/old_574/build/bin/mamba-bench [ROUNDS] [PRESET]
# Prints per run and the medians: prefill 512 tokens/s, decode tokens/s at batch 1, 8 and 32 (and
# for "now" the prefill 512 tokens/s with logits at every position).
set -euo pipefail
cd "$(dirname "$0")/../.."
old=${1:?the mamba-bench of 574bea9^}
rounds=${2:-3}
preset=${3:-130m}
new=./build/bin/mamba-bench
common=(--preset "$preset" --dtype bfloat16 --threads 2 --slots 32 --prefill 512 --batches 1 8 32
  --decode-steps 40 --no-roofline --log-level warn)
run() {  # $1 label, $2 round
  if [ "$1" = before ]; then
    "$old" "${common[@]}" --json "/tmp/all_logits.before.$2.json" >/dev/null
  else
    "$new" "${common[@]}" --all-logits --json "/tmp/all_logits.now.$2.json" >/dev/null
  fi
}
for r in $(seq 1 "$rounds"); do  # ABBA: each build first in half the rounds
  if [ $((r % 2)) = 1 ]; then run before "$r"; run now "$r"; else run now "$r"; run before "$r"; fi
done
python3 - "$rounds" <<'PY'
import json, statistics, sys
rounds = int(sys.argv[1])
def load(label):
    return [json.load(open("/tmp/all_logits.%s.%d.json" % (label, r))) for r in range(1, rounds + 1)]
def row(label, runs):
    cols = [("prefill512", lambda j: j["prefill"]["512"]["tokens_per_s"])]
    cols += [("decode b%s" % b, lambda j, b=b: j["decode"][b]["tokens_per_s"]) for b in ("1", "8", "32")]
    if "all_logits_seconds" in runs[0]["prefill"]["512"]:
        cols.append(("prefill512 all-logits", lambda j: 512 / j["prefill"]["512"]["all_logits_seconds"]))
    for r, j in enumerate(runs, 1):
        print("%-6s round %d  " % (label, r) + "  ".join("%s %.1f" % (n, f(j)) for n, f in cols))
    print("%-6s median   " % label + "  ".join("%s %.1f" % (n, statistics.median(f(j) for j in runs)) for n, f in cols))
row("before", load("before"))
row("now", load("now"))
PY
