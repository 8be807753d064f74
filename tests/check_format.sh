#!/usr/bin/env bash
# Checks that every tracked C++/CUDA source (*.h *.cc *.cu *.cuh, models/ excepted) is formatted
# by the repository's .clang-format; prints the offending files and exits 1 if any is not.
# Fix with: git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | grep -v '^models/' | xargs clang-format -i
# Usage: bash tests/check_format.sh [clang-format binary]   (default: clang-format, v14 in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${1:-${CLANG_FORMAT:-clang-format}}
command -v "$tool" >/dev/null || { echo "check_format: $tool not found" >&2; exit 2; }
mapfile -d '' files < <(git ls-files -z -- '*.h' '*.cc' '*.cu' '*.cuh' ':!:models/**')
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue  # deleted in the work tree, not yet committed
  "$tool" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: ${#bad[@]} of ${#files[@]} files are not clang-formatted ($("$tool" --version)):"
  printf '  %s\n' "${bad[@]}"
  echo "fix: clang-format -i <file> (repository .clang-format)"
  exit 1
fi
echo "check_format: all ${#files[@]} C++/CUDA files formatted ($("$tool" --version))"
