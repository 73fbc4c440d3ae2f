#!/usr/bin/env bash
# cluster_recovery_multi.sh: several failures at once on a five-node lock_dlm volume (ctest label:
# cluster). Real corosync, real FUSE mounts, one shared image; nodes 1-3 are mounted with
# `-o fence_agent=scripts/cluster --name NAME crash` (the local cluster's fence agent: it
# SIGKILLs everything in the failed node's namespace and waits until it is gone).
#  a. two at once: every node runs a data+metadata worker and an mmap writer with durability
#     logs (recovery_work.py); nodes 4 and 5 are crashed at the same moment. The three
#     survivors keep quorum, run the fence agent for both, recover both journals, and go on:
#     their logs grow afterwards; every state any node fsync'd (the dead ones' included, but for
#     their operation in flight) is read back exactly from node 1.
#  b. the recovering node dies mid-replay: nodes 4 and 5 mount again; node 5 writes FILES files
#     and fsyncs their directory once (its last commit stays replayable in its journal: -o
#     commit=600, nobody touches its glocks) and is crashed; as soon as
#     a survivor logs that it is replaying node 5's journal, that survivor is crashed too. The
#     other survivors (still a quorum of three) must take the recovery over: node 5's journal is
#     replayed again from the start (replay is idempotent), the dead survivor's journal too, and
#     every file node 5 synced is there, exact. Up to three tries to hit the replay window (the
#     kill is asynchronous); a run that never hits it fails.
#  Then every node unmounts, fsck-oracle CLEAN.
# Environment: UGFS2_BIN, UGFS2_TOOL (ctest sets them), UGFS2_CLUSTER_ROOT, UGFS2_FSCK_ORACLE,
# UGFS2_STRESS_SEED, FILES (default 1500).
# Needs root, /dev/fuse, corosync, iproute2, gfs2-utils, python3. Exit 77 = skip.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=${UGFS2_CLUSTER_SCRIPT:-$REPO/scripts/cluster}
ROOT=${UGFS2_CLUSTER_ROOT:-/tmp/ugfs2-cluster}
ORACLE=${UGFS2_FSCK_ORACLE:-$REPO/scripts/fsck-oracle}
WORK=$HERE/recovery_work.py
NAME=rcm$$
NODES=(1 2 3 4 5)
OP_TIMEOUT=60
FILES=${FILES:-1500}
SEED=${UGFS2_STRESS_SEED:-$((RANDOM * 32768 + RANDOM))}
RECOVERY_TIMEOUT=60

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -e /dev/fuse ]] || skip "/dev/fuse missing"
for t in corosync corosync-quorumtool ip nsenter unshare mkfs.gfs2 fsck.gfs2 losetup python3; do
  command -v "$t" >/dev/null || skip "missing $t"
done
[[ -x ${UGFS2_BIN:-} ]] || { echo "FAIL: no ugfs2 daemon (set UGFS2_BIN)" >&2; exit 1; }
[[ -x ${UGFS2_TOOL:-} ]] || { echo "FAIL: no ugfs2-tool (set UGFS2_TOOL)" >&2; exit 1; }
[[ -x $ORACLE ]] || { echo "FAIL: no fsck oracle at $ORACLE" >&2; exit 1; }

ST=$ROOT/$NAME
IMG=$ST/image.img
TMP=$(mktemp -d /tmp/cluster_recovery_multi.XXXXXX)
T0=$SECONDS
log() { echo "[cluster_recovery_multi +$((SECONDS - T0))s] $*"; }
source "$HERE/cluster_lib.sh"
source "$HERE/recovery_lib.sh"
AGENT="fence_agent=$CLUSTER --name $NAME crash"
# Survivors replay slowly (tests-only option: 1 ms before each block written in place), so that
# phase b can crash one mid-replay; node 5 commits only when told (one big commit in phase b:
# with commit=1 its periodic statfs folds would hand the master statfs glock around, and every
# glock leaving a node retires its newest commit).
SLOW=replay_delay_us=1000
opts_of() { case $1 in 1 | 2 | 3) echo "$AGENT,$SLOW" ;; 4) echo "$SLOW" ;; 5) echo "commit=600" ;; esac; }

