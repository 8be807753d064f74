#!/usr/bin/env bash
# MambaServe's CPU engine (mamba-bench) against llama.cpp (llama-bench, llama-batched-bench) on
# the same random-weight checkpoints, same shapes, same threads, interleaved round by round.
# docs/PERF.md, "Against llama.cpp (issue 16)", has the results and how llama.cpp was built.
#
#   docs/perf/llama_cpp_compare.sh LLAMA_BUILD_DIR [ROUNDS]
#
# LLAMA_BUILD_DIR: a CPU build of llama.cpp (its bin/ has llama-bench, llama-batched-bench);
# its source tree (LLAMA_SRC, default the build dir's parent) provides gguf-py
# and the headers for docs/perf/llama_greedy.cc. Nothing is downloaded.
# Environment (defaults in brackets):
#   MAMBA_BIN [./build/bin]           mamba-bench, mamba-generate, mamba-make-checkpoint
#   SHAPES ["130m 1.4b"]              mamba-make-checkpoint presets (mamba2-* need a llama.cpp
#                                     with arch "mamba2": the compilade/mamba2 branch)
#   KINDS ["bf16 f32 q8_0"]           llama.cpp weight types; ours runs each beside the
#                                     matching one: bfloat16, float32, and int8 beside q8_0
#   WORK [/var/tmp/mamba-gguf]        checkpoints and GGUF files (~25 GB for 1.4b)
#   OUT [/tmp/llama-cpp-compare]      raw logs and summary.md
#   THREADS [2]  PYTHON [/usr/bin/python3, needs numpy]  VERIFY [1]
# Every run holds /tmp/mamba-build.lock (shared with builds on the development machines).
set -euo pipefail

LLAMA_BUILD=$(cd "${1:?usage: $0 LLAMA_BUILD_DIR [ROUNDS]}" && pwd)
ROUNDS=${2:-3}
LLAMA_SRC=${LLAMA_SRC:-$(dirname "$LLAMA_BUILD")}
MAMBA_BIN=$(cd "${MAMBA_BIN:-./build/bin}" && pwd)
SHAPES=${SHAPES:-"130m 1.4b"}
KINDS=${KINDS:-"bf16 f32 q8_0"}
WORK=${WORK:-/var/tmp/mamba-gguf}
OUT=${OUT:-/tmp/llama-cpp-compare}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
VERIFY=${VERIFY:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TOKENIZER=$REPO/models/gpt-neox-20b/tokenizer.json
LOCK=/tmp/mamba-build.lock
mkdir -p "$WORK" "$OUT"
L=$LLAMA_BUILD/bin

# Run lengths: small models get more tokens, big ones fewer (llama.cpp's batched decode of
# Mamba is slow: 32 steps per batch size).
params() {
  case $1 in
    *130m*) TG=128; NTG=32; REPS=3; STEPS=60 ;;
    *) TG=32; NTG=32; REPS=2; STEPS=20 ;;
  esac
}

model() {  # $1 = preset; writes $WORK/<preset>-bf16 and its GGUFs
  local p=$1 d=$WORK/$1-bf16
  [[ -f $d/config.json ]] || flock $LOCK nice "$MAMBA_BIN/mamba-make-checkpoint" --out "$d" \
      --preset "$p" --dtype bfloat16 --tokenizer "$TOKENIZER"
  for t in bf16 f32 q8_0; do
    [[ -f $WORK/$p.$t.gguf ]] || flock $LOCK nice "$PYTHON" "$HERE/to_gguf.py" --gguf-py "$LLAMA_SRC/gguf-py" \
        --model "$d" --outtype $t --out "$WORK/$p.$t.gguf"
  done
}

