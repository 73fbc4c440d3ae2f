# fs_lib.sh: shared helpers for the filesystem integration tests (sourced by fs_*.sh).
#
# Environment (set by CMake/ctest; defaults work from a build tree):
#   UGFS2_BIN           path of the built ugfs2 daemon (or pass it as $1 to the test)
#   UGFS2_FSCK_ORACLE   fsck oracle (default: <repo>/scripts/fsck-oracle)
# Every test: a private temp dir, real mkfs.gfs2 images, mounts with -f in the background (logs in
# $T/*.log), bounded waits, and a trap that unmounts and deletes everything on any exit.
set -u -o pipefail
export PATH=$PATH:/usr/sbin:/sbin

FS_TEST_NAME=$(basename "$0" .sh)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -n "${1:-}" ]; then
  UGFS2_BIN=$1
elif [ -z "${UGFS2_BIN:-}" ]; then  # first built daemon found in a build tree of this checkout
  UGFS2_BIN=$(ls -t "${UGFS2_BUILD_DIR:-$REPO/build}"/fuse/ugfs2 "$REPO"/build/*/fuse/ugfs2 2>/dev/null | head -1)
fi
ORACLE=${UGFS2_FSCK_ORACLE:-$REPO/scripts/fsck-oracle}
HELPER="python3 $REPO/tests/integration/fs_helper.py"

declare -A FS_PIDS=()   # mountpoint -> daemon pid
FS_CLEANUP=()           # extra cleanup commands (eval'ed on exit)
T=""

log() { echo "[$FS_TEST_NAME $(date +%T)] $*"; }
fail() {
  echo "[$FS_TEST_NAME] FAIL: $*" >&2
  for f in "$T"/*.log; do
    [ -s "$f" ] && { echo "--- $f (last 30 lines) ---" >&2; tail -30 "$f" >&2; }
  done 2>/dev/null
  exit 1
}
skip() { echo "[$FS_TEST_NAME] SKIP: $*"; exit 77; }

fs_cleanup() {
  local rc=$?
  set +e
  for m in "${!FS_PIDS[@]}"; do
    if mountpoint -q "$m"; then
      fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    fi
    local pid=${FS_PIDS[$m]}
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  for c in "${FS_CLEANUP[@]}"; do eval "$c"; done
  # Children started by the test (helpers holding files open, ...).
  jobs -p | xargs -r kill -9 2>/dev/null
  wait 2>/dev/null
  [ -n "$T" ] && [ -d "$T" ] && rm -rf "$T"
  if [ $rc -eq 0 ]; then echo "[$FS_TEST_NAME] PASS"; fi
  exit $rc
}

# mount(8) runs helpers (mount.fuse3 -> ugfs2, for `mount -t fuse.ugfs2`) with a fixed standard
# PATH, so ugfs2 must be in a standard directory while a test mounts or remounts that way. Tests
# running at once share one link /usr/local/sbin/ugfs2 -> $UGFS2_BIN: a count kept under flock
# decides who removes it (the last one). A ugfs2 installed there by somebody else is used as is.
FS_PATH_LINK=/usr/local/sbin/ugfs2
FS_PATH_STATE=/run/ugfs2-test-path
fs_provide_standard_path() {
  mkdir -p /usr/local/sbin
  (
    flock 9
    n=$(cat "$FS_PATH_STATE.count" 2>/dev/null || echo 0)
    if [ "$n" -eq 0 ]; then
      if [ -e "$FS_PATH_LINK" ] && [ ! -e "$FS_PATH_STATE.ours" ]; then
        echo "[$FS_TEST_NAME] using the ugfs2 installed in /usr/local/sbin for mount -t"
        exit 0
      fi
      ln -sfn "$(realpath "$UGFS2_BIN")" "$FS_PATH_LINK" && touch "$FS_PATH_STATE.ours"
    fi
    [ -e "$FS_PATH_STATE.ours" ] && echo $((n + 1)) >"$FS_PATH_STATE.count"
  ) 9>"$FS_PATH_STATE.lock"
  FS_CLEANUP+=("fs_release_standard_path")
}
fs_release_standard_path() {
  (
    flock 9
    [ -e "$FS_PATH_STATE.ours" ] || exit 0
    n=$(cat "$FS_PATH_STATE.count" 2>/dev/null || echo 1)
    n=$((n - 1))
    if [ "$n" -le 0 ]; then
      rm -f "$FS_PATH_LINK" "$FS_PATH_STATE.ours" "$FS_PATH_STATE.count"
    else
      echo "$n" >"$FS_PATH_STATE.count"
    fi
  ) 9>"$FS_PATH_STATE.lock"
}

fs_init() {
  [ -x "$UGFS2_BIN" ] || fail "ugfs2 binary not found at $UGFS2_BIN (set UGFS2_BIN)"
  [ -x "$ORACLE" ] || fail "fsck oracle not found at $ORACLE (set UGFS2_FSCK_ORACLE)"
  [ -e /dev/fuse ] || skip "/dev/fuse missing"
  [ "$(id -u)" -eq 0 ] || skip "needs root"
  command -v mkfs.gfs2 >/dev/null || skip "mkfs.gfs2 missing"
  T=$(mktemp -d "${TMPDIR:-/tmp}/ugfs2-$FS_TEST_NAME-XXXXXX") || fail "mktemp"
  chmod 755 "$T"
  trap fs_cleanup EXIT
  trap 'exit 130' INT TERM
}

# make_image IMG SIZE BSIZE [extra mkfs args...]
make_image() {
  local img=$1 size=$2 bsize=$3
  shift 3
  rm -f "$img"
  truncate -s "$size" "$img" || fail "truncate $img"
  mkfs.gfs2 -O -p lock_nolock -b "$bsize" -j 1 "$@" "$img" >"$T/mkfs.log" 2>&1 ||
    fail "mkfs.gfs2 $img: $(cat "$T/mkfs.log")"
}

# wait_mounted MNT PID [seconds]: polls until MNT is a fuse mount, the daemon dies, or timeout.
wait_mounted() {
  local mnt=$1 pid=$2 secs=${3:-30}
  local deadline=$((SECONDS + secs))
  while ! grep -qs " $(realpath "$mnt") fuse" /proc/mounts; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ $SECONDS -ge $deadline ] && fail "mount of $mnt did not appear within ${secs}s"
    sleep 0.05
  done
}

# mount_fs IMG MNT [ugfs2 -o options]: foreground daemon in the background; log in $T/<mnt>.log.
mount_fs() {
  local img=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  local logf="$T/$(basename "$mnt").log"
  if [ -n "$opts" ]; then
    "$UGFS2_BIN" -f -o "$opts" "$img" "$mnt" >>"$logf" 2>&1 &
  else
    "$UGFS2_BIN" -f "$img" "$mnt" >>"$logf" 2>&1 &
  fi
  local pid=$!
  FS_PIDS[$mnt]=$pid
  wait_mounted "$mnt" "$pid" || { wait "$pid"; fail "ugfs2 exited ($?) instead of mounting $img"; }
}

# unmount_fs MNT [COMMAND...]: fusermount3 -u (or COMMAND, e.g. umount), retried while busy;
# then the daemon must exit 0 within 60 s.
unmount_fs() {
  local mnt=$1
  shift
  local cmd=("$@")
  [ ${#cmd[@]} -eq 0 ] && cmd=(fusermount3 -u)
  local pid=${FS_PIDS[$mnt]:-}
  local deadline=$((SECONDS + 30))
  until "${cmd[@]}" "$mnt" 2>"$T/umount.err"; do
    grep -q "busy" "$T/umount.err" || fail "${cmd[*]} $mnt: $(cat "$T/umount.err")"
    [ $SECONDS -ge $deadline ] && fail "$mnt still busy after 30s"
    sleep 0.2
  done
  [ -z "$pid" ] && return 0
  deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && fail "ugfs2 (pid $pid) did not exit within 60s after unmount"
    sleep 0.05
  done
  wait "$pid"
  local rc=$?
  unset "FS_PIDS[$mnt]"
  [ $rc -eq 0 ] || fail "ugfs2 exited with $rc after unmounting $mnt"
}

# check_clean IMG: the fsck oracle must say CLEAN.
check_clean() {
  local out
  out=$("$ORACLE" "$1" 2>&1) || fail "fsck-oracle $1: $out"
  [ "$out" = "CLEAN" ] || fail "fsck-oracle $1: $out"
  log "fsck-oracle $(basename "$1"): CLEAN"
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() { [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"; }

# df_used MNT: used blocks as statfs reports them.
df_used() { stat -f -c '%b %f' "$1" | awk '{print $1 - $2}'; }
df_free() { stat -f -c '%f' "$1"; }