log "cluster $NAME: 5 nodes, seed $SEED"
cl up -n 5 --size 2G >"$TMP/up.log" 2>&1 3>&- 4>&- || fail "cluster up: $(tail -5 "$TMP/up.log")"
export UGFS2_DAEMON="$UGFS2_BIN -f" UGFS2_MOUNT_TIMEOUT=90
for i in "${NODES[@]}"; do mount_node "$i" "$(opts_of "$i")"; done
log "   mounted on every node (nodes 1-3 with the fence agent)"

# ================================================================================================
log "a. crash nodes 4 and 5 at once while every node writes"
start_workers a 1 2 3 4 5
for i in 1 4 5; do grows "$TMP/a.n$i.log" 30 30; done
declare -A B4 B5
for s in 1 2 3; do B4[$s]=$(failures_of "$s" 4) B5[$s]=$(failures_of "$s" 5); done
t_kill=$(now_ms)
cl crash 4 >"$TMP/crash4.log" 2>&1 3>&- 4>&- &
c4=$!
cl crash 5 >"$TMP/crash5.log" 2>&1 3>&- 4>&- &
c5=$!
wait "$c4" || fail "crash 4: $(cat "$TMP/crash4.log")"
wait "$c5" || fail "crash 5: $(cat "$TMP/crash5.log")"
for s in 1 2 3; do
  ms4=$(wait_recovered "$s" 4 $((B4[$s] + 1)) "$t_kill")
  ms5=$(wait_recovered "$s" 5 $((B5[$s] + 1)) "$t_kill")
  log "   node $s: node 4 recovered after $ms4 ms, node 5 after $ms5 ms"
done
grep -h 'fence agent fenced node [45]' "$ST"/node[123]/daemon.log | sed 's/^/   /' | head -6
grep -q 'fence agent fenced node 4' "$ST"/node[123]/daemon.log || fail "no survivor ran the fence agent for node 4"
grep -q 'fence agent fenced node 5' "$ST"/node[123]/daemon.log || fail "no survivor ran the fence agent for node 5"
for i in 1 2 3; do grows "$TMP/a.n$i.log" 30 30; done
touch "$TMP/stop.a"
for i in 1 2 3; do
  wait_job "${WPID[$i]}" "w.a.n$i" 60
  wait_job "${MPID[$i]}" "m.a.n$i" 60
done
wait "${WPID[4]}" "${MPID[4]}" "${WPID[5]}" "${MPID[5]}" 2>/dev/null || true
on 1 python3 "$WORK" verify "$(mnt 1)" "$TMP"/a.n{1,2,3,4,5}.log "$TMP"/a.n{1,2,3,4,5}.mmap.log \
  >"$TMP/verify.a" 2>&1 || fail "fsync'd data lost: $(tail -8 "$TMP/verify.a")"
log "   node 1: $(tail -1 "$TMP/verify.a")"
log "   journals: $(timeout 10 "$UGFS2_TOOL" recovery "$(mnt 1)" | grep '^journal' | tr '\n' ' ')"

