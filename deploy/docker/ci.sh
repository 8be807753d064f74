#!/usr/bin/env bash
# Builds and tests the Docker images for real, on this machine (called from .ci/run):
#  - CPU image: run it, wait for health, a generate request over HTTP and over gRPC with the
#    client tools inside the image, a short bounded load test from the compose load-generator
#    service, then `docker stop` and check the exit was a clean drain within the timeout;
#  - CUDA image: compile and link; at start it must fall back to the CPU engine (no GPU here)
#    and say so in its log;
#  - report the image sizes.
# Only 127.0.0.1 is contacted (--network host, server bound to 127.0.0.1). Every container,
# the daemon and temporary directories are removed at the end, even when a step fails; the
# image cache in $MAMBA_DOCKER_ROOT (default /var/tmp/mamba-docker) is kept to speed up reruns.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/docker/lib.sh

tmp=$(mktemp -d /tmp/mamba-docker-ci.XXXXXX)
containers=()
cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
  if [ -n "${COMPOSE_PROJECT:-}" ]; then
    docker-compose -p "$COMPOSE_PROJECT" -f deploy/docker-compose.yml -f deploy/docker-compose.ci.yml \
      down --remove-orphans >/dev/null 2>&1 || true
  fi
  stop_daemon
  rm -rf "$tmp" "${LIB_TMP_DIRS[@]}"
  [ $rc -eq 0 ] && log "docker CI passed" || log "docker CI FAILED (exit $rc)"
}
trap cleanup EXIT

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    ss -ltn "sport = :$p" | grep -q LISTEN || { echo "$p"; return 0; }
  done
  return 1
}

build() {  # target tag
  log "building $2 (target $1)"
  local t0=$SECONDS
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host -f deploy/Dockerfile --target "$1" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg CUDA_IMAGE="$CUDA_IMAGE" \
    --progress plain -t "$2" . >"$tmp/build-$1.log" 2>&1 || { tail -40 "$tmp/build-$1.log"; return 1; }
  log "built $2 in $((SECONDS - t0)) s"
}

wait_healthy() {  # container timeout_s
  local state
  for _ in $(seq 1 "$2"); do
    state=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || echo gone)
    [ "$state" = healthy ] && return 0
    [ "$state" = gone ] && break
    if [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$1")" != true ]; then break; fi
    sleep 1
  done
  log "$1 not healthy (state: $state); its log:"
  "$DOCKER" logs --tail 30 "$1" >&2 || true
  return 1
}

# Starts an image bound to 127.0.0.1 on free ports; sets CTR, HTTP_PORT, GRPC_PORT.
run_server() {  # image name [env...]
  HTTP_PORT=$(free_port)
  GRPC_PORT=$(free_port)
  CTR="$2-$$"
  containers+=("$CTR")
  shift 2
  "$DOCKER" run -d --name "$CTR" --network host -e MAMBA_HOST=127.0.0.1 \
    -e MAMBA_HTTP_PORT="$HTTP_PORT" -e MAMBA_GRPC_PORT="$GRPC_PORT" -e MAMBA_DRAIN_TIMEOUT=20 \
    "$@" "$IMAGE" >/dev/null
}