verify() {  # $1 = preset: same token ids in, same greedy ids and log-probs out (fp32)
  local p=$1 d=$WORK/$1-check-f32 ids=510,3158,8516,30013,27287,689,253,22658,4370
  local g=$L/llama-greedy
  if [[ ! -x $g || $HERE/llama_greedy.cc -nt $g ]]; then
    local old=()
    grep -q llama_vocab_n_tokens "$LLAMA_SRC/include/llama.h" || old=(-DLLAMA_GREEDY_OLD_API)
    local lib; lib=$(dirname "$(find "$LLAMA_BUILD" -name libllama.so | head -1)")
    flock $LOCK nice g++ -O2 -std=c++17 -Wno-deprecated-declarations "${old[@]}" \
        -I"$LLAMA_SRC/include" -I"$LLAMA_SRC/ggml/include" "$HERE/llama_greedy.cc" -o "$g" \
        -L"$lib" -lllama -Wl,-rpath,"$lib"
  fi
  [[ -f $d/config.json ]] || flock $LOCK nice "$MAMBA_BIN/mamba-make-checkpoint" --out "$d" \
      --preset "$p" --dtype float32 --perturb --untied-head --seed 7 --tokenizer "$TOKENIZER"
  [[ -f $WORK/$p-check.f32.gguf ]] || flock $LOCK nice "$PYTHON" "$HERE/to_gguf.py" --gguf-py "$LLAMA_SRC/gguf-py" \
      --model "$d" --outtype f32 --out "$WORK/$p-check.f32.gguf"
  flock $LOCK "$g" "$WORK/$p-check.f32.gguf" "$THREADS" 20 $ids > "$OUT/$p-verify-llama.txt" 2>/dev/null
  flock $LOCK "$MAMBA_BIN/mamba-generate" --model "$d" --dtype float32 --threads "$THREADS" \
      --prompt-ids $ids --max-new-tokens 20 --logprobs --json --log-level warn \
      > "$OUT/$p-verify-ours.json"
  "$PYTHON" - "$OUT/$p-verify-llama.txt" "$OUT/$p-verify-ours.json" <<'EOF'
import json, re, sys
llama = open(sys.argv[1]).read()
ours = json.loads(open(sys.argv[2]).read().splitlines()[0])
theirs = [int(x) for x in re.search(r"greedy: (\S+)", llama).group(1).split(",")]
lp = {int(s): float(v) for s, v in re.findall(r"step (\d+) top5 logprobs: \d+:(\S+)", llama)}
diff = max(abs(ours["logprobs"][s] - v) for s, v in lp.items())
same = ours["ids"] == theirs
print(f"verify: greedy ids {'identical' if same else 'DIFFER'} ({len(theirs)} tokens); "
      f"chosen-token log-prob max |diff| over steps 0-2: {diff:.2e}")
sys.exit(0 if same and diff < 1e-3 else 1)
EOF
}

ours() {  # $1 preset, $2 dtype (bfloat16|float32|int8), $3 round
  params "$1"
  flock $LOCK "$MAMBA_BIN/mamba-bench" --model "$WORK/$1-bf16" --dtype "$2" --threads "$THREADS" \
      --slots 32 --prefill 512 --batches 1 8 32 --decode-steps $STEPS --no-roofline \
      --log-level warn --json "$OUT/$1-ours-$2-r$3.json" > "$OUT/$1-ours-$2-r$3.txt" 2>&1
}

theirs() {  # $1 preset, $2 kind (bf16|f32|q8_0), $3 round
  params "$1"
  local m=$WORK/$1.$2.gguf
  flock $LOCK /usr/bin/time -f "%M" -o "$OUT/$1-llama-$2-r$3-rss.txt" \
      "$L/llama-bench" -m "$m" -p 512 -n $TG -t "$THREADS" -r $REPS -o jsonl \
      > "$OUT/$1-llama-$2-r$3-bench.jsonl" 2> "$OUT/$1-llama-$2-r$3-bench.log"
  flock $LOCK "$L/llama-batched-bench" -m "$m" -c $((32 * (16 + NTG) + 64)) -b 2048 -ub 512 \
      -npp 16 -ntg $NTG -npl 1,8,32 -t "$THREADS" --output-format jsonl \
      > "$OUT/$1-llama-$2-r$3-batched.jsonl" 2> "$OUT/$1-llama-$2-r$3-batched.log"
}

