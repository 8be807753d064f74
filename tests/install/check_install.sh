#!/usr/bin/env bash
# Tests `cmake --install`: installs a built tree to a temporary prefix, then runs the installed
# tools with the build tree and the source tree out of sight (run_installed.sh): the server must
# find the bundled demo model relative to its own location and give the model's reference text.
# Hiding: as root, a private mount namespace with empty tmpfs over both trees (nothing is moved);
# otherwise (or with MAMBA_INSTALL_CHECK_HIDE=mv) the build tree is renamed for the duration and
# put back on exit.
# Usage: bash tests/install/check_install.sh [build-dir]   (default: build; must be built)
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
build=$(realpath "${1:-build}")
tmp=$(mktemp -d /tmp/mamba-install-check.XXXXXX)
prefix=$tmp/prefix
moved=""
cleanup() {
  local rc=$?
  [ -n "$moved" ] && mv "$moved" "$build"
  rm -rf "$tmp"
  [ $rc -eq 0 ] && echo "check_install: passed" || echo "check_install: FAILED (exit $rc)"
}
trap cleanup EXIT

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
echo "check_install: installed $(find "$prefix" -type f | wc -l) files into $prefix:"
ls "$prefix/bin" | sed 's/^/  bin\//'
find "$prefix/share" -maxdepth 3 -mindepth 3 | sed "s|^$prefix/|  |"
# No binary may name the source or build tree's model directory.
for b in "$prefix"/bin/*; do
  if grep -aqF -e "$src/models" -e "$build/share" "$b"; then
    echo "check_install: $b names a build or source path:" >&2
    grep -aoF -e "$src/models" -e "$build/share" "$b" | sort -u >&2
    exit 1
  fi
done

cp tests/install/run_installed.sh "$tmp/"
if [ "${MAMBA_INSTALL_CHECK_HIDE:-}" != mv ] && [ "$(id -u)" -eq 0 ] &&
  unshare --mount true 2>/dev/null; then
  echo "check_install: hiding $src and $build (tmpfs in a private mount namespace)"
  hide="mount -t tmpfs none '$src'"
  case "$build" in "$src"/*) ;; *) hide="$hide && mount -t tmpfs none '$build'" ;; esac
  unshare --mount --propagation private bash -c \
    "set -e; $hide; cd /; exec bash '$tmp/run_installed.sh' '$prefix'"
else
  echo "check_install: renaming $build for the duration (the source tree stays)"
  moved="$build.hidden-by-check-install"
  mv "$build" "$moved"
  (cd / && bash "$tmp/run_installed.sh" "$prefix")
fi
