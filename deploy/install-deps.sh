#!/usr/bin/env bash
# Installs the Debian 12 packages MambaServe needs to build and test. Idempotent; run as root
# (or with sudo available). Used by the README's first command and by .ci/run.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc grpc-proto
  libabsl-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libboost-dev libssl-dev libdnnl-dev ocl-icd-opencl-dev
  libpcre2-dev libutf8proc-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl gnuplot-nox ccache
  clang-format  # tests/check_format.sh (v14, the version the tree is formatted with)
  clang libclang-rt-14-dev  # the libFuzzer targets (tests/fuzz)
)
# Extra packages for special builds (e.g. ccache in the Docker build stage).
read -r -a extra <<<"${MAMBA_EXTRA_PACKAGES:-}"
packages+=("${extra[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