# ================================================================================================
log "b. a survivor dies while it replays a dead node's journal; the others take over"
# rejoin I...: the crashed nodes' corosyncs restart, every node sees all five, they mount again
# (nodes 1-3 with the fence agent).
rejoin() {
  local i
  for i in "$@"; do
    cl umount "$i" >/dev/null 2>&1 || true
    cl restart "$i" >"$TMP/restart.log" 2>&1 3>&- 4>&- || fail "restart $i: $(cat "$TMP/restart.log")"
  done
  cl wait-quorum --timeout 30 >"$TMP/wq.log" 2>&1 3>&- 4>&- || fail "quorum after restart: $(cat "$TMP/wq.log")"
  for i in "$@"; do mount_node "$i" "$(opts_of "$i")"; done
}
rejoin 4 5
hit=0
for try in 1 2 3; do
  tag=b$try
  # Node 5: one big commit that stays replayable; its manifest (name sha) once the sync returned.
  on 5 python3 "$WORK" batch "$(mnt 5)/$tag" "$FILES" "$TMP/$tag.manifest" >"$TMP/$tag.batch" 2>&1 ||
    fail "node 5's batch failed: $(tail -3 "$TMP/$tag.batch")"
  jid5=$(grep -o 'mounted .*journal\([0-9]*\))' "$ST/node5/daemon.log" | tail -1 | grep -o 'journal[0-9]*')
  declare -A BF
  declare -A LOGLINES
  for s in 1 2 3 4; do
    BF[$s]=$(failures_of "$s" 5)
    LOGLINES[$s]=$(wc -l <"$ST/node$s/daemon.log")
  done
  t_kill=$(now_ms)
  cl crash 5 >/dev/null 2>&1 3>&- 4>&-
  # The first survivor to start replaying node 5's journal is crashed at once.
  victim=""
  deadline=$((SECONDS + RECOVERY_TIMEOUT))
  while [[ -z $victim ]]; do
    for s in 1 2 3 4; do
      if tail -n +$((LOGLINES[$s] + 1)) "$ST/node$s/daemon.log" |
        grep -q "$jid5 belongs to a failed node and is dirty: replaying"; then
        victim=$s
        break
      fi
    done
    [[ -n $victim ]] && break
    ((SECONDS < deadline)) || fail "no survivor started replaying node 5's $jid5 within ${RECOVERY_TIMEOUT}s"
    sleep 0.005
  done
  for p in $(daemon_pids "$victim"); do kill -KILL "$p"; done
  cl crash "$victim" >/dev/null 2>&1 3>&- 4>&-
  if tail -n +$((LOGLINES[$victim] + 1)) "$ST/node$victim/daemon.log" | grep -q "$jid5 recovered:"; then
    log "   try $try: node $victim had finished replaying $jid5 before it died; again"
  else
    hit=1
    log "   try $try: node $victim crashed while replaying node 5's $jid5 ($(($(now_ms) - t_kill)) ms after node 5's crash)"
  fi
  rest=()
  for s in 1 2 3 4; do [[ $s == "$victim" ]] || rest+=("$s"); done
  for s in "${rest[@]}"; do
    ms=$(wait_recovered "$s" 5 $((BF[$s] + 1)) "$t_kill")
    bv=$(failures_of "$s" "$victim")
    deadline=$((SECONDS + RECOVERY_TIMEOUT))
    until recovered "$s" "$victim" "$bv" && ((bv > 0)); do
      ((SECONDS < deadline)) || fail "node $s: node $victim's failure not recovered: $(recovery_of "$s" "$victim")"
      sleep 0.1
      bv=$(failures_of "$s" "$victim")
    done
    log "   node $s: node 5 recovered after $ms ms; node $victim: $(recovery_of "$s" "$victim" | cut -c1-90)"
  done
  grep -h "$jid5 recovered:" "$ST"/node*/daemon.log | sed 's/^/   /' | tail -2
  on "${rest[0]}" python3 "$WORK" manifest_check "$(mnt "${rest[0]}")/$tag" "$TMP/$tag.manifest" \
    >"$TMP/$tag.check" 2>&1 || fail "node 5's synced files after the double failure: $(tail -5 "$TMP/$tag.check")"
  log "   node ${rest[0]}: $(tail -1 "$TMP/$tag.check")"
  # Both come back for the next try (and for the final unmount).
  rejoin "$victim" 5
  ((hit)) && break
done
((hit)) || fail "three tries never crashed a survivor during its replay (each had finished already)"

# ================================================================================================
log "c. unmount every node; the daemons exit; fsck"
final_check 1 2 3
