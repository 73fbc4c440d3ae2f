#!/usr/bin/env bash
# cluster_deadlock.sh: the deadlock lab on the real 3-node cluster (ctest label: cluster;
# docs/deadlocks.md). One `scripts/cluster up -n 3` cluster, the volume mounted on every node,
# ugfs2-mmap-stress run from the host on node 1's and node 2's mountpoints (the same volume):
#  a. every scenario (S1..S7) on one node and spread over two nodes, under `merged` and
#     `proposal-2021`, switched live with `ugfs2-tool policy` between cells: no hang, every byte
#     verified (the tool's exit status 0), the tables printed. Then (a3) dio_self_map.py on node 1
#     (O_DIRECT I/O to and from a mapping of its own O_DIRECT open) while node 2 reads the file.
#  b. `naive` deadlocks on purpose, and the lab shows it: S1 on one node, then S1 spread over
#     two nodes, then S7 (rename/link ABBA) spread over two nodes (on one node the kernel's own
#     directory locks serialize rename and link before they reach the daemon), each with a
#     short watchdog: the tool
#     must declare the hang (exit 3) and its hang report — `ugfs2-tool glocks --all-nodes
#     --cycles` — must name a DEADLOCK cycle (for the spread case: one that spans node 1 and
#     node 2). After the first two, `ugfs2-tool policy ... merged` on the nodes breaks the
#     deadlock live: the stuck workers finish. After the last, the test aborts node 1's FUSE
#     connection (fusectl) instead: the stuck processes die, the daemon exits, nothing is left.
#  c. node 1 mounts again; then every node unmounts cleanly and fsck-oracle says CLEAN.
# On any exit the trap tears the cluster down and checks nothing is left (cluster_teardown).
#
# Environment: UGFS2_BIN, UGFS2_TOOL, UGFS2_MMAP_STRESS (set by ctest; defaults: the newest build
# tree of this checkout), UGFS2_CLUSTER_ROOT, UGFS2_FSCK_ORACLE, DEADLOCK_DURATION (seconds per
# cell in a, default 2).
# Run: cd build/test && ctest -R cluster_deadlock --output-on-failure (about 3 min).
# Needs root, /dev/fuse, corosync, iproute2, gfs2-utils. Exit 77 = skip.
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
BUILD=$(dirname "${UGFS2_BIN:-.}")/..
UGFS2_TOOL=${UGFS2_TOOL:-$BUILD/dlm/ugfs2-tool}
STRESS=${UGFS2_MMAP_STRESS:-$BUILD/bench/mmap_stress/ugfs2-mmap-stress}
NAME=cdl$$        # unique cluster name
NODES=(1 2 3)
OP_TIMEOUT=60
DURATION=${DEADLOCK_DURATION:-2}

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -e /dev/fuse ]] || skip "/dev/fuse missing"
for t in corosync corosync-quorumtool ip nsenter unshare mkfs.gfs2 fsck.gfs2 losetup fusermount3; do
  command -v "$t" >/dev/null || skip "missing $t"
done
[[ -x ${UGFS2_BIN:-} ]] || { echo "FAIL: no ugfs2 daemon (set UGFS2_BIN)" >&2; exit 1; }
[[ -x $UGFS2_TOOL ]] || { echo "FAIL: no ugfs2-tool (set UGFS2_TOOL)" >&2; exit 1; }
[[ -x $STRESS ]] || { echo "FAIL: no ugfs2-mmap-stress (set UGFS2_MMAP_STRESS)" >&2; exit 1; }
[[ -x $ORACLE ]] || { echo "FAIL: no fsck oracle at $ORACLE" >&2; exit 1; }

ST=$ROOT/$NAME
IMG=$ST/image.img
TMP=$(mktemp -d /tmp/cluster_deadlock.XXXXXX)
chmod 755 "$TMP"
T0=$SECONDS
log() { echo "[cluster_deadlock +$((SECONDS - T0))s] $*"; }
source "$HERE/cluster_lib.sh"

