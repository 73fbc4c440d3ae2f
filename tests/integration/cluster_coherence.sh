#!/usr/bin/env bash
# cluster_coherence.sh: cross-node kernel-cache coherence of one lock_dlm volume mounted on three
# nodes (ctest label: cluster), checked by ugfs2-coherence-check (tests/tools/coherence_check.cc).
#
# The property (issue text): after write()/truncate()/fallocate()/rename()/unlink()/chmod()/
# link() returns on node A, a read()/stat()/lookup()/readdir() that starts later on node B sees
# its effect; an mmap on B sees A's completed writes on its next access; MAP_SHARED stores on B
# become visible to A after msync(); and no SIGBUS/EIO/EFAULT because of contention.
#
#  1. `scripts/cluster up -n 3` (unique name), one ugfs2 daemon per node, all mounted at
#     $ST/node$N/mnt (visible from the host, so the checker, one host process, opens files through
#     node 1's and node 2's mounts at once: different daemons, different kernel caches);
#  2. positive runs: every scenario (pread odirect mmap mmapwrite truncate chmod rename link),
#     about UGFS2_COHERENCE_SECONDS (3) s each, writer on node 1's mount, readers on nodes 2 and
#     3 (mmapwrite: the mapping on node 2, readers on nodes 1 and 3). Each must report stale = 0,
#     errors = 0, sigbus = 0. A failing scenario does not stop the test: all of them run (their
#     tables are the diagnostics) and the test fails at the end;
#  3. negative control: the three nodes are remounted with UGFS2_COHERENCE_ASYNC_OPTS (default
#     `-o revoke=none`: the kernel keeps its pages when a glock goes to another node) and the
#     checker runs with --expect-stale, which succeeds only when it saw stale accesses: `mmap`
#     must (up to NEG_TRIES = 3 runs), which proves the checker detects a stale read; `pread`
#     runs once and is only reported (UGFS2_COHERENCE_NEGATIVE="mmap pread" requires both).
#     (`-o revoke=async`, the pages invalidated asynchronously after the glock went, is seldom
#     caught: a read after the release needs the glock again, and the posted invalidation is
#     done long before the other node's write returns.)
#  4. every node unmounts cleanly (umount returns, the daemon exits, logs a clean unmount), no
#     daemon logged an error, fsck-oracle says CLEAN.
# Only hard links are unlinked (the inode keeps a name): no inode is freed, so no node leaves
# unlinked inodes behind (see cluster_fs_mount.sh).
# Every wait is bounded; a checker that does not finish (its own --hang-timeout reports stuck
# accesses with exit 3) fails the test with every node's glock dump. On any exit a trap unmounts,
# stops the daemons and runs `scripts/cluster down`, then checks that no namespace, mount,
# process or loop device is left.
#
# Environment: UGFS2_BIN (daemon), UGFS2_TOOL (ugfs2-tool), UGFS2_COHERENCE_CHECK (the checker),
# all set by ctest (defaults: the newest build tree of this checkout); UGFS2_COHERENCE_SECONDS
# (per scenario, default 3); UGFS2_COHERENCE_SCENARIOS (default all eight);
# UGFS2_COHERENCE_NEGATIVE (required to be caught, default "mmap"), UGFS2_COHERENCE_NEGATIVE_INFO
# (run and reported, default "pread"); UGFS2_COHERENCE_ASYNC_OPTS (above);
# UGFS2_COHERENCE_SEED (default random, always printed); UGFS2_CLUSTER_ROOT; UGFS2_FSCK_ORACLE.
# Run: cd build/test && ctest -R cluster_coherence --output-on-failure (about 50 s).
# Needs root, /dev/fuse, corosync, iproute2, gfs2-utils (mkfs, fsck, tunegfs2). Exit 77 = skip.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=${UGFS2_CLUSTER_SCRIPT:-$REPO/scripts/cluster}
ROOT=${UGFS2_CLUSTER_ROOT:-/tmp/ugfs2-cluster}
ORACLE=${UGFS2_FSCK_ORACLE:-$REPO/scripts/fsck-oracle}
if [[ -z ${UGFS2_BIN:-} ]]; then
  UGFS2_BIN=$(ls -t "$REPO"/build/*/fuse/ugfs2 2>/dev/null | head -1 || true)
fi
if [[ -z ${UGFS2_TOOL:-} ]]; then
  UGFS2_TOOL=$(ls -t "$(dirname "${UGFS2_BIN:-.}")/../dlm/ugfs2-tool" 2>/dev/null | head -1 || true)
fi
if [[ -z ${UGFS2_COHERENCE_CHECK:-} ]]; then
  UGFS2_COHERENCE_CHECK=$(ls -t "$(dirname "${UGFS2_BIN:-.}")/../tests/tools/ugfs2-coherence-check" \
    2>/dev/null | head -1 || true)
fi
CHECK=$UGFS2_COHERENCE_CHECK
NAME=cco$$        # unique cluster name; also the lock table's cluster part
NODES=(1 2 3)
SECS=${UGFS2_COHERENCE_SECONDS:-3}
# shellcheck disable=SC2206 # lists of words
SCENARIOS=(${UGFS2_COHERENCE_SCENARIOS-pread odirect mmap mmapwrite truncate chmod rename link})
# shellcheck disable=SC2206
NEGATIVE=(${UGFS2_COHERENCE_NEGATIVE-mmap})
# shellcheck disable=SC2206
NEGATIVE_INFO=(${UGFS2_COHERENCE_NEGATIVE_INFO-pread})
NEG_TRIES=3       # runs of a required negative-control scenario until it catches a stale access
ASYNC_OPTS=${UGFS2_COHERENCE_ASYNC_OPTS-"-o revoke=none"}
SEED=${UGFS2_COHERENCE_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
HANG=20           # the checker's --hang-timeout: an access still running HANG s after its run
OP_TIMEOUT=60     # bound of any single command run in a node
NAME_WAIT=3       # seconds a name made on another node may take to show (kernel caches: 1 s)

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -e /dev/fuse ]] || skip "/dev/fuse missing"
for t in corosync corosync-quorumtool ip nsenter unshare mkfs.gfs2 fsck.gfs2 tunegfs2 losetup \
  fusermount3; do
  command -v "$t" >/dev/null || skip "missing $t"
done
[[ -x ${UGFS2_BIN:-} ]] || { echo "FAIL: no ugfs2 daemon (set UGFS2_BIN)" >&2; exit 1; }
[[ -x ${UGFS2_TOOL:-} ]] || { echo "FAIL: no ugfs2-tool (set UGFS2_TOOL)" >&2; exit 1; }
[[ -x ${CHECK:-} ]] || { echo "FAIL: no ugfs2-coherence-check (set UGFS2_COHERENCE_CHECK)" >&2; exit 1; }
[[ -x $ORACLE ]] || { echo "FAIL: no fsck oracle at $ORACLE" >&2; exit 1; }

ST=$ROOT/$NAME    # the cluster's state dir (scripts/cluster's layout, docs/cluster.md)
IMG=$ST/image.img
TMP=$(mktemp -d /tmp/cluster_coherence.XXXXXX)
chmod 755 "$TMP"
T0=$SECONDS

log() { echo "[cluster_coherence +$((SECONDS - T0))s] $*"; }
# cl, mnt, now_ms, is_mnt, bounded, on, daemon_pids
source "$HERE/cluster_lib.sh"

# dstacks PID: the kernel stacks of PID's threads that sleep uninterruptibly (D).
dstacks() {
  local t
  for t in /proc/"$1"/task/*; do
    [[ $(awk '{print $3}' "$t/stat" 2>/dev/null) == D ]] || continue
    echo "   thread ${t##*/} (D):"
    sed 's/^/     /' "$t/stack" 2>/dev/null | head -8
  done
}
CHECK_PID=""
SUMMARY=()
# summary: every checker run's summary line.
summary() {
  local l
  echo "   run            scenario     accesses    stale  errors  sigbus generations  max-lag-ms  verdict"
  for l in "${SUMMARY[@]}"; do echo "   $l"; done
}

