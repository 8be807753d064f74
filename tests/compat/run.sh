#!/usr/bin/env bash
# The client-library compatibility test (ctest: compat_test, label compat): installs the pinned
# packages of package-lock.json with `npm ci` into BUILD_DIR/compat (again only when the lockfile
# changes) and runs compat.test.mjs with Node's test runner against a mamba-server it starts.
# Exit 77 (ctest's SKIP_RETURN_CODE) with the reason when Node >= 20 or npm is missing, or the
# npm registry cannot be reached; MAMBA_REQUIRE_COMPAT=1 turns those skips into failures.
# Usage: run.sh SOURCE_DIR BUILD_DIR SERVER_BINARY
set -uo pipefail
src=$1 build=$2 server=$3
here="$src/tests/compat"
skip() {
  echo "SKIPPED: $*" >&2
  if [ "${MAMBA_REQUIRE_COMPAT:-0}" = 1 ]; then exit 1; fi
  exit 77
}
command -v node >/dev/null || skip "node is not installed (the compatibility test needs Node >= 20 and npm)"
command -v npm >/dev/null || skip "npm is not installed (the compatibility test needs Node >= 20 and npm)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $(node --version) is too old (the compatibility test needs Node >= 20)"

dir="$build/compat"
mkdir -p "$dir"
if ! cmp -s "$here/package-lock.json" "$dir/package-lock.json" || [ ! -d "$dir/node_modules" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$dir/"
  if ! (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error); then
    rm -f "$dir/package-lock.json"
    skip "npm ci failed (is the npm registry reachable?)"
  fi
fi
cp "$here/compat.test.mjs" "$here/health.proto" "$dir/"
cd "$dir" || exit 1
MAMBA_SERVER="$server" MAMBA_SOURCE_DIR="$src" exec node --test --test-reporter=spec compat.test.mjs