# SIGTERM (docker stop) while a long stream is in flight, from a separate client container: the
# stream must run to its end (all tokens, finish "length"), the server must log a clean drain
# (not the drain timeout) and exit 0 well within MAMBA_DRAIN_TIMEOUT.
DRAIN_TOKENS=8000  # ~6 s on 2 cores: the stream is still running when the stop comes
stop_and_check_drain() {  # container image
  local client="$1-client"
  containers+=("$client")
  "$DOCKER" run -d --name "$client" --network host --entrypoint mamba-client "$2" \
    --target "http://127.0.0.1:$HTTP_PORT" generate "In the beginning" --max-tokens "$DRAIN_TOKENS" \
    --ignore-eos --temperature 0 --stats >/dev/null
  local running=0
  for _ in $(seq 1 100); do  # until the stream is running (bounded: 10 s)
    if curl -sf -o "$tmp/metrics.txt" "http://127.0.0.1:$HTTP_PORT/metrics" &&
       grep -q '^mamba_running_requests [1-9]' "$tmp/metrics.txt"; then
      running=1
      break
    fi
    sleep 0.1
  done
  [ $running = 1 ] || { log "the drain-test stream never started"; "$DOCKER" logs "$client" >&2; return 1; }
  local t0=$SECONDS
  "$DOCKER" stop -t 40 "$1" >/dev/null
  local took=$((SECONDS - t0)) code client_code
  code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$1")
  client_code=$(timeout 30 "$DOCKER" wait "$client" || echo timeout)
  log "$1 stopped in $took s with exit code $code; the in-flight stream's client exited $client_code"
  [ "$code" = 0 ] || { "$DOCKER" logs --tail 30 "$1" >&2; return 1; }
  [ "$took" -lt 20 ] || { log "the drain took $took s, not under MAMBA_DRAIN_TIMEOUT (20 s)"; return 1; }
  "$DOCKER" logs "$1" >"$tmp/$1.log" 2>&1
  grep -q "drained" "$tmp/$1.log" || { log "no clean drain in the log"; tail -30 "$tmp/$1.log" >&2; return 1; }
  ! grep -q "drain timeout" "$tmp/$1.log" || { log "the drain timed out"; return 1; }
  "$DOCKER" logs "$client" >"$tmp/drain-client.txt" 2>&1
  [ "$client_code" = 0 ] && grep -qE "[[ ]$DRAIN_TOKENS generated tokens, finish: length" "$tmp/drain-client.txt" ||
    { log "the in-flight stream did not finish whole:"; tail -c 600 "$tmp/drain-client.txt" >&2; return 1; }
}

ensure_packages
start_daemon
ensure_base_image
ensure_cuda_image

# ---- CPU image ----
build runtime-cpu mamba-serve:cpu
IMAGE=mamba-serve:cpu run_server mamba-serve:cpu mamba-ci-cpu
wait_healthy "$CTR" 180
log "healthy; HTTP $HTTP_PORT, gRPC $GRPC_PORT"
"$DOCKER" exec "$CTR" mamba-client --target "http://127.0.0.1:$HTTP_PORT" generate "And God said" \
  --max-tokens 12 --temperature 0 | tee "$tmp/http.txt"
grep -q "unto" "$tmp/http.txt"
"$DOCKER" exec "$CTR" mamba-client --target "grpc://127.0.0.1:$GRPC_PORT" generate "And God said" \
  --max-tokens 12 --temperature 0 | tee "$tmp/grpc.txt"
cmp -s "$tmp/http.txt" "$tmp/grpc.txt" || { log "HTTP and gRPC answers differ"; exit 1; }
# The compose file's load-generator service, bounded, against the running server.
COMPOSE_PROJECT="mambaci$$"
MAMBA_IMAGE=mamba-serve:cpu MAMBA_HTTP_PORT=$HTTP_PORT MAMBA_GRPC_PORT=$GRPC_PORT \
  docker-compose -p "$COMPOSE_PROJECT" -f deploy/docker-compose.yml -f deploy/docker-compose.ci.yml \
  run --rm --no-deps loadgen | tee "$tmp/loadgen.txt"
grep -qi "successful requests" "$tmp/loadgen.txt"
stop_and_check_drain "$CTR" mamba-serve:cpu

# ---- CUDA image: builds, links, and falls back to the CPU engine here ----
build runtime-cuda mamba-serve:cuda
IMAGE=mamba-serve:cuda run_server mamba-serve:cuda mamba-ci-cuda
wait_healthy "$CTR" 180
"$DOCKER" logs "$CTR" 2>&1 | grep -i "engine: cpu" | grep -qi "cuda" ||
  { log "the CUDA image did not log its CPU fallback"; "$DOCKER" logs "$CTR" >&2; exit 1; }
log "CUDA image fell back to the CPU engine: $("$DOCKER" logs "$CTR" 2>&1 | grep -i 'engine: cpu' | head -1)"
stop_and_check_drain "$CTR" mamba-serve:cuda

"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep mamba-serve | sed 's/^/image size: /'
