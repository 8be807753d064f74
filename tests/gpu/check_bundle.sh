#!/usr/bin/env bash
# Proves the GPU bundle self-contained, on a machine without a GPU: runs it (tests/gpu/run_bundle.sh
# on the .tar.xz) in the Docker CI's debootstrap bookworm minbase image (deploy/docker/lib.sh), where
# none of our apt dependencies and no -dev package is installed. Mounted, as the device call has
# them: the repository's models/ and tests/gpu/run_bundle.sh (the working tree), cuBLAS 13 from the
# local toolkit (the device image's CUDA 13) and xz (minbase lacks it; the device has it, or
# Python's lzma). No CUDA driver: CUDA finds no device.
#  1. MAMBA_REQUIRE_GPU=1 (as on the device): every GPU test must FAIL, and say why (no device);
#     the tools that need no GPU (make-checkpoint, make-lora) still pass;
#  2. MAMBA_REQUIRE_GPU=0, server --device auto: every step passes or skips: the GPU tests run
#     their device-free checks and skip the rest, mamba-server falls back to the CPU engine on the
#     demo model and answers the same greedy completion over HTTP and gRPC, mamba-loadgen runs.
# Usage: bash tests/gpu/check_bundle.sh [bundle.tar.xz]   (default build-gpu-bundle/mamba-gpu.tar.xz,
# made by tests/gpu/make_bundle.sh from ./build when missing). Network: --network host, 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/docker/lib.sh
bundle=$(readlink -f "${1:-build-gpu-bundle/mamba-gpu.tar.xz}")
[[ -f $bundle ]] || bash tests/gpu/make_bundle.sh build "$(dirname "$bundle")"
t_start=$SECONDS

tmp=$(mktemp -d /tmp/mamba-bundle-check.XXXXXX)
containers=()
cleanup() {
  local rc=$?
  for c in "${containers[@]}"; do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
  stop_daemon
  rm -rf "$tmp" "${LIB_TMP_DIRS[@]}"
  [ $rc -eq 0 ] && log "GPU bundle check passed in $((SECONDS - t_start)) s" ||
    log "GPU bundle check FAILED (exit $rc)"
}
trap cleanup EXIT

ensure_packages
start_daemon
ensure_base_image

# cuBLAS 13 only (what the device image provides); the driver (libcuda.so.1) is left out.
cublas_mounts=()
for l in libcublas.so.13 libcublasLt.so.13; do
  f=$(readlink -f /usr/local/cuda/lib64/$l 2>/dev/null || readlink -f /usr/local/cuda/lib/$l)
  [[ -f $f ]] || { log "no $l under /usr/local/cuda"; exit 1; }
  cublas_mounts+=(-v "$f:/usr/local/cuda/lib64/$l:ro")
done

