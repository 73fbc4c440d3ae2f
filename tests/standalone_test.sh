#!/usr/bin/env bash
# standalone_test.sh [REPO]: the tree must stand on its own. Fails if any tracked file refers to
# material outside the repository: the development machine's notes folder beside the checkout
# (its relative path, or its reference/ and scripts/ subfolders) or an absolute path of the
# development workspace. What the code needs from outside belongs in docs/ (see docs/format.md,
# docs/dlm.md); temporary files belong under /tmp or a mktemp directory.
#
# REPO defaults to the checkout this script lives in. Prints every offending FILE:LINE with the
# line, and exits 1 if there is any, 0 if there is none, 77 (skip) when REPO is not a git
# checkout or git is missing. The patterns are written so that they do not match themselves
# ("[d]" matches "d"), so this file is searched like every other.
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

# One extended regex per rule. The workspace path counts only as the start of an absolute path,
# i.e. not preceded by a character that could belong to a longer path (a relative "a/wor[k]/"
# or a home-relative path is fine).
patterns=(
  '\.\./share[d]\b'
  'share[d]/reference'
  'share[d]/scripts'
  '(^|[^][A-Za-z0-9_.~/$@{}-])/wor[k]/'
)
args=()
for p in "${patterns[@]}"; do args+=(-e "$p"); done

found=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] && [ ! -L "$f" ] || continue       # deleted in the work tree, submodule, symlink
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
echo "standalone_test: OK: no tracked file refers to paths outside the tree"
exit 0
