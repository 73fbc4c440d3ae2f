# recovery_lib.sh: what the node-failure tests share (cluster_recovery.sh,
# cluster_recovery_multi.sh): diagnostics, fail and cleanup (EXIT trap), recovery-state polling
# (`ugfs2-tool recovery`), and the workers of recovery_work.py with their durability logs.
# Sourced after cluster_lib.sh. The caller sets CLUSTER, NAME, ST, NODES, TMP, T0, SEED, WORK,
# UGFS2_TOOL, RECOVERY_TIMEOUT (s), IMG and log().
diag() {
  set +e
  echo "======== diagnostics (cluster $NAME, seed $SEED)" >&2
  timeout 20 "$CLUSTER" --name "$NAME" status >&2 2>&1
  local i
  for i in "${NODES[@]}"; do
    if is_mnt "$(mnt "$i")"; then
      echo "-------- node $i: ugfs2-tool recovery" >&2
      timeout 10 "$UGFS2_TOOL" recovery "$(mnt "$i")" >&2 2>&1
      echo "-------- node $i: busy glocks" >&2
      timeout 10 "$UGFS2_TOOL" glocks "$(mnt "$i")" 2>&1 | busy_glocks | head -60 >&2
    fi
    [[ -f $ST/node$i/daemon.log ]] || continue
    echo "-------- node $i: daemon.log (last 40 lines, cpg lines left out)" >&2
    grep -v 'dlm cpg: confchg' "$ST/node$i/daemon.log" | tail -40 >&2
  done
  local f
  for f in "$TMP"/*.out "$TMP"/*.err; do
    [[ -s $f ]] || continue
    echo "-------- $(basename "$f")" >&2
    tail -8 "$f" >&2
  done
  echo "======== end of diagnostics" >&2
}
exec 3>&1 4>&2
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
  if ((rc != 0)) && [[ -n ${UGFS2_KEEP_TMP:-} ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
  ((rc == 0)) && echo "PASS ($((SECONDS - T0)) s, seed $SEED)" ||
    echo "FAILED (exit $rc, $((SECONDS - T0)) s, seed $SEED)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# recovery_of I NODE: node I's recovery line for NODE ("node 3: done, ...").
recovery_of() { timeout 10 "$UGFS2_TOOL" recovery "$(mnt "$1")" 2>/dev/null | grep "^node $2: " || true; }
# failures_of SURVIVOR NODE: how many failures of NODE SURVIVOR has seen (0 if none).
failures_of() {
  local l
  l=$(recovery_of "$1" "$2")
  [[ $l =~ \(failure\ ([0-9]+)\) ]] && echo "${BASH_REMATCH[1]}" || echo 0
}
# recovered SURVIVOR NODE N: SURVIVOR reports NODE's Nth (or a later) failure recovered.
recovered() {
  local l
  l=$(recovery_of "$1" "$2")
  [[ $l =~ ^node\ $2:\ done\ \(failure\ ([0-9]+)\) ]] && ((BASH_REMATCH[1] >= $3))
}
# wait_recovered SURVIVOR NODE N SINCE_MS: until SURVIVOR reports NODE's Nth failure recovered;
# prints the time taken since SINCE_MS.
wait_recovered() {
  local deadline=$(($(now_ms) + RECOVERY_TIMEOUT * 1000)) n=$3
  until recovered "$1" "$2" "$n"; do
    (($(now_ms) < deadline)) || fail "node $1 did not finish recovering node $2 (failure $n) within ${RECOVERY_TIMEOUT}s: $(recovery_of "$1" "$2")"
    sleep 0.1
  done
  echo $(($(now_ms) - $4))
}
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }
# grows FILE N SECS: FILE gains N lines within SECS.
grows() {
  local start deadline
  start=$(lines "$1")
  deadline=$((SECONDS + $3))
  until (($(lines "$1") >= start + $2)); do
    ((SECONDS < deadline)) || fail "$1 did not grow by $2 lines in $3 s (a survivor's worker is stuck?)"
    sleep 0.1
  done
}
# wait_job PID WHAT SECS: the background job exits 0 within SECS.
wait_job() {
  local deadline=$((SECONDS + $3)) rc=0
  while kill -0 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "$2: still running after $3 s"
    sleep 0.1
  done
  wait "$1" || rc=$?
  ((rc == 0)) || fail "$2: exit $rc: $(tail -3 "$TMP/$2.err" 2>/dev/null)"
}
mount_node() { # I [OPTS]
  cl mount "$1" -- -o "commit=1${2:+,$2}" >"$TMP/mount$1.log" 2>&1 3>&- 4>&- ||
    fail "mounting node $1: $(tail -5 "$TMP/mount$1.log")"
}
# start_workers TAG NODE...: a durable worker and an mmap writer per node (stop file $TMP/stop.TAG)
start_workers() {
  local tag=$1 i
  shift
  rm -f "$TMP/stop.$tag"
  for i in "$@"; do
    cl exec "$i" python3 "$WORK" durable "$(mnt "$i")" "$tag.n$i" "$TMP/$tag.n$i.log" \
      "$TMP/stop.$tag" 1000000 "$((SEED + i))" "${KEEP:-0}" >"$TMP/w.$tag.n$i.out" 2>"$TMP/w.$tag.n$i.err" 3>&- 4>&- &
    WPID[$i]=$!
    cl exec "$i" python3 "$WORK" mmapw "$(mnt "$i")/$tag.n$i.mmap" "$tag.n$i" "$TMP/$tag.n$i.mmap.log" \
      "$TMP/stop.$tag" 1000000 >"$TMP/m.$tag.n$i.out" 2>"$TMP/m.$tag.n$i.err" 3>&- 4>&- &
    MPID[$i]=$!
  done
}
declare -A WPID MPID

# wait_fenced I SECS: node I reports itself fenced (writes refused) within SECS.
wait_fenced() {
  local deadline=$((SECONDS + $2))
  until timeout 10 "$UGFS2_TOOL" recovery "$(mnt "$1")" 2>/dev/null | grep -q 'fenced yes.*writes refused'; do
    ((SECONDS < deadline)) || fail "node $1 does not report itself fenced within $2 s: $(timeout 10 "$UGFS2_TOOL" recovery "$(mnt "$1")" 2>&1 | head -3)"
    sleep 0.2
  done
}
# started_seq LOG: the number of the last operation the worker of LOG had started.
started_seq() { awk '$1 == "I" && NF == 3 { s = $3 } END { print s + 0 }' "$1"; }
# no_late_writes TAG SURVIVOR DIGEST_BEFORE STARTED STARTED_MMAP: after a fenced node's workers
# stopped, SURVIVOR reads TAG's files: the same content as DIGEST_BEFORE (taken when the
# survivors had recovered the node), no stamp newer than what had started by then, and every
# state fsync'd before is there.
no_late_writes() {
  local tag=$1 s=$2
  on "$s" python3 "$WORK" digest "$(mnt "$s")" "$tag" >"$TMP/$tag.digest2" 2>&1 ||
    fail "node $s: digest: $(tail -3 "$TMP/$tag.digest2")"
  cmp -s "$3" "$TMP/$tag.digest2" ||
    fail "$tag's files changed after the survivors recovered its node: $(diff "$3" "$TMP/$tag.digest2" | head -5)"
  on "$s" python3 "$WORK" stamps "$(mnt "$s")" "$tag" "$4" "$5" >"$TMP/$tag.stamps" 2>&1 ||
    fail "a write of the fenced node landed after its recovery: $(head -5 "$TMP/$tag.stamps")"
  on "$s" python3 "$WORK" verify "$(mnt "$s")" "$TMP/$tag.log" "$TMP/$tag.mmap.log" >"$TMP/$tag.verify" 2>&1 ||
    fail "$tag's fsync'd states before the failure: $(tail -5 "$TMP/$tag.verify")"
  log "   node $s: $(tail -1 "$TMP/$tag.stamps"); $(tail -1 "$TMP/$tag.verify"); $(wc -l <"$3") files unchanged"
}
# remount_fenced I TAG: the fenced mount of node I unmounts, its daemon exits, and node I mounts
# again and reads back what TAG's worker fsync'd.
remount_fenced() {
  bounded 60 "node $1: umount of the fenced mount" umount "$(mnt "$1")" 2>"$TMP/umount$1.log" ||
    fail "node $1: umount of the fenced mount failed: $(cat "$TMP/umount$1.log")"
  wait_daemons_gone "$1" 30
  cl umount "$1" >/dev/null 2>&1 || fail "node $1: scripts/cluster umount after the unmount"
  cl wait-quorum --timeout 30 >"$TMP/wq.log" 2>&1 3>&- 4>&- || fail "quorum: $(cat "$TMP/wq.log")"
  mount_node "$1"
  on "$1" python3 "$WORK" verify "$(mnt "$1")" "$TMP/$2.log" >"$TMP/$2.verify.remount" 2>&1 ||
    fail "node $1 after its remount: $(tail -5 "$TMP/$2.verify.remount")"
  log "   node $1 remounted: $(grep -o 'mounted .*journal[0-9]*)' "$ST/node$1/daemon.log" | tail -1)"
}
# final_check SURVIVORS...: unmount every node (clean unmounts logged, daemons gone), no error
# logged by SURVIVORS, fsck-oracle CLEAN.
final_check() {
  local i
  for i in "${NODES[@]}"; do
    is_mnt "$(mnt "$i")" || continue
    bounded 60 "node $i: umount" umount "$(mnt "$i")" 2>"$TMP/umount$i.log" ||
      fail "node $i: umount failed: $(cat "$TMP/umount$i.log")"
    wait_daemons_gone "$i" 30
    grep -q "unmounted $IMG cleanly" "$ST/node$i/daemon.log" || fail "node $i: no clean unmount logged"
    cl umount "$i" >/dev/null 2>&1 || fail "node $i: scripts/cluster umount after the unmount"
  done
  for i in "$@"; do
    if grep -H ' error: ' "$ST/node$i/daemon.log" >"$TMP/errors.txt"; then
      fail "daemon errors logged on node $i: $(head -5 "$TMP/errors.txt")"
    fi
  done
  dd if="$IMG" of=/dev/null bs=4M status=none || fail "reading $IMG"
  local rc=0 verdict
  verdict=$("$ORACLE" "$IMG" 2>&1) || rc=$?
  ((rc == 0)) && [[ $verdict == CLEAN ]] || fail "fsck-oracle: $(head -20 <<<"$verdict")"
  log "   fsck-oracle: CLEAN"
}
