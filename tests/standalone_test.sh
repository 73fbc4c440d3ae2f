#!/usr/bin/env bash
# standalone_test.sh [REPO]: the tree must stand on its own. Fails if any tracked file refers to
# material outside the repository: a "../shared" path, "shared/reference" or "shared/scripts",
# or an absolute path under /work/. What the code needs from outside belongs in docs/ (see
# docs/format.md, docs/dlm.md); temporary files belong under /tmp or a mktemp directory.
#
# REPO defaults to the checkout this script lives in. Prints every offending FILE:LINE with the
# line, and exits 1 if there is any, 0 if there is none, 77 (skip) when REPO is not a git
# checkout or git is missing. This file itself is not searched (it has to spell the patterns).
set -u

repo=${1:-"$(dirname "$0")/.."}
if ! command -v git >/dev/null 2>&1; then
  echo "standalone_test: git is not installed; skipping" >&2
  exit 77
fi
if ! top=$(git -C "$repo" rev-parse --show-toplevel 2>/dev/null); then
  echo "standalone_test: $repo is not a git checkout; skipping" >&2
  exit 77
fi
cd "$top" || exit 2
self=$(realpath "$0")

# One extended regex per rule. "/work/" counts only as the start of an absolute path, i.e. not
# preceded by a character that could belong to a longer path ("a/work/" or "~/work/" are fine).
patterns=(
  '\.\./shared\b'
  'shared/reference'
  'shared/scripts'
  '(^|[^][A-Za-z0-9_.~/$@{}-])/work/'
)
args=()
for p in "${patterns[@]}"; do args+=(-e "$p"); done

found=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue       # deleted in the work tree, submodule, symlink
  [ "$(realpath "$f")" = "$self" ] && continue
  # -I: binary files never match; -H -n: FILE:LINE: prefix.
  if out=$(grep -HnIE "${args[@]}" -- "$f"); then
    printf '%s\n' "$out"
    found=1
  fi
done < <(git ls-files -z)

if [ "$found" -ne 0 ]; then
  echo "standalone_test: FAIL: tracked files refer to paths outside the tree (lines above);" \
       "restate what is needed in docs/ and cite that instead" >&2
  exit 1
fi
echo "standalone_test: OK: no tracked file refers to ../shared, shared/reference," \
     "shared/scripts or /work/"
exit 0