run_bundle() {  # name env...
  local name=$1
  shift
  mkdir -p "$tmp/$name"
  containers+=("mamba-bundle-$name-$$")
  local rc=0
  # The container's own checks first: no -dev package, none of our libraries, no CUDA driver.
  "$DOCKER" run --name "mamba-bundle-$name-$$" --network host -e OUT=/out "$@" \
    -v "$bundle:/bundle/mamba-gpu.tar.xz:ro" -v "$PWD/tests/gpu/run_bundle.sh:/repo/tests/gpu/run_bundle.sh:ro" \
    -v "$PWD/models:/repo/models:ro" -v "$(command -v xz):/usr/bin/xz:ro" \
    -v "$tmp/$name:/out" "${cublas_mounts[@]}" "$BASE_IMAGE" bash -c '
      set -e
      if dpkg-query -W | cut -f1 | grep -E -- "-dev(:[a-z0-9]+)?$"; then echo "a -dev package is installed"; exit 90; fi
      for l in libgrpc++.so.1.51 libabsl_base.so.20220623 libdnnl.so.2 libspdlog.so.1.10 libcuda.so.1; do
        if ldconfig -p | grep -q "$l"; then echo "$l is installed in the image"; exit 91; fi
      done
      exec bash /repo/tests/gpu/run_bundle.sh /bundle/mamba-gpu.tar.xz' >"$tmp/$name.log" 2>&1 || rc=$?
  RC=$rc
  [[ $rc != 90 && $rc != 91 ]] || { cat "$tmp/$name.log"; log "the base image is not minimal"; exit 1; }
  [[ -f $tmp/$name/summary.txt && -f $tmp/$name/logs.tar.gz ]] ||
    { cat "$tmp/$name.log"; log "$name: no summary.txt / logs.tar.gz under \$OUT"; exit 1; }
  if grep -q 'libraries not found' "$tmp/$name/summary.txt"; then
    cat "$tmp/$name/summary.txt"; log "$name: the bundle is not self-contained"; exit 1
  fi
  mkdir -p "$tmp/$name/unpacked"
  tar -C "$tmp/$name/unpacked" -xzf "$tmp/$name/logs.tar.gz"
}
gpu_tests=$(tar -xJOf "$bundle" mamba-gpu/MANIFEST.txt | sed -n 's/^gpu_tests: //p')
[[ -n $gpu_tests ]] || { log "no gpu_tests in the bundle's MANIFEST.txt"; exit 1; }
expect() {  # summary-file regex message
  grep -qE "$2" "$1" || { cat "$1"; log "expected: $3"; exit 1; }
}

# ---- 1. as on the device: a missing GPU fails every GPU test ----
t=$SECONDS
run_bundle required -e MAMBA_REQUIRE_GPU=1
s=$tmp/required/summary.txt
cat "$s"
[[ $RC != 0 ]] || { log "run_bundle.sh passed under MAMBA_REQUIRE_GPU=1 without a GPU"; exit 1; }
for g in $gpu_tests; do
  expect "$s" "^FAIL $g " "$g fails under MAMBA_REQUIRE_GPU=1"
  grep -q 'MAMBA_REQUIRE_GPU=1' "$tmp/required/unpacked/logs/$g.log" ||
    { tail -20 "$tmp/required/unpacked/logs/$g.log"; log "$g's failure does not name MAMBA_REQUIRE_GPU=1"; exit 1; }
done
expect "$s" "^PASS make-checkpoint " "make-checkpoint passes"
expect "$s" "^PASS make-lora " "make-lora passes"
expect "$s" "^FAIL cuda-bench-tiny " "mamba-cuda-bench fails without a device"
expect "$s" "^FAIL server .*--device cuda" "mamba-server --device cuda fails without a device"
log "MAMBA_REQUIRE_GPU=1 run: every GPU test failed as it must ($((SECONDS - t)) s)"

# ---- 2. the CPU rehearsal: GPU tests skip, the server serves on the CPU engine ----
t=$SECONDS
run_bundle optional -e MAMBA_REQUIRE_GPU=0 -e MAMBA_BUNDLE_DEVICE=auto
s=$tmp/optional/summary.txt
cat "$s"
[[ $RC == 0 ]] || { tail -30 "$tmp/optional.log"; log "run_bundle.sh failed with MAMBA_REQUIRE_GPU=0"; exit 1; }
for g in $gpu_tests; do
  expect "$s" "^PASS $g .* [1-9][0-9]* skipped, 0 failed" "$g passes with its device tests skipped"
done
for step in make-checkpoint make-lora client-http client-grpc loadgen; do
  expect "$s" "^PASS $step " "$step passes"
done
expect "$s" "^SKIP cuda-bench-tiny " "mamba-cuda-bench skips without a device"
expect "$s" "PASS HTTP and gRPC gave the same completion: .*unto" "the demo model's completion"
expect "$s" "PASS server drained and exited 0" "a clean server exit"
grep -i 'engine: cpu' "$tmp/optional/unpacked/logs/server.log" | grep -qi cuda ||
  { tail -20 "$tmp/optional/unpacked/logs/server.log"; log "the server did not log its CPU fallback"; exit 1; }
log "MAMBA_REQUIRE_GPU=0 run: GPU tests skipped, server answered on the CPU engine ($((SECONDS - t)) s)"
