#!/usr/bin/env bash
# cluster_recovery.sh: node failure on a three-node lock_dlm volume (ctest label: cluster; with
# ROUNDS=N, label stress). Real corosync, real FUSE mounts, one shared image; workloads keep
# durability logs outside the volume (tests/integration/recovery_work.py: every state a worker
# fsync'd is logged after the fsync returned).
#  a. crash: while every node runs a data+metadata worker (create/overwrite/rename/unlink, each
#     fsync'd), an mmap writer (MAP_SHARED stores, msync) and nodes 1-2 run fio (O_DIRECT random
#     writes with fsync), node 3's processes are all SIGKILLed (its daemon, its corosync, its
#     workers: `scripts/cluster crash 3`). The survivors must recover its journal
#     (`ugfs2-tool recovery` on node 1 says node 3 done) and their workers must go on: their logs
#     grow after the recovery, and they finish with exit 0, fio too. Every fsync'd state of every
#     node (node 3's included, but for the operation it had in flight) is then read back from
#     node 1 and must be exact.
#  b. rejoin: node 3's corosync restarts, node 3 mounts again and gets a journal; it reads back
#     every fsync'd state too, and works.
#  c. link cut: node 3 writes (keep going on errors) while its link to the bridge goes down. It
#     loses quorum and must report itself fenced (`ugfs2-tool recovery`: fenced yes, writes
#     refused); the majority recovers its journal. Node 3's worker keeps trying for a while; its
#     link is healed; then no block of the volume may hold a stamp of node 3 newer than the
#     last operation it had started when the majority finished recovering it (a write that
#     landed after the replay), every state it fsync'd before the cut is there, and its mount
#     unmounts.
#  d. freeze: node 3's daemon gets SIGSTOP while it writes, past the eviction timeout; the
#     survivors evict it (lockspace heartbeats) and recover its journal; it gets SIGCONT: it must
#     report itself fenced, and none of its writes may land afterwards (same checks as c); it
#     unmounts and mounts again.
#  Then every node unmounts, the daemons exit, no error is logged that the phase does not
#  explain, and fsck-oracle says CLEAN.
# Every wait is bounded; a failure prints each node's recovery state, glock dump and log tail.
# Environment: UGFS2_BIN, UGFS2_TOOL (ctest sets them), UGFS2_CLUSTER_ROOT, UGFS2_FSCK_ORACLE,
# ROUNDS (phases a and b repeated; default 6, ctest: 2 in cluster_recovery, UGFS2_RECOVERY_ROUNDS
# in cluster_recovery_stress), FAST (1: survivors with the fence agent, phases a and b only; the
# stress variant), UGFS2_STRESS_SEED.
# Needs root, /dev/fuse, corosync, iproute2, gfs2-utils, python3, fio. Exit 77 = skip.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=${UGFS2_CLUSTER_SCRIPT:-$REPO/scripts/cluster}
ROOT=${UGFS2_CLUSTER_ROOT:-/tmp/ugfs2-cluster}
ORACLE=${UGFS2_FSCK_ORACLE:-$REPO/scripts/fsck-oracle}
WORK=$HERE/recovery_work.py
NAME=rcv$$
NODES=(1 2 3)
OP_TIMEOUT=60
ROUNDS=${ROUNDS:-6}
SEED=${UGFS2_STRESS_SEED:-$((RANDOM * 32768 + RANDOM))}
RECOVERY_TIMEOUT=40 # s from a failure to the survivors' "done"

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -e /dev/fuse ]] || skip "/dev/fuse missing"
for t in corosync corosync-quorumtool ip nsenter unshare mkfs.gfs2 fsck.gfs2 losetup fio python3; do
  command -v "$t" >/dev/null || skip "missing $t"
done
[[ -x ${UGFS2_BIN:-} ]] || { echo "FAIL: no ugfs2 daemon (set UGFS2_BIN)" >&2; exit 1; }
[[ -x ${UGFS2_TOOL:-} ]] || { echo "FAIL: no ugfs2-tool (set UGFS2_TOOL)" >&2; exit 1; }
[[ -x $ORACLE ]] || { echo "FAIL: no fsck oracle at $ORACLE" >&2; exit 1; }

ST=$ROOT/$NAME
IMG=$ST/image.img
TMP=$(mktemp -d /tmp/cluster_recovery.XXXXXX)
T0=$SECONDS
log() { echo "[cluster_recovery +$((SECONDS - T0))s] $*"; }
source "$HERE/cluster_lib.sh"

source "$HERE/recovery_lib.sh"


