#!/usr/bin/env bash
# Runs the installed tools in PREFIX with no flag naming a model (check_install.sh runs this
# with the build and source trees hidden): mamba-generate and mamba-server must both find the
# bundled demo model next to themselves and give its greedy reference text, which
# tests/integration/server_binary_test.cc checks too.
# Usage: bash run_installed.sh PREFIX
set -euo pipefail
prefix=$1
bin=$prefix/bin
# The demo model's greedy continuation of "And God said" (30 tokens), as a JSON string body.
want=' unto him, Go, and let us go.\nAnd he said unto him, Go, and say, I will not be a man of the"'
work=$(mktemp -d /tmp/mamba-installed.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

out=$("$bin/mamba-generate" --dtype float32 --json --max-new-tokens 30)
if ! grep -qF -- "$want" <<<"$out"; then
  echo "run_installed: mamba-generate gave: $out" >&2
  exit 1
fi
echo "run_installed: mamba-generate on the installed demo model: reference text"

# int8 weights through the tools' flags: the greedy text starts as fp32's, and the group size
# reaches the engine (6 is refused there, not by the flag parser).
out=$("$bin/mamba-generate" --dtype int8 --int8-group-size 64 --json --max-new-tokens 8)
if ! grep -qF -- " unto him, Go, and let us" <<<"$out"; then
  echo "run_installed: mamba-generate --dtype int8 gave: $out" >&2
  exit 1
fi
if out=$("$bin/mamba-generate" --dtype int8 --int8-group-size 6 --max-new-tokens 1 2>&1) ||
  ! grep -qF -- "multiple of 4" <<<"$out"; then
  echo "run_installed: mamba-generate --int8-group-size 6 was not refused: $out" >&2
  exit 1
fi
echo "run_installed: mamba-generate --dtype int8: reference start; a bad group size refused"

# LoRA: the installed mamba-make-lora writes a PEFT adapter (for the tiny preset's shape), and the
# installed server on the demo model refuses it at start-up, exit code 2, naming the mismatch.
"$bin/mamba-make-lora" --preset tiny --out "$work/lora-tiny" --rank 4 >/dev/null
code=0
out=$("$bin/mamba-server" --host 127.0.0.1 --http-port 0 --grpc-port 0 \
  --lora tiny="$work/lora-tiny" 2>&1) || code=$?
if [ "$code" != 2 ] || ! grep -qF -- "adapter 'tiny'" <<<"$out" ||
  ! grep -qF -- "expected [4, 192]" <<<"$out"; then
  echo "run_installed: the demo server with a misfit --lora (exit $code): $out" >&2
  exit 1
fi
echo "run_installed: mamba-make-lora wrote an adapter; a misfit --lora stops the server (exit 2)"

"$bin/mamba-server" --host 127.0.0.1 --http-port 0 --grpc-port 0 --dtype float32 \
  --ready-file "$work/ready.json" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/ready.json" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.2
done
port=$(sed -n 's/.*"http_port": *\([0-9]*\).*/\1/p' "$work/ready.json")
[ -n "$port" ] || { echo "run_installed: server not ready" >&2; cat "$work/server.log" >&2; exit 1; }
"$bin/mamba-client" --target "http://127.0.0.1:$port" health >/dev/null
body=$(curl -sS --max-time 120 "http://127.0.0.1:$port/v1/completions" \
  -H 'Content-Type: application/json' \
  -d '{"prompt": "And God said", "max_tokens": 30, "temperature": 0}')
if ! grep -qF -- "$want" <<<"$body"; then
  echo "run_installed: the installed server answered: $body" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "run_installed: mamba-server (pid $pid, port $port) served the demo model's reference text"
kill -TERM "$pid"
wait "$pid"
pid=""
