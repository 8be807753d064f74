#!/usr/bin/env bash
# Fails when a doc names a repository path that does not exist (docs drift when files move).
#
# Usage: bash tests/check_docs.sh [DOC.md ...]   (repository-relative; default: DOCS below)
# Needs only bash and awk (mawk is enough): no python3 on a Debian minbase machine.
#
# What counts as a path, per doc line (fenced ``` blocks included). Code is split into words at
# white space, '=', parentheses and quotes.
#   - a markdown link target [text](target): every target that is not a URL (scheme://, mailto:)
#     or a pure #anchor is checked, relative to the doc's folder (#anchor and "title" dropped);
#   - a word inside `inline code` or a fenced block whose first component is one of TOP_DIRS
#     (engine kernels server client proto deploy tests docs models .ci; a leading ./ is
#     dropped) or which is one of TOP_FILES (CMakeLists.txt, README.md, ...): checked relative
#     to the repository root;
#   - a word inside code starting with ../ : relative to the doc's folder, like a link.
# What is allowed without a check (clearly not a repository path):
#   - anything not starting with TOP_DIRS / TOP_FILES / ../ : URLs, /usr/..., ~/..., build
#     outputs (./build/bin/mamba-server, build-ci/...), bare file names (`engine.cc`, relative to
#     the text around them);
#   - placeholders: a word with $ < > or ..., or with an all-caps component without a dot
#     (models/NAME/config.json, FILE);
#   - a trailing :LINE or :LINE:COL, and trailing punctuation (.,;:) are dropped first.
# Globs (* ? [...]) and braces ({h,cc}) must match at least one file: `kernels/cpu/*.h`.
# A line holding the marker "check_docs: skip" is not checked (for a path a command creates).
#
# CHECK_DOCS_VERBOSE=1 lists every path checked (on stderr).
# Output: one line per missing path, "DOC:LINE: missing PATH", then a count; exit 1 if any.
set -euo pipefail
shopt -s extglob nullglob
cd "$(dirname "$0")/.."

TOP_DIRS="engine kernels server client proto deploy tests docs models .ci"
TOP_FILES="CMakeLists.txt README.md .gitignore .clang-format"
DOCS=(README.md docs/*.md client/README.md engine/cuda/README.md tests/gpu/README.md
  engine/tokenizer/PERF_NOTES.md models/*/README.md)
if (($#)); then DOCS=("$@"); fi

# Prints "LINE<TAB>KIND<TAB>WORD" for every link target (KIND link) and every word inside inline
# code or a fenced block (KIND code) of the markdown file on stdin.
extract() {
  awk '
    function words(s, n, i, w) {
      gsub(/[=()"'\'']/, " ", s)
      n = split(s, w, /[ \t]+/)
      for (i = 1; i <= n; i++) if (w[i] != "") printf "%d\tcode\t%s\n", NR, w[i]
    }
    /check_docs: skip/ { next }
    /^[ \t]*```/ { fenced = !fenced; next }
    fenced { words($0); next }
    {
      line = $0
      # Links first, then code spans (a link inside a code span is code, not a link).
      rest = line
      while (match(rest, /`[^`]+`/)) {
        words(substr(rest, RSTART + 1, RLENGTH - 2))
        rest = substr(rest, 1, RSTART - 1) " " substr(rest, RSTART + RLENGTH)
      }
      while (match(rest, /\]\([^) \t]+/)) {
        printf "%d\tlink\t%s\n", NR, substr(rest, RSTART + 2, RLENGTH - 2)
        rest = substr(rest, RSTART + RLENGTH)
      }
    }'
}

# True when the path (relative to the repository root, possibly a glob or {a,b} braces) exists.
exists() {
  local p=$1
  if [[ $p == *[{}*?[]* ]]; then
    # {a,b} -> @(a|b) (extglob), then the glob must match something.
    while [[ $p =~ ^(.*)\{([^{}]*)\}(.*)$ ]]; do
      p="${BASH_REMATCH[1]}@(${BASH_REMATCH[2]//,/|})${BASH_REMATCH[3]}"
    done
    local matches=($p)
    ((${#matches[@]} > 0))
  else
    [[ -e $p ]]
  fi
}

# Folds a/./b, a/b/../c; prints nothing when the path leaves the repository.
normalize() {
  local -a out=()
  local part
  IFS=/ read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    case $part in
      '' | .) ;;
      ..)
        ((${#out[@]})) || return 0
        unset 'out[${#out[@]}-1]'
        ;;
      *) out+=("$part") ;;
    esac
  done
  local IFS=/ lead=
  [[ $1 == /* ]] && lead=/
  echo "$lead${out[*]}"
}

is_top() {
  local first=${1%%/*} d
  if [[ $1 == */* ]]; then
    for d in $TOP_DIRS; do [[ $first == "$d" ]] && return 0; done
  else
    for d in $TOP_FILES; do [[ $1 == "$d" ]] && return 0; done
  fi
  return 1
}

missing=0
checked=0
for doc in "${DOCS[@]}"; do
  [[ -f $doc ]] || continue
  dir=$(dirname "$doc")
  while IFS=$'\t' read -r line kind word; do
    word=${word%\#*}
    # Trailing sentence punctuation, then a :LINE[:COL] suffix.
    while [[ $word == *[.,\;:] ]]; do word=${word%?}; done
    [[ $word =~ ^(.*[^:0-9]):[0-9]+(:[0-9]+)?$ ]] && word=${BASH_REMATCH[1]}
    [[ -z $word || $word == *://* || $word == mailto:* ]] && continue
    [[ $word == *[\$\<\>]* || $word == *...* ]] && continue
    [[ /$word/ =~ /[A-Z][A-Z0-9_]*/ ]] && continue
    if [[ $kind == link || $word == ../* ]]; then
      [[ $word == /* ]] && continue
      path=$(normalize "$dir/$word")
    else
      word=${word#./}
      is_top "$word" || continue
      path=$(normalize "$word")
    fi
    checked=$((checked + 1))
    [[ -n ${CHECK_DOCS_VERBOSE:-} ]] && echo "$doc:$line: checking $kind $path" >&2
    if [[ -z $path ]] || ! exists "$path"; then
      if [[ $path == "$word" ]]; then
        echo "$doc:$line: missing $word"
      else
        echo "$doc:$line: missing $word (${path:-outside the repository})"
      fi
      missing=$((missing + 1))
    fi
  done < <(extract <"$doc")
done

if ((missing)); then
  echo "check_docs: $missing of $checked paths named in the docs do not exist" >&2
  exit 1
fi
echo "check_docs: all $checked paths named in the docs exist"
