# Shared helpers for the Docker scripts: a private dockerd (its own data and exec roots, no bridge,
# no firewall rules), a debootstrap base image and a CUDA toolkit image imported from the local
# toolkit (no registry is reachable here). Source this file; it defines functions only.

DOCKER=${DOCKER:-/usr/bin/docker}
MAMBA_DOCKER_ROOT=${MAMBA_DOCKER_ROOT:-/var/tmp/mamba-docker}  # image cache, kept between runs
BASE_IMAGE=${BASE_IMAGE:-local/bookworm:12}
CUDA_IMAGE=${CUDA_IMAGE:-local/cuda-toolkit:13.0}

LIB_TMP_DIRS=()  # temporary directories made here, for the caller's EXIT trap to remove

log() { printf '[docker-ci %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

ensure_packages() {
  local missing=()
  for p in docker.io docker-compose debootstrap xz-utils; do  # xz: the GPU bundle (tests/gpu)
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# Starts dockerd in the background; sets DOCKERD_PID and DOCKER_HOST.
start_daemon() {
  mkdir -p "$MAMBA_DOCKER_ROOT/data" "$MAMBA_DOCKER_ROOT/exec"
  DOCKER_SOCK="$MAMBA_DOCKER_ROOT/docker.sock"
  rm -f "$DOCKER_SOCK"
  dockerd --data-root "$MAMBA_DOCKER_ROOT/data" --exec-root "$MAMBA_DOCKER_ROOT/exec" \
    -H "unix://$DOCKER_SOCK" --pidfile "$MAMBA_DOCKER_ROOT/dockerd.pid" \
    --bridge=none --iptables=false --ip6tables=false >"$MAMBA_DOCKER_ROOT/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$DOCKER_SOCK"
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && { log "dockerd ready (pid $DOCKERD_PID)"; return 0; }
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  log "dockerd did not start; its log:"
  tail -20 "$MAMBA_DOCKER_ROOT/dockerd.log" >&2
  return 1
}

stop_daemon() {
  if [ -n "${DOCKERD_PID:-}" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    kill "$DOCKERD_PID"
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null || true
  fi
  DOCKERD_PID=
}

# local/bookworm:12 from debootstrap (minbase), imported once and kept in the cache.
ensure_base_image() {
  "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  local rootfs
  rootfs=$(mktemp -d /var/tmp/mamba-rootfs.XXXXXX)
  LIB_TMP_DIRS+=("$rootfs")  # the caller's cleanup removes it, even when a step fails
  log "debootstrap bookworm -> $BASE_IMAGE"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# A toolkit image holding /usr/local/cuda-13.0 and the /usr/local/cuda link: what the build
# stage copies. flags=r rewrites member names only, so relative symlink targets survive
# (otherwise nvcc silently loses its headers). Libraries we never link are left out.
ensure_cuda_image() {
  "$DOCKER" image inspect "$CUDA_IMAGE" >/dev/null 2>&1 && return 0
  [ -x /usr/local/cuda/bin/nvcc ] || { log "no CUDA toolkit at /usr/local/cuda"; return 1; }
  local real
  real=$(basename "$(readlink -f /usr/local/cuda)")
  log "importing /usr/local/$real -> $CUDA_IMAGE"
  local keep=(cuda "$real/bin" "$real/include" "$real/nvvm" "$real/lib64" "$real/targets"
              "$real/lib/cmake" "$real/lib/stubs")
  local f
  for f in /usr/local/"$real"/lib/{libcublas,libcudart,libcudadevrt,libculibos,libnvJitLink}*; do
    [ -e "$f" ] && keep+=("${f#/usr/local/}")
  done
  tar -C /usr/local -c --transform 'flags=r;s,^,usr/local/,' "${keep[@]}" |
    "$DOCKER" import - "$CUDA_IMAGE" >/dev/null
}