for p in $SHAPES; do model "$p"; done
if [[ $VERIFY == 1 ]]; then for p in $SHAPES; do case $p in *130m*) verify "$p" ;; esac; done; fi
for r in $(seq 1 "$ROUNDS"); do
  for p in $SHAPES; do
    for k in $KINDS; do
      case $k in
        bf16) ours "$p" bfloat16 "$r" ;;
        f32) ours "$p" float32 "$r" ;;
        q8_0) ours "$p" int8 "$r" ;;
      esac
      theirs "$p" "$k" "$r"
      echo "$(date -u +%H:%M:%S) round $r $p $k done"
    done
  done
done

"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import glob, json, os, re, sys
out = sys.argv[1]
rows = {}  # (shape, who, kind) -> metric -> [values]
def add(key, metric, v):
    rows.setdefault(key, {}).setdefault(metric, []).append(v)
for f in glob.glob(os.path.join(out, "*-ours-*-r*.json")):
    shape, dtype = re.match(r"(.+)-ours-(\w+)-r\d+\.json", os.path.basename(f)).groups()
    j = json.load(open(f))
    key = (shape, "ours", {"bfloat16": "bf16", "float32": "f32", "int8": "int8"}[dtype])
    add(key, "pp512", j["prefill"]["512"]["tokens_per_s"])
    add(key, "rss", j["peak_rss_mib"])
    for b in ("1", "8", "32"):
        add(key, "b" + b, j["decode"][b]["tokens_per_s"])
for f in glob.glob(os.path.join(out, "*-llama-*-r*-bench.jsonl")):
    shape, kind = re.match(r"(.+)-llama-(\w+)-r\d+-bench\.jsonl", os.path.basename(f)).groups()
    for line in open(f):
        j = json.loads(line)
        metric = "pp512" if j["n_prompt"] else "tg"
        for v in j["samples_ts"]:
            add((shape, "llama.cpp", kind), metric, v)
for f in glob.glob(os.path.join(out, "*-llama-*-r*-rss.txt")):
    shape, kind = re.match(r"(.+)-llama-(\w+)-r\d+-rss\.txt", os.path.basename(f)).groups()
    add((shape, "llama.cpp", kind), "rss", int(open(f).read().split()[-1]) / 1024)
for f in glob.glob(os.path.join(out, "*-llama-*-r*-batched.jsonl")):
    shape, kind = re.match(r"(.+)-llama-(\w+)-r\d+-batched\.jsonl", os.path.basename(f)).groups()
    for line in open(f):
        if line.startswith("{"):
            j = json.loads(line)
            add((shape, "llama.cpp", kind), f"b{j['pl']}", j["speed_tg"])
def span(v):  # best / median / worst (samples): the host is shared, low outliers are disturbed runs
    if not v:
        return "—"
    v = sorted(v)
    med = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    return f"{v[-1]:.0f} / {med:.0f} / {v[0]:.0f} ({len(v)})"
print("tokens/s: best / median / worst (samples)")
print()
print("| shape | engine | weights | prefill 512 | decode b1 (llama-bench tg) | b1 (batched-bench) | b8 | b32 | peak RSS MiB (llama-bench) |")
print("|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows, key=lambda k: (k[0], k[1] != "ours", k[2])):
    m = rows[key]
    b1 = span(m.get("b1")) if key[1] == "ours" else span(m.get("tg"))
    b1b = "" if key[1] == "ours" else span(m.get("b1"))
    rss = f"{max(m['rss']):.0f}" if m.get("rss") else "—"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {span(m.get('pp512'))} | {b1} | {b1b} | "
          f"{span(m.get('b8'))} | {span(m.get('b32'))} | {rss} |")
EOF