log "cluster $NAME: 3 nodes, seed $SEED, rounds $ROUNDS"
cl up -n 3 --size 1G >"$TMP/up.log" 2>&1 3>&- 4>&- || fail "cluster up: $(tail -5 "$TMP/up.log")"
export UGFS2_DAEMON="$UGFS2_BIN -f" UGFS2_MOUNT_TIMEOUT=90
# FAST=1 (the stress variant): the survivors run the local cluster's fence agent, which stands
# for the lease wait (docs/recovery.md), and only phases a and b run (c and d need survivors
# without an agent: the cut or frozen node must live on to show it fenced itself).
if [[ ${FAST:-0} == 1 ]]; then
  for i in 1 2; do mount_node "$i" "fence_agent=$CLUSTER --name $NAME crash"; done
  mount_node 3
else
  for i in "${NODES[@]}"; do mount_node "$i"; done
fi
log "   mounted on every node"

for ((round = 1; round <= ROUNDS; round++)); do
  tag=a$round
  # ==============================================================================================
  log "a$round. crash node 3 while every node writes (fsync'd data and metadata, mmap), fio on 1-2"
  start_workers "$tag" 1 2 3
  for i in 1 2; do
    cl exec "$i" fio --name="fio$i" --filename="$(mnt "$i")/$tag.fio.n$i" --size=8m --bs=4k \
      --rw=randwrite --direct=1 --ioengine=psync --fsync=8 --time_based --runtime=6 \
      --output="$TMP/fio.$tag.n$i.txt" >"$TMP/fio.$tag.n$i.out" 2>"$TMP/fio.$tag.n$i.err" 3>&- 4>&- &
    FPID[$i]=$!
  done
  grows "$TMP/$tag.n3.log" 40 30
  # Node 3's mapping writer too has acknowledged writes (and so made its log) before the crash:
  # the verify step reads every node's logs.
  grows "$TMP/$tag.n3.mmap.log" 2 30
  grows "$TMP/$tag.n1.log" 40 30
  base1=$(failures_of 1 3) base2=$(failures_of 2 3)
  t_kill=$(now_ms)
  cl crash 3 >"$TMP/crash.log" 2>&1 3>&- 4>&- || fail "crash 3: $(cat "$TMP/crash.log")"
  ms=$(wait_recovered 1 3 $((base1 + 1)) "$t_kill")
  log "   node 3 killed; node 1 reports it recovered after $ms ms: $(recovery_of 1 3 | cut -c1-160)"
  wait_recovered 2 3 $((base2 + 1)) "$t_kill" >/dev/null
  # Survivors keep serving: their workers' logs grow after the recovery.
  grows "$TMP/$tag.n1.log" 30 30
  grows "$TMP/$tag.n2.log" 30 30
  grows "$TMP/$tag.n1.mmap.log" 10 30
  touch "$TMP/stop.$tag"
  for i in 1 2; do
    wait_job "${WPID[$i]}" "w.$tag.n$i" 60
    wait_job "${MPID[$i]}" "m.$tag.n$i" 60
    wait_job "${FPID[$i]}" "fio.$tag.n$i" 60
    log "   node $i: $(cat "$TMP/w.$tag.n$i.out"); $(cat "$TMP/m.$tag.n$i.out"); fio $(grep -o 'WRITE: bw=[^,]*' "$TMP/fio.$tag.n$i.txt" || echo '?')"
  done
  wait "${WPID[3]}" "${MPID[3]}" 2>/dev/null || true # killed with node 3
  on 1 python3 "$WORK" verify "$(mnt 1)" "$TMP/$tag".n{1,2,3}.log "$TMP/$tag".n{1,2,3}.mmap.log \
    >"$TMP/verify.$tag.out" 2>&1 || fail "fsync'd data lost: $(cat "$TMP/verify.$tag.out" | tail -8)"
  log "   node 1: $(tail -1 "$TMP/verify.$tag.out")"

  # ==============================================================================================
  log "b$round. node 3 rejoins: corosync restarts, it mounts again and reads everything back"
  cl umount 3 >/dev/null 2>&1 || true # the dead mount's leftovers
  cl restart 3 >"$TMP/restart.log" 2>&1 3>&- 4>&- || fail "restart 3: $(cat "$TMP/restart.log")"
  cl wait-quorum --timeout 30 >"$TMP/wq.log" 2>&1 3>&- 4>&- || fail "quorum after restart: $(cat "$TMP/wq.log")"
  mount_node 3
  log "   node 3: $(grep -o 'mounted .*journal[0-9]*)' "$ST/node3/daemon.log" | tail -1)"
  on 3 python3 "$WORK" verify "$(mnt 3)" "$TMP/$tag".n{1,2,3}.log "$TMP/$tag".n{1,2,3}.mmap.log \
    >"$TMP/verify3.$tag.out" 2>&1 || fail "node 3 after rejoining: $(tail -8 "$TMP/verify3.$tag.out")"
  log "   node 3: $(tail -1 "$TMP/verify3.$tag.out")"
  on 3 python3 "$WORK" durable "$(mnt 3)" "b$round.n3" "$TMP/b$round.n3.log" "$TMP/nostop" 50 7 \
    >"$TMP/b.out" 2>&1 || fail "node 3 cannot work after rejoining: $(tail -3 "$TMP/b.out")"
  on 1 python3 "$WORK" verify "$(mnt 1)" "$TMP/b$round.n3.log" >"$TMP/b.v" 2>&1 ||
    fail "node 1 does not see node 3's new work: $(tail -3 "$TMP/b.v")"
  # The round's files go (the volume would fill up over many rounds; unlinks on a recovered
  # volume are worth doing too).
  on 2 sh -c 'rm -rf "$1"/'"$tag"'.* "$1"/b'"$round"'.n3' sh "$(mnt 2)" ||
    fail "node 2: removing round $round's files"