exec 3>&1 4>&2
fail() {
  exec 1>&3 2>&4
  echo "FAIL: $*" >&2
  set +e
  local i
  for i in "${NODES[@]}"; do
    is_mnt "$(mnt "$i")" || continue
    echo "-------- node $i: busy glocks" >&2
    timeout 20 "$UGFS2_TOOL" glocks "$(mnt "$i")" 2>&1 | busy_glocks | head -80 >&2
    [[ -f $ST/node$i/daemon.log ]] && { echo "-------- node $i: daemon.log" >&2; tail -30 "$ST/node$i/daemon.log" >&2; }
  done
  for f in "$TMP"/*.out; do [[ -s $f ]] && { echo "-------- $(basename "$f")" >&2; tail -40 "$f" >&2; }; done
  exit 1
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT
  exec 1>&3 2>&4
  pkill -KILL -f "$STRESS --dir $ST/" 2>/dev/null
  cluster_teardown "$rc"
  rc=$?
  rm -rf "$TMP"
  ((rc == 0)) && echo "PASS ($((SECONDS - T0)) s)" || echo "FAILED (exit $rc, $((SECONDS - T0)) s)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

M1=$(mnt 1) M2=$(mnt 2)
export UGFS2_DAEMON="$UGFS2_BIN -f" UGFS2_MOUNT_TIMEOUT=90
mount_node() {
  bounded 150 "mounting node $1" cl mount "$1" >"$TMP/mount$1.log" 2>&1 3>&- 4>&- ||
    fail "mounting node $1: $(tail -5 "$TMP/mount$1.log")"
  is_mnt "$(mnt "$1")" || fail "node $1: $(mnt "$1") is not mounted"
}
set_policy() { # POLICY NODE...
  local p=$1 i out
  shift
  for i in "$@"; do
    out=$(bounded 30 "policy $p on node $i" "$UGFS2_TOOL" policy "$(mnt "$i")" "$p") ||
      fail "node $i: ugfs2-tool policy $p: $out"
    [[ $out == "$p" ]] || fail "node $i: ugfs2-tool policy $p answered '$out'"
  done
}
# stress OUT ARGS...: the stress tool on node 1's (and node 2's) mountpoint; its status.
stress() {
  local out=$1
  shift
  local rc=0
  bounded 600 "ugfs2-mmap-stress $*" "$STRESS" --dir "$M1,$M2" \
    --policy-cmd "$UGFS2_TOOL policy {dir} {policy}" \
    --retries-cmd "$UGFS2_TOOL counters {dir}" "$@" >"$TMP/$out.out" 2>&1 3>&- 4>&- || rc=$?
  return $rc
}
# no_stress_left SECS: every worker of the stress tool is gone within SECS.
stress_gone() { ! pgrep -f "$STRESS --dir $ST/" >/dev/null; }

log "setup: up -n 3, lock_dlm image, every node mounted"
cl up -n 3 --size 1G >"$TMP/up.log" 2>&1 3>&- 4>&- || fail "cluster up: $(tail -5 "$TMP/up.log")"
for i in "${NODES[@]}"; do mount_node "$i"; done

log "a. S1..S7 on one node and spread, under merged and proposal-2021 ($DURATION s a cell)"
for part in "a1 all one" "a2 all spread"; do
  read -r out scen place <<<"$part"
  rc=0
  stress "$out" --scenarios "$scen" --placement "$place" --policies merged,proposal-2021 \
    --duration "$DURATION" --watchdog 30 --hang-cmd "$UGFS2_TOOL glocks {dir} --all-nodes" || rc=$?
  sed 's/^/    /' "$TMP/$out.out"
  ((rc == 0)) || fail "$out: ugfs2-mmap-stress exited $rc (3 = a hang, 1 = wrong data or an error)"
  grep -q ' ok' "$TMP/$out.out" || fail "$out: no cell reported ok"
  grep -Eq 'HANG|FAIL' "$TMP/$out.out" && fail "$out: a cell hung or failed"
done

# a3. O_DIRECT I/O between a file and a private mapping of its own O_DIRECT open (generic/647 and
# 729 shapes) on node 1 while node 2 reads the file in a loop: the faults' READs carry O_DIRECT
# but fill pages, and node 1 holds the glock SH because of node 2's reads. Served as direct
# reads (DF), they started a revoke that waited for their own folios (a hang through a kernel
# folio lock, which no glock cycle shows).
for p in merged proposal-2021; do
  log "a3. dio_self_map on node 1, node 2 reading the file, under $p"
  set_policy "$p" 1 2
  f=self_map.$p
  : >"$(mnt 1)/$f"
  rm -f "$TMP/stop_reader"
  cl exec 2 bash -c "while [ ! -e '$TMP/stop_reader' ]; do cat '$(mnt 2)/$f' >/dev/null 2>&1; done" \
    3>&- 4>&- &
  reader=$!
  rc=0
  bounded 90 "dio_self_map under $p" cl exec 1 python3 "$HERE/dio_self_map.py" "$(mnt 1)/$f" 30 \
    >"$TMP/a3.$p.out" 2>&1 3>&- 4>&- || rc=$?
  touch "$TMP/stop_reader"
  bounded 30 "node 2's reader loop (stuck in the daemon?)" \
    bash -c "while kill -0 $reader 2>/dev/null; do sleep 0.05; done"
  wait "$reader" || true
  ((rc == 0)) || fail "a3: dio_self_map under $p exited $rc: $(tail -3 "$TMP/a3.$p.out")"
  log "    $(tail -1 "$TMP/a3.$p.out")"
done
set_policy merged 1 2

# naive_hang OUT WHAT ARGS...: a naive run that must hang, with a cycle named in its report.
naive_hang() {
  local out=$1 what=$2
  shift 2
  local rc=0
  stress "$out" --policies naive --duration 60 --watchdog 5 \
    --hang-cmd "$UGFS2_TOOL glocks {dir} --all-nodes --cycles" "$@" || rc=$?
  sed 's/^/    /' "$TMP/$out.out" | head -60
  ((rc == 3)) || fail "b: $what under naive: expected a hang (exit 3), got $rc"
  grep -q 'DEADLOCK' "$TMP/$out.out" || fail "b: $what: the hang report names no deadlock cycle"
}

log "b1. naive, S1 on one node: must deadlock; the cycle detector names it"
naive_hang b1 "S1 on one node" --scenarios S1 --placement one
log "b1. ugfs2-tool policy merged breaks the deadlock: the stuck workers finish"
set_policy merged 1 2
poll 60 "b1: stuck workers gone after the switch to merged" stress_gone

log "b2. naive, S1 spread over nodes 1 and 2: a cross-node cycle"
naive_hang b2 "S1 spread" --scenarios S1 --placement spread
grep -Eq 'node 1 .*node 2|node 2 .*node 1' "$TMP/b2.out" ||
  grep -A4 DEADLOCK "$TMP/b2.out" | grep -q 'node 2' ||
  fail "b2: the cycle does not span node 1 and node 2"
set_policy merged 1 2
poll 60 "b2: stuck workers gone after the switch to merged" stress_gone

log "b3. naive, S7 (rename/link ABBA) spread: deadlock; then node 1's connection aborted"
naive_hang b3 "S7 spread" --scenarios S7 --placement spread
line=$(grep "^[^ ]* [^ ]* [0-9]*:[0-9]* [^ ]* $M1 " /proc/self/mountinfo | head -1)
dev=$(awk '{ print $3 }' <<<"$line")
conn=$(((${dev%:*} << 20) | ${dev#*:}))
# fusectl is not always mounted (a fresh Debian 12 does not mount it).
mountpoint -q /sys/fs/fuse/connections || mount -t fusectl none /sys/fs/fuse/connections ||
  fail "b3: cannot mount fusectl on /sys/fs/fuse/connections"
[[ -w /sys/fs/fuse/connections/$conn/abort ]] || fail "b3: no fusectl connection $conn for $M1"
echo 1 >"/sys/fs/fuse/connections/$conn/abort"
set_policy merged 2 # node 2's worker waited for node 1: it goes once node 1's daemon is gone
poll 60 "b3: stuck workers gone after the abort" stress_gone
poll 60 "b3: node 1's daemon gone after the abort" bash -c "[[ -z \$(ip netns pids ugfs2.$NAME.n1 2>/dev/null | xargs -r -n1 -I{} cat /proc/{}/comm 2>/dev/null | grep -x ugfs2) ]]"
umount -l "$M1" 2>/dev/null || true
poll 30 "b3: node 1's mount gone" bash -c "! grep -q ' $M1 ' /proc/self/mountinfo"

log "c. node 1 mounts again (recovering its journal if need be); all unmount; fsck"
mount_node 1
for i in "${NODES[@]}"; do
  bounded 60 "node $i: unmount" cl umount "$i" >"$TMP/umount$i.log" 2>&1 3>&- 4>&- ||
    fail "node $i: unmount: $(tail -5 "$TMP/umount$i.log")"
  wait_daemons_gone "$i" 30
done
"$ORACLE" "$IMG" >"$TMP/fsck.out" 2>&1 || fail "fsck-oracle: $(tail -20 "$TMP/fsck.out")"
grep -q CLEAN "$TMP/fsck.out" || fail "fsck-oracle: $(tail -20 "$TMP/fsck.out")"
log "fsck-oracle: CLEAN"