# Diagnostics for a failure: cluster status, every daemon's log, uninterruptible threads and
# glocks, the last checker output.
diag() {
  set +e
  echo "======== diagnostics (cluster $NAME)" >&2
  if ((${#SUMMARY[@]} > 0)); then
    echo "-------- the checker runs so far (seed $SEED)" >&2
    summary >&2
  fi
  timeout 20 "$CLUSTER" --name "$NAME" status >&2 2>&1
  local i f p
  for i in "${NODES[@]}"; do
    echo "-------- node $i: daemons: $(daemon_pids "$i" | tr '\n' ' ')" >&2
    for p in $(daemon_pids "$i"); do dstacks "$p" >&2; done
    if [[ -f $ST/node$i/daemon.log ]]; then
      echo "-------- node $i: daemon.log (last 60 lines)" >&2
      tail -60 "$ST/node$i/daemon.log" >&2
    fi
    if is_mnt "$(mnt "$i")"; then
      echo "-------- node $i: ugfs2-tool glocks" >&2
      timeout 20 "$UGFS2_TOOL" glocks "$(mnt "$i")" 2>&1 | head -150 >&2
    fi
  done
  if [[ -n $CHECK_PID ]] && kill -0 "$CHECK_PID" 2>/dev/null; then
    echo "-------- the checker (pid $CHECK_PID): uninterruptible threads" >&2
    dstacks "$CHECK_PID" >&2
  fi
  for f in "$TMP"/*.out; do
    [[ -s $f ]] || continue
    echo "-------- $(basename "$f")" >&2
    tail -20 "$f" >&2
  done
  echo "======== end of diagnostics" >&2
}

exec 3>&1 4>&2 # the test's own stdout/stderr: fail() and cleanup write there, whatever the
               # redirection of the command that failed
fail() {
  exec 1>&3 2>&4
  echo "FAIL: $*" >&2
  diag
  exit 1
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT
  exec 1>&3 2>&4
  cluster_teardown "$rc"
  rc=$?
  rm -rf "$TMP"
  ((rc == 0)) && echo "PASS ($((SECONDS - T0)) s)" || echo "FAILED (exit $rc, $((SECONDS - T0)) s)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -A DAEMON
# mount_all ARGS...: mounts the three nodes at once with daemon ARGS (bounded); checks each is a
# fuseblk.ugfs2 mount served by one daemon in its namespace that joined the cluster.
mount_all() {
  local i pids=() p rc deadline m
  export UGFS2_DAEMON="$UGFS2_BIN -f" UGFS2_MOUNT_TIMEOUT=90
  for i in "${NODES[@]}"; do
    cl mount "$i" -- "$@" >"$TMP/mount$i.log" 2>&1 3>&- 4>&- &  # (no inherited test fds in daemons)
    pids+=($!)
  done
  deadline=$((SECONDS + 120))
  for i in "${NODES[@]}"; do
    p=${pids[$((i - 1))]}
    while kill -0 "$p" 2>/dev/null; do
      ((SECONDS < deadline)) || fail "mounting node $i (options: ${*:-none}): not done after 120 s"
      sleep 0.1
    done
    rc=0
    wait "$p" || rc=$?
    if ((rc != 0)); then
      local hint=""
      (($# > 0)) && hint=" (does this daemon know the option(s) '$*'? -o revoke=async comes with the revoke protocol; UGFS2_COHERENCE_ASYNC_OPTS= runs the negative control on the default mounts)"
      fail "mounting node $i (options: ${*:-none}) failed (exit $rc)$hint: $(tail -5 "$TMP/mount$i.log")"
    fi
  done
  for i in "${NODES[@]}"; do
    m=$(mnt "$i")
    grep -q " $m fuseblk.ugfs2 " /proc/mounts || fail "node $i: $m is not a fuseblk.ugfs2 mount"
    mapfile -t dp < <(daemon_pids "$i")
    ((${#dp[@]} == 1)) || fail "node $i: expected one ugfs2 daemon in its namespace, found ${#dp[@]}"
    DAEMON[$i]=${dp[0]}
    out=$(on "$i" stat -c '%F' "$m" 2>&1) || fail "node $i: stat of the root: $out"
    [[ $out == directory ]] || fail "node $i: root is '$out'"
  done
}

# umount_all: every node unmounts (bounded), its daemon exits and logs one more clean unmount.
umount_all() {
  local i t0 deadline before
  for i in "${NODES[@]}"; do
    t0=$(now_ms)
    before=$(grep -c "unmounted $IMG cleanly" "$ST/node$i/daemon.log" || true)
    bounded 60 "node $i: umount" umount "$(mnt "$i")" 2>"$TMP/umount$i.log" ||
      fail "node $i: umount failed: $(cat "$TMP/umount$i.log")"
    ! is_mnt "$(mnt "$i")" || fail "node $i: still mounted after umount"
    deadline=$((SECONDS + 30))
    while kill -0 "${DAEMON[$i]}" 2>/dev/null && [[ $(awk '{print $3}' "/proc/${DAEMON[$i]}/stat" 2>/dev/null) != Z ]]; do
      ((SECONDS < deadline)) || fail "node $i: the daemon (pid ${DAEMON[$i]}) did not exit within 30 s of umount"
      sleep 0.1
    done
    (($(grep -c "unmounted $IMG cleanly" "$ST/node$i/daemon.log" || true) > before)) ||
      fail "node $i: its daemon did not log a clean unmount"
    cl umount "$i" >/dev/null 2>&1 || fail "node $i: scripts/cluster umount after the unmount"
    log "   node $i: unmounted, daemon gone ($(($(now_ms) - t0)) ms)"
  done
}

# check TAG SCENARIO [CHECKER-ARGS...]: runs the checker (writer on node 1's mount, readers on
# nodes 2 and 3), bounded; prints its tables. Sets CHECK_RC to its exit status (0 or 1); a hang
# (exit 3, or not done in time) or a set-up error (exit 2) fails the test at once.
check() {
  local tag=$1 scenario=$2
  shift 2
  local out=$TMP/$tag.out pid rc=0 deadline hang_at=0
  : >"$out"
  "$CHECK" --writer-dir "$(mnt 1)/coh" --reader-dir "$(mnt 2)/coh" --reader-dir "$(mnt 3)/coh" \
    --scenario "$scenario" --seconds "$SECS" --seed "$SEED" --hang-timeout "$HANG" "$@" \
    >"$out" 2>&1 3>&- 4>&- &
  pid=$!
  CHECK_PID=$pid
  deadline=$(($(now_ms) + (${SECS%.*} + HANG + 30) * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    # the checker reported stuck accesses but cannot exit (a FUSE request of it is stuck)
    if ((hang_at == 0)) && grep -q '^HANG:' "$out"; then hang_at=$(now_ms); fi
    if ((hang_at != 0 && $(now_ms) - hang_at > 5000)) || (($(now_ms) > deadline)); then
      cat "$out"
      fail "checker $tag ($scenario): hung (stuck accesses above; glock dumps below)"
    fi
    sleep 0.1
  done
  wait "$pid" || rc=$?
  sed 's/^/   | /' "$out"
  # the scenario's line of the checker's summary table, for the test's own summary
  SUMMARY+=("$(printf '%-14s %s' "$tag" "$(sed -n '/^== summary/,$p' "$out" | grep -E "^  $scenario " | head -1)")")
  case $rc in
    0 | 1) CHECK_RC=$rc ;;
    3) fail "checker $tag ($scenario): accesses did not return (exit 3; glock dumps below)" ;;
    *) fail "checker $tag ($scenario): exit $rc (set-up or usage error)" ;;
  esac
}

# ================================================================================================
log "1. up -n 3: lock_dlm image, 3 journals, lock table $NAME:ugfs2; checker seed $SEED"
cl up -n 3 --size 1G >"$TMP/up.log" 2>&1 3>&- 4>&- || fail "cluster up: $(tail -5 "$TMP/up.log")"
[[ -f $IMG ]] || fail "no image at $IMG"
log "   mount on the three nodes at once"
mount_all
on 1 mkdir "$(mnt 1)/coh" || fail "node 1: mkdir coh"
for i in 2 3; do poll "$NAME_WAIT" "node $i: coh/ visible" on "$i" test -d "$(mnt "$i")/coh"; done

# ================================================================================================
log "2. positive runs (${SECS} s each): writer on node 1, readers on nodes 2 and 3 (mmapwrite: mapping on node 2, readers on 1 and 3)"
incoherent=()
for s in "${SCENARIOS[@]}"; do
  log "   scenario $s"
  check "pos-$s" "$s"
  ((CHECK_RC == 0)) || incoherent+=("$s")
done
if ((${#incoherent[@]} > 0)); then
  log "   NOT COHERENT: ${incoherent[*]} (the test fails after the negative control and the fsck)"
fi

# ================================================================================================
if [[ -n $ASYNC_OPTS ]]; then
  log "3. negative control: remount the three nodes with '$ASYNC_OPTS'"
  umount_all
  # shellcheck disable=SC2086 # ASYNC_OPTS is a list of daemon arguments
  mount_all $ASYNC_OPTS
else
  log "3. negative control on the default mounts (UGFS2_COHERENCE_ASYNC_OPTS is empty: the daemon's default must invalidate asynchronously)"
fi
for s in "${NEGATIVE[@]}"; do
  for ((try = 1; try <= NEG_TRIES; try++)); do
    log "   scenario $s --expect-stale (run $try of at most $NEG_TRIES)"
    check "neg-$s-$try" "$s" --expect-stale
    ((CHECK_RC != 0)) || break
  done
  ((CHECK_RC == 0)) || fail "negative control: scenario $s with ${ASYNC_OPTS:-the default mounts} did not catch a stale access in $NEG_TRIES runs (or failed otherwise): the checker cannot be trusted"
done
for s in "${NEGATIVE_INFO[@]}"; do
  log "   scenario $s --expect-stale (reported only)"
  check "info-$s" "$s" --expect-stale
  if ((CHECK_RC == 0)); then
    log "   $s: stale accesses caught"
  else
    log "   $s: no stale access caught (not required)"
  fi
done

# ================================================================================================
log "4. unmount every node; the daemons exit; fsck"
umount_all
if grep -H ' error: ' "$ST"/node*/daemon.log >"$TMP/errors.log"; then
  fail "daemon errors logged: $(head -10 "$TMP/errors.log")"
fi
grep -H ' warning: ' "$ST"/node*/daemon.log | sed 's/^/   warning logged: /' || true
losetup -j "$IMG" | grep -q . && fail "loop devices still attached to the image: $(losetup -j "$IMG")"
t0=$(now_ms)
verdict=$(bounded 600 "fsck-oracle" "$ORACLE" "$IMG" 2>&1) || fail "fsck-oracle: $verdict"
[[ $verdict == CLEAN ]] || fail "fsck-oracle: $verdict"
log "   fsck-oracle: CLEAN ($(($(now_ms) - t0)) ms)"
log "summary (seed $SEED):"
summary

if ((${#incoherent[@]} > 0)); then
  exec 1>&3 2>&4
  echo "FAIL: not coherent across nodes (stale accesses, errors or signals): ${incoherent[*]}; tables above (seed $SEED)" >&2
  exit 1
fi