done
if [[ ${FAST:-0} == 1 ]]; then
  log "e. unmount every node; the daemons exit; fsck"
  final_check 1 2
  exit 0
fi

# ================================================================================================
log "c. cut node 3's link while it writes: it must fence itself; the majority recovers it"
KEEP=1 start_workers c 3 # the worker goes on when its operations fail
grows "$TMP/c.n3.log" 40 30
base1=$(failures_of 1 3)
t_cut=$(now_ms)
cl cut 3 >/dev/null 2>&1 3>&- 4>&-
ms=$(wait_recovered 1 3 $((base1 + 1)) "$t_cut")
# What node 3 had started when the majority was done with its journal (operations are numbered;
# the number is logged before the operation starts and stamped in every block it writes), and
# what its files hold then, as node 1 reads them.
started=$(started_seq "$TMP/c.n3.log")
started_mmap=$(started_seq "$TMP/c.n3.mmap.log")
on 1 python3 "$WORK" digest "$(mnt 1)" c.n3 >"$TMP/c.digest1" 2>&1 || fail "node 1: digest: $(tail -3 "$TMP/c.digest1")"
log "   majority: node 3 recovered $ms ms after the cut (it had started $started operations and $started_mmap mmap rounds): $(recovery_of 1 3 | cut -c1-120)"
wait_fenced 3 30
log "   node 3: $(timeout 10 "$UGFS2_TOOL" recovery "$(mnt 3)" | head -1)"
# The cut node goes on trying for a while: every write must be refused.
before=$(lines "$TMP/c.n3.log")
grows "$TMP/c.n3.log" 20 30
touch "$TMP/stop.c"
wait_job "${WPID[3]}" w.c.n3 60
wait "${MPID[3]}" 2>/dev/null || true
log "   node 3's worker: $(cat "$TMP/w.c.n3.out"); its log grew from $before to $(lines "$TMP/c.n3.log") lines while fenced"
cl heal 3 >/dev/null 2>&1 3>&- 4>&-
no_late_writes c.n3 1 "$TMP/c.digest1" "$started" "$started_mmap"
# The fenced mount unmounts (its journal stays as the majority left it), and node 3 mounts again.
remount_fenced 3 c.n3

# ================================================================================================
log "d. freeze node 3's daemon (SIGSTOP) past the eviction timeout while it writes; resume it"
KEEP=1 start_workers e 3
grows "$TMP/e.n3.log" 40 30
dpid=$(daemon_pids 3 | head -1)
[[ -n $dpid ]] || fail "node 3 has no daemon"
base1=$(failures_of 1 3)
t_stop=$(now_ms)
kill -STOP "$dpid"
ms=$(wait_recovered 1 3 $((base1 + 1)) "$t_stop")
started=$(started_seq "$TMP/e.n3.log")
started_mmap=$(started_seq "$TMP/e.n3.mmap.log")
on 1 python3 "$WORK" digest "$(mnt 1)" e.n3 >"$TMP/e.digest1" 2>&1 || fail "node 1: digest: $(tail -3 "$TMP/e.digest1")"
log "   survivors evicted and recovered the frozen node $ms ms after SIGSTOP: $(recovery_of 1 3 | cut -c1-120)"
kill -CONT "$dpid"
wait_fenced 3 30
log "   node 3 resumed: $(timeout 10 "$UGFS2_TOOL" recovery "$(mnt 3)" | head -1)"
grows "$TMP/e.n3.log" 20 30
touch "$TMP/stop.e"
wait_job "${WPID[3]}" w.e.n3 60
wait "${MPID[3]}" 2>/dev/null || true
log "   node 3's worker: $(cat "$TMP/w.e.n3.out")"
no_late_writes e.n3 1 "$TMP/e.digest1" "$started" "$started_mmap"
remount_fenced 3 e.n3

# ================================================================================================
log "e. unmount every node; the daemons exit; fsck"
# Errors: only node 3, while it was fenced (refused writes), may have logged some.
final_check 1 2
