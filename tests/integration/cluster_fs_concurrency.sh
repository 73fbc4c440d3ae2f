#!/usr/bin/env bash
# cluster_fs_concurrency.sh: three nodes working on one lock_dlm volume at the same time (ctest
# label: cluster). One `scripts/cluster up -n 3` cluster, three ugfs2 daemons mounted at once
# (-o commit=1, see below), workers in python (tests/integration/cluster_storm.py, which also
# holds the oracles). Every phase is bounded (PHASE_TIMEOUT); a phase that does not finish (or a
# worker that crashes) fails the test at once with every node's glock dump and DLM counters. A
# check that finds wrong results (the message count, wrong data, nodes that disagree) is
# reported at once and fails the test at the end: the later phases use other files and still
# run, so one run shows every phase's result.
#  a. message count: node 1 creates own1/ with 50 files, writes, stats and reads them back (the
#     warm-up; its statfs changes are folded into the master statfs file by the flusher within a
#     second: commit=1), then `ugfs2-tool counters` on node 1; then the same kind of work again on
#     the same, cached files, in three measured steps: listdir + stat; buffered and O_DIRECT
#     reads; same-size overwrites (no truncate, no allocation) with fsync, read back. Node 1 must
#     have sent 0 lock manager messages (ls_msgs_sent: all but the membership heartbeats) over
#     the three steps; both snapshots are printed.
#     Then the counter is shown alive: node 2 writes a file in own1/, node 1 reads it: node 1's
#     ls_msgs_sent and lm_callbacks must grow.
#  b. shared directory storm: PROCS processes per node, STORM_OPS operations each (a count, not
#     a time), all in storm/s1 (and storm/s2): create, rename within s1, rename s1 -> s2 and back,
#     hard link, unlink of own and of others' names (ENOENT races are counted). Then, from every
#     node: each name holds the content of the file it names (names and contents encode the
#     creating node/process/sequence), names of one inode name the same file, each link count is
#     the number of names of its inode, and the three nodes list the same names and inodes.
#  c. one file, concurrent appends (O_APPEND, 64-byte records tagged node/process/sequence with a
#     CRC) from every process of every node, and, at the same time, overlapping pwrite()s of
#     self-describing 6000-byte records to SLOTS fixed slots of another file (every writer
#     writes every slot, SLOT_ROUNDS times). Then, from every node: every appended record is
#     present exactly once and intact, the size is records * 64, and every slot holds one
#     complete record of one writer.
#  c2. direct writes' times: every process of every node writes 4 KiB O_DIRECT pages in place
#     into one file for DIO_SECS seconds (the nodes share its glock in DF, which cannot change
#     the dinode: each node updates mtime/ctime afterwards under a try of EX, which the others'
#     DF often refuses). Then, from every node: mtime and ctime are no older than the start of
#     the last write minus the time granularity (100 ms): an update refused at the end of the
#     burst is retried until made, not dropped (fs_io.sh has the case that always needs it).
#  d. a random mix on every node at once (fsstress-like: create, mkdir, write, truncate, rename,
#     link, unlink, rmdir, chmod, utime, read) in mix/nN (the node's own tree) and mix/shared,
#     MIX_OPS operations per process, seed printed (UGFS2_STRESS_SEED sets it); then every node
#     must see the same tree (paths, types, modes, link counts, sizes, inodes, content hashes).
#  e. every node unmounts (the daemon exits, its log says "unmounted ... cleanly"), no daemon
#     logged an error, and fsck-oracle says CLEAN for the volume as the cluster left it. If not,
#     the verdict is printed with the phase (b or d) that created each inode fsck names, the
#     volume is mounted once alone (-o lockproto=lock_nolock, which frees inodes left unlinked)
#     and checked again, for information: the test fails on the cluster-only verdict.
# On any exit a trap unmounts, stops the daemons and runs `scripts/cluster down`, then checks
# that no namespace, mount, process or loop device is left (as cluster_fs_mount.sh).
#
# commit=1: the flusher folds a node's statfs changes into the master statfs file (under that
# inode's glock EX) every commit interval while it has any; with the default 30 s the fold of the
# warm-up's creates could fall inside phase a's measured window. With 1 s it is done before.
#
# Environment: UGFS2_BIN, UGFS2_TOOL (set by ctest; defaults: the newest build tree of this
# checkout), UGFS2_CLUSTER_ROOT, UGFS2_FSCK_ORACLE, UGFS2_STRESS_SEED, UGFS2_KEEP_IMAGE (a path:
# the image is copied there before fsck, for debugging).
# Run: cd build/test && ctest -R cluster_fs_concurrency --output-on-failure (about 30 s).
# Needs root, /dev/fuse, corosync, iproute2, gfs2-utils, python3. Exit 77 = skip.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=${UGFS2_CLUSTER_SCRIPT:-$REPO/scripts/cluster}
ROOT=${UGFS2_CLUSTER_ROOT:-/tmp/ugfs2-cluster}
ORACLE=${UGFS2_FSCK_ORACLE:-$REPO/scripts/fsck-oracle}
STORM=$HERE/cluster_storm.py
if [[ -z ${UGFS2_BIN:-} ]]; then
  UGFS2_BIN=$(ls -t "$REPO"/build/*/fuse/ugfs2 2>/dev/null | head -1 || true)
fi
if [[ -z ${UGFS2_TOOL:-} ]]; then
  UGFS2_TOOL=$(ls -t "$(dirname "${UGFS2_BIN:-.}")/../dlm/ugfs2-tool" 2>/dev/null | head -1 || true)
fi
NAME=cfc$$        # unique cluster name; also the lock table's cluster part
NODES=(1 2 3)
NAME_WAIT=3       # seconds a change made on another node may take to show (kernel caches)
OP_TIMEOUT=60     # bound of any single command run in a node
PHASE_TIMEOUT=150 # bound of the workers of one phase
PROCS=2           # worker processes per node
DIO_SECS=3        # phase c2: seconds of direct writes
OWN_FILES=50      # phase a
STORM_OPS=150     # phase b, per process
APPEND_RECS=150   # phase c, per process
SLOTS=8 SLOT_SIZE=6000 SLOT_ROUNDS=3
MIX_OPS=200       # phase d, per process
SEED=${UGFS2_STRESS_SEED:-$((RANDOM * 32768 + RANDOM))}

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -e /dev/fuse ]] || skip "/dev/fuse missing"
for t in corosync corosync-quorumtool ip nsenter unshare mkfs.gfs2 fsck.gfs2 tunegfs2 losetup \
  fusermount3 python3; do
  command -v "$t" >/dev/null || skip "missing $t"
done
[[ -x ${UGFS2_BIN:-} ]] || { echo "FAIL: no ugfs2 daemon (set UGFS2_BIN)" >&2; exit 1; }
[[ -x ${UGFS2_TOOL:-} ]] || { echo "FAIL: no ugfs2-tool (set UGFS2_TOOL)" >&2; exit 1; }
[[ -x $ORACLE ]] || { echo "FAIL: no fsck oracle at $ORACLE" >&2; exit 1; }
[[ -f $STORM ]] || { echo "FAIL: no $STORM" >&2; exit 1; }

ST=$ROOT/$NAME    # the cluster's state dir (scripts/cluster's layout, docs/cluster.md)
IMG=$ST/image.img
TMP=$(mktemp -d /tmp/cluster_fs_concurrency.XXXXXX)
chmod 755 "$TMP"
T0=$SECONDS

log() { echo "[cluster_fs_concurrency +$((SECONDS - T0))s] $*"; }
# cl, mnt, now_ms, is_mnt, bounded, on, daemon_pids
source "$HERE/cluster_lib.sh"

# Diagnostics for a failure: cluster status, every daemon's log, every mounted node's counters
# and glocks, the workers' output.
diag() {
  set +e
  echo "======== diagnostics (cluster $NAME, seed $SEED)" >&2
  timeout 20 "$CLUSTER" --name "$NAME" status >&2 2>&1
  local i f
  for i in "${NODES[@]}"; do
    echo "-------- node $i: daemons: $(daemon_pids "$i" | tr '\n' ' ')" >&2
    if [[ -f $ST/node$i/daemon.log ]]; then
      echo "-------- node $i: daemon.log (last 60 lines)" >&2
      tail -60 "$ST/node$i/daemon.log" >&2
    fi
    if is_mnt "$(mnt "$i")"; then
      echo "-------- node $i: ugfs2-tool counters" >&2
      timeout 20 "$UGFS2_TOOL" counters "$(mnt "$i")" 2>&1 | tr '\n' ' ' >&2
      echo >&2
      echo "-------- node $i: ugfs2-tool glocks (busy ones: holders, waiters or a phase)" >&2
      timeout 20 "$UGFS2_TOOL" glocks "$(mnt "$i")" > "$TMP/glocks.n$i" 2>&1
      awk '/^G:/ { busy = ($0 !~ /phase:idle/); g = $0; shown = 0; if (busy) { print; shown = 1 }; next }
           { if (!shown) { print g; shown = 1 }; print }' "$TMP/glocks.n$i" | head -120 >&2
    fi
    local pid t
    for pid in $(daemon_pids "$i"); do
      echo "-------- node $i: daemon $pid: threads in the kernel (wchan) and user stacks" >&2
      for t in /proc/"$pid"/task/*; do
        echo "  $(basename "$t") $(cat "$t/comm" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null)" >&2
      done
      command -v gdb > /dev/null &&
        timeout 30 gdb -p "$pid" -batch -ex 'thread apply all bt 12' 2>/dev/null |
        grep -E '^(Thread|#)' | head -200 >&2
    done
  done
  echo "-------- workers still running: kernel stacks" >&2
  for pid in $(pgrep -f cluster_storm.py); do
    echo "  $pid: $(tr '\0' ' ' < /proc/"$pid"/cmdline 2>/dev/null | cut -c1-120)" >&2
    sed 's/^/    /' /proc/"$pid"/stack >&2 2>/dev/null
  done
  for f in "$TMP"/*.out "$TMP"/*.err; do
    [[ -s $f ]] || continue
    echo "-------- $(basename "$f")" >&2
    tail -20 "$f" >&2
  done
  echo "======== end of diagnostics" >&2
}

exec 3>&1 4>&2 # the test's own stdout/stderr: fail() and cleanup write there, whatever the
               # redirection of the command that failed
FAILURES=()    # failures that do not stop the test (phase a's count): reported at the end
fail() {
  exec 1>&3 2>&4
  local f
  for f in "${FAILURES[@]}"; do echo "FAIL (earlier): $f" >&2; done
  echo "FAIL: $*" >&2
  diag
  exit 1
}
# fail_later MSG: the test goes on (the other phases' results are worth having) and fails at the
# end; the glock dumps of the moment are kept for the diagnostics.
fail_later() {
  echo "FAIL (the test goes on, and fails at the end): $*" >&2
  FAILURES+=("$*")
  local i
  for i in "${NODES[@]}"; do
    timeout 20 "$UGFS2_TOOL" glocks "$(mnt "$i")" >"$TMP/glocks.fail${#FAILURES[@]}.n$i.err" 2>&1
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT
  exec 1>&3 2>&4
  cluster_teardown "$rc"
  rc=$?
  rm -rf "$TMP"
  ((rc == 0)) && echo "PASS ($((SECONDS - T0)) s, seed $SEED)" ||
    echo "FAILED (exit $rc, $((SECONDS - T0)) s, seed $SEED)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# check SECONDS WHAT CMD...: an oracle: as poll, but a check still failing after SECONDS is a
# fail_later (the later phases use other files and still run) and returns 1.
check() {
  local secs=$1 what=$2
  shift 2
  local t0 deadline tries=0
  t0=$(now_ms)
  deadline=$((t0 + secs * 1000))
  until "$@" >"$TMP/poll.last" 2>&1; do
    tries=$((tries + 1))
    if (($(now_ms) >= deadline)); then
      fail_later "$what: still not so after ${secs}s ($tries tries); last try: $(tail -5 "$TMP/poll.last")"
      return 1
    fi
    sleep 0.2
  done
  ((tries == 0)) || log "  ($what: took $(($(now_ms) - t0)) ms, $((tries + 1)) tries)"
}

# workers TAG ARGS...: on every node, PROCS processes of `cluster_storm.py ARGS...` at once, with
# @MNT@, @NODE@ and @PROC@ in ARGS replaced by the node's mount, its number and the process
# number; output in
# $TMP/TAG.nN.pP.{out,err}. Waits at most PHASE_TIMEOUT; fails naming the first worker that
# failed, with its error output; a worker that finished (printed its summary) but found wrong
# data on the way (exit 1) is a fail_later.
workers() {
  local tag=$1
  shift
  local i p a args pids=() names=()
  for i in "${NODES[@]}"; do
    for ((p = 0; p < PROCS; p++)); do
      args=()
      for a in "$@"; do
        a=${a//@MNT@/$(mnt "$i")}
        a=${a//@NODE@/$i}
        a=${a//@PROC@/$p}
        args+=("$a")
      done
      "$CLUSTER" --name "$NAME" exec "$i" python3 "$STORM" "${args[@]}" \
        >"$TMP/$tag.n$i.p$p.out" 2>"$TMP/$tag.n$i.p$p.err" 3>&- 4>&- &
      pids+=($!)
      names+=("$tag.n$i.p$p")
    done
  done
  local deadline=$((SECONDS + PHASE_TIMEOUT)) k rc
  for k in "${!pids[@]}"; do
    while kill -0 "${pids[$k]}" 2>/dev/null; do
      ((SECONDS < deadline)) || fail "$tag: worker ${names[$k]} not done after ${PHASE_TIMEOUT}s (hang?)"
      sleep 0.1
    done
    rc=0
    wait "${pids[$k]}" || rc=$?
    ((rc == 0)) && continue
    if ((rc == 1)) && [[ -s $TMP/${names[$k]}.out ]]; then
      fail_later "$tag: worker ${names[$k]} saw wrong data: $(head -5 "$TMP/${names[$k]}.err")"
    else
      fail "$tag: worker ${names[$k]} exited with status $rc: $(tail -5 "$TMP/${names[$k]}.err")"
    fi
  done
}

# counters I FILE: node I's `ugfs2-tool counters` into FILE.
counters() {
  on "$1" "$UGFS2_TOOL" counters "$(mnt "$1")" >"$2" 2>&1 ||
    fail "node $1: ugfs2-tool counters: $(cat "$2")"
  grep -q '^dlm_msgs_sent [0-9][0-9]*$' "$2" || fail "node $1: no dlm_msgs_sent counter: $(cat "$2")"
}
# counter FILE NAME: the value of NAME in a counters FILE.
counter() { awk -v k="$2" '$1 == k { print $2; f = 1 } END { if (!f) print "?" }' "$1"; }
# show_counters A B: "name A B (+delta)" for every counter of B.
show_counters() {
  awk 'NR == FNR { a[$1] = $2; next } { printf "     %-20s %10s %10s  %+d\n", $1, a[$1], $2, $2 - a[$1] }' "$1" "$2"
}
# msgs_delta A B: ls_msgs_sent of B minus A (every lockspace message but the heartbeats, which
# every member sends once a second whatever it does; dlm_msgs_sent counts those too).
msgs_delta() { echo $(($(counter "$2" ls_msgs_sent) - $(counter "$1" ls_msgs_sent))); }

# ================================================================================================
log "setup: up -n 3, lock_dlm image with 3 journals; mount on the three nodes at once (commit=1)"
log "   seed $SEED"
cl up -n 3 --size 1G >"$TMP/up.log" 2>&1 3>&- 4>&- || fail "cluster up: $(tail -5 "$TMP/up.log")"
[[ -f $IMG ]] || fail "no image at $IMG"
export UGFS2_DAEMON="$UGFS2_BIN -f" UGFS2_MOUNT_TIMEOUT=90
pids=()
for i in "${NODES[@]}"; do
  cl mount "$i" -- -o commit=1 >"$TMP/mount$i.log" 2>&1 3>&- 4>&- & # (no inherited test fds)
  pids+=($!)
done
for k in "${!pids[@]}"; do
  deadline=$((SECONDS + 120))
  while kill -0 "${pids[$k]}" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "mounting node $((k + 1)): not done after 120 s"
    sleep 0.1
  done
  wait "${pids[$k]}" || fail "mounting node $((k + 1)): $(tail -5 "$TMP/mount$((k + 1)).log")"
done
declare -A DAEMON
for i in "${NODES[@]}"; do
  m=$(mnt "$i")
  grep -q " $m fuseblk.ugfs2 " /proc/mounts || fail "node $i: $m is not a fuseblk.ugfs2 mount"
  mapfile -t dp < <(daemon_pids "$i")
  ((${#dp[@]} == 1)) || fail "node $i: expected one ugfs2 daemon in its namespace, found ${#dp[@]}"
  DAEMON[$i]=${dp[0]}
  out=$(on "$i" stat -c '%F' "$m" 2>&1) || fail "node $i: stat of the root: $out"
  [[ $out == directory ]] || fail "node $i: root is '$out'"
done
log "   mounted: daemons ${DAEMON[1]} ${DAEMON[2]} ${DAEMON[3]}"

# ================================================================================================
log "a. message count: node 1 warms up in own1/ ($OWN_FILES files created, written, stated, read)"
M1=$(mnt 1)
on 1 python3 "$STORM" warm "$M1/own1" "$OWN_FILES" >"$TMP/a.warm.out" 2>"$TMP/a.warm.err" ||
  fail "node 1: warm-up: $(tail -5 "$TMP/a.warm.err")"
log "   $(cat "$TMP/a.warm.out")"
# The flusher (commit=1) folds the creates' statfs changes under the master statfs glock: part
# of the warm-up. Wait until node 1 has sent nothing for longer than one commit interval.
quiet_deadline=$((SECONDS + 20))
counters 1 "$TMP/a.q0"
while :; do
  q_start=$(date +%s%N)
  until (( $(date +%s%N) - q_start >= 1500000000 )); do sleep 0.1; done
  counters 1 "$TMP/a.q1"
  (( $(msgs_delta "$TMP/a.q0" "$TMP/a.q1") == 0 )) && break
  ((SECONDS < quiet_deadline)) || fail "node 1 kept sending DLM messages for 20 s after its warm-up"
  mv "$TMP/a.q1" "$TMP/a.q0"
done
counters 1 "$TMP/a.c0"
prev=$TMP/a.c0
step_n=0
for step in stat read write; do
  step_n=$((step_n + 1))
  on 1 python3 "$STORM" rework "$M1/own1" "$OWN_FILES" 1 "$step" >"$TMP/a.$step.out" \
    2>"$TMP/a.$step.err" || fail "node 1: rework ($step): $(tail -5 "$TMP/a.$step.err")"
  counters 1 "$TMP/a.c$step_n"
  log "   $(cat "$TMP/a.$step.out"): node 1 sent $(msgs_delta "$prev" "$TMP/a.c$step_n") DLM messages"
  prev=$TMP/a.c$step_n
done
log "   node 1's counters before and after the measured work:"
show_counters "$TMP/a.c0" "$TMP/a.c3"
sent=$(msgs_delta "$TMP/a.c0" "$TMP/a.c3")
if ((sent == 0)); then
  log "   node 1 sent 0 DLM messages once warm"
else
  fail_later "a: node 1 sent $sent DLM messages working on its own cached files, expected 0 (lock module: $(($(counter "$TMP/a.c3" lm_requests) - $(counter "$TMP/a.c0" lm_requests))) new locks, $(($(counter "$TMP/a.c3" lm_converts) - $(counter "$TMP/a.c0" lm_converts))) conversions, $(($(counter "$TMP/a.c3" lm_unlocks) - $(counter "$TMP/a.c0" lm_unlocks))) unlocks)"
fi
on 2 sh -c 'echo "written on node 2" >"$1"' _ "$(mnt 2)/own1/from2" || fail "node 2: writing own1/from2"
poll "$NAME_WAIT" "node 1: own1/from2 (written on node 2) readable" \
  on 1 sh -c 'test "$(cat "$1")" = "written on node 2"' _ "$M1/own1/from2"
counters 1 "$TMP/a.c4"
log "   after node 2 wrote own1/from2 and node 1 read it (counter alive):"
show_counters "$TMP/a.c3" "$TMP/a.c4"
sent=$(msgs_delta "$TMP/a.c3" "$TMP/a.c4")
((sent > 0)) || fail "node 1's ls_msgs_sent did not grow when it had to take glocks back from node 2"
cb=$(($(counter "$TMP/a.c4" lm_callbacks) - $(counter "$TMP/a.c3" lm_callbacks)))
((cb > 0)) || fail "node 1's lm_callbacks did not grow when node 2 took its directory's glock"

# ================================================================================================
log "b. shared directory storm: $PROCS processes per node, $STORM_OPS ops each, in storm/s1 and storm/s2"
on 1 mkdir -p "$M1/storm/s1" "$M1/storm/s2" || fail "node 1: mkdir storm/s1 storm/s2"
for i in 2 3; do
  poll "$NAME_WAIT" "node $i: storm/s2 visible" on "$i" test -d "$(mnt "$i")/storm/s2"
done
t0=$(now_ms)
workers b storm @MNT@/storm @NODE@ @PROC@ "$STORM_OPS" "$SEED" "$TMP/inos.b.@NODE@.@PROC@"
log "   $((3 * PROCS * STORM_OPS)) operations in $(($(now_ms) - t0)) ms"
for f in "$TMP"/b.n*.out; do log "   $(cat "$f")"; done
# storm_check I: node I's check passes and its manifest equals node 1's.
storm_check() {
  on "$1" python3 "$STORM" storm-check "$(mnt "$1")/storm" >"$TMP/b.check$1.txt" 2>"$TMP/b.check$1.err" ||
    { cat "$TMP/b.check$1.err"; return 1; }
  [[ $1 == 1 ]] || cmp -s "$TMP/b.check1.txt" "$TMP/b.check$1.txt" ||
    { diff "$TMP/b.check1.txt" "$TMP/b.check$1.txt" | head -10; return 1; }
}
ok=1
for i in "${NODES[@]}"; do
  check "$NAME_WAIT" "b: node $i: storm names, contents and link counts right (and as on node 1)" \
    storm_check "$i" || ok=0
done
((ok == 0)) ||
  log "   every node: $(tail -1 "$TMP/b.check1.txt" | sed 's/^# //'); identical on the three nodes"

# ================================================================================================
log "c. one file: O_APPEND records from every process; overlapping pwrites to $SLOTS slots"
on 1 sh -c ': >"$1" && truncate -s "$3" "$2"' _ "$M1/append.log" "$M1/slots.dat" \
  $((SLOTS * SLOT_SIZE)) || fail "node 1: creating append.log and slots.dat"
for i in 2 3; do
  poll "$NAME_WAIT" "node $i: slots.dat visible with its size" \
    on "$i" sh -c 'test "$(stat -c %s "$1")" = "$2"' _ "$(mnt "$i")/slots.dat" $((SLOTS * SLOT_SIZE))
done
t0=$(now_ms)
# the appenders and the slot writers run at the same time: one workers call with both.
cat >"$TMP/c.sh" <<'EOF'
set -e
python3 "$1" append "$2/append.log" "$3" "$4" "$5" &
a=$!
python3 "$1" slots "$2/slots.dat" "$3" "$4" "$6" "$7" "$8" "$9"
wait "$a"
EOF
for i in "${NODES[@]}"; do
  for ((p = 0; p < PROCS; p++)); do
    "$CLUSTER" --name "$NAME" exec "$i" bash "$TMP/c.sh" "$STORM" "$(mnt "$i")" "$i" "$p" \
      "$APPEND_RECS" "$SLOTS" "$SLOT_ROUNDS" "$SLOT_SIZE" "$SEED" \
      >"$TMP/c.n$i.p$p.out" 2>"$TMP/c.n$i.p$p.err" 3>&- 4>&- &
    echo "$! c.n$i.p$p" >>"$TMP/c.pids"
  done
done
deadline=$((SECONDS + PHASE_TIMEOUT))
while read -r pid tag; do
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "c: worker $tag not done after ${PHASE_TIMEOUT}s (hang?)"
    sleep 0.1
  done
  rc=0
  wait "$pid" || rc=$?
  ((rc == 0)) || fail "c: worker $tag exited with status $rc: $(tail -5 "$TMP/$tag.err")"
done <"$TMP/c.pids"
log "   $((3 * PROCS * APPEND_RECS)) appends and $((3 * PROCS * SLOTS * SLOT_ROUNDS)) slot pwrites in $(($(now_ms) - t0)) ms"
for i in "${NODES[@]}"; do
  check "$NAME_WAIT" "c: node $i: every appended record present once and intact" \
    on "$i" python3 "$STORM" append-check "$(mnt "$i")/append.log" 3 "$PROCS" "$APPEND_RECS" &&
    log "   node $i: $(tail -1 "$TMP/poll.last")"
  check "$NAME_WAIT" "c: node $i: every slot holds one complete record" \
    on "$i" python3 "$STORM" slots-check "$(mnt "$i")/slots.dat" "$SLOTS" "$SLOT_SIZE" &&
    log "   node $i: $(tail -1 "$TMP/poll.last")"
done

# ================================================================================================
log "c2. direct writes' times: $PROCS O_DIRECT writers per node in one file for ${DIO_SECS}s"
on 1 sh -c 'head -c 1048576 /dev/zero >"$1" && sync "$1"' _ "$M1/dio.dat" ||
  fail "node 1: creating dio.dat"
for i in 2 3; do
  poll "$NAME_WAIT" "node $i: dio.dat visible with its size" \
    on "$i" sh -c 'test "$(stat -c %s "$1")" = 1048576' _ "$(mnt "$i")/dio.dat"
done
workers c2 dio-times @MNT@/dio.dat @NODE@ @PROC@ "$DIO_SECS" "$SEED"
last=0
for f in "$TMP"/c2.n*.p*.out; do
  t=$(awk '{ print $NF }' "$f")
  [[ $t =~ ^[0-9]+$ ]] || fail "c2: no time in $f: $(cat "$f")"
  ((t > last)) && last=$t
done
log "   $(cat "$TMP"/c2.n*.p*.out | awk '{ n += $6 } END { print n }') direct writes"
for i in "${NODES[@]}"; do
  check "$NAME_WAIT" "c2: node $i: mtime and ctime of dio.dat no older than the last direct write" \
    on "$i" python3 "$STORM" times-check "$(mnt "$i")/dio.dat" "$last" 200 &&
    log "   node $i: $(tail -1 "$TMP/poll.last")"
done

# ================================================================================================
log "d. random mix: $PROCS processes per node, $MIX_OPS ops each, in mix/nN and mix/shared (seed $SEED)"
on 1 mkdir -p "$M1/mix/n1" "$M1/mix/n2" "$M1/mix/n3" "$M1/mix/shared" || fail "node 1: mkdir mix/..."
for i in 2 3; do
  poll "$NAME_WAIT" "node $i: mix/shared visible" on "$i" test -d "$(mnt "$i")/mix/shared"
done
t0=$(now_ms)
workers d mix @MNT@/mix @NODE@ @PROC@ "$MIX_OPS" "$SEED" "$TMP/inos.d.@NODE@.@PROC@"
log "   $((3 * PROCS * MIX_OPS)) operations in $(($(now_ms) - t0)) ms"
for f in "$TMP"/d.n*.out; do log "   $(cat "$f")"; done
mix_same() {
  on "$1" python3 "$STORM" manifest "$(mnt "$1")/mix" >"$TMP/d.manifest$1.txt" 2>&1 ||
    { tail -3 "$TMP/d.manifest$1.txt"; return 1; }
  [[ $1 == 1 ]] || cmp -s "$TMP/d.manifest1.txt" "$TMP/d.manifest$1.txt" ||
    { diff "$TMP/d.manifest1.txt" "$TMP/d.manifest$1.txt" | head -10; return 1; }
}
ok=1
for i in "${NODES[@]}"; do
  check "$NAME_WAIT" "d: node $i: the mix tree as node 1 sees it" mix_same "$i" || ok=0
done
((ok == 0)) ||
  log "   the three nodes see the same tree: $(wc -l <"$TMP/d.manifest1.txt") objects ($(grep -c ' d ' "$TMP/d.manifest1.txt" || true) directories)"

# ================================================================================================
log "e. unmount every node; the daemons exit; fsck"
for i in "${NODES[@]}"; do
  counters "$i" "$TMP/e.c$i"
  log "   node $i totals: $(tr '\n' ' ' <"$TMP/e.c$i")"
done
for i in "${NODES[@]}"; do
  t0=$(now_ms)
  bounded 60 "node $i: umount" umount "$(mnt "$i")" 2>"$TMP/umount$i.log" ||
    fail "node $i: umount failed: $(cat "$TMP/umount$i.log")"
  ! is_mnt "$(mnt "$i")" || fail "node $i: still mounted after umount"
  deadline=$((SECONDS + 30))
  while kill -0 "${DAEMON[$i]}" 2>/dev/null && [[ $(awk '{print $3}' "/proc/${DAEMON[$i]}/stat" 2>/dev/null) != Z ]]; do
    ((SECONDS < deadline)) || fail "node $i: the daemon (pid ${DAEMON[$i]}) did not exit within 30 s of umount"
    sleep 0.1
  done
  grep -q "unmounted $IMG cleanly" "$ST/node$i/daemon.log" || fail "node $i: its daemon did not log a clean unmount"
  cl umount "$i" >/dev/null 2>&1 || fail "node $i: scripts/cluster umount after the unmount"
  log "   node $i: unmounted cleanly, daemon gone ($(($(now_ms) - t0)) ms)"
done
if grep -H ' error: ' "$ST"/node*/daemon.log >"$TMP/errors.txt"; then
  fail "daemon errors logged: $(head -10 "$TMP/errors.txt")"
fi
grep -H ' warning: ' "$ST"/node*/daemon.log | sed 's/^/   warning logged: /' | head -20 || true
losetup -j "$IMG" | grep -q . && fail "loop devices still attached to the image: $(losetup -j "$IMG")"
if [[ -n ${UGFS2_KEEP_IMAGE:-} ]]; then # a debugging aid: the volume as the cluster left it
  cp --sparse=always "$IMG" "$UGFS2_KEEP_IMAGE" && log "   image kept as $UGFS2_KEEP_IMAGE"
fi
# The daemons wrote the image O_DIRECT, so none of it is in the host's page cache, and fsck's
# ~14000 small reads each went to the disk: minutes on a busy host. One sequential read first.
t0=$(now_ms)
dd if="$IMG" of=/dev/null bs=4M status=none || fail "reading $IMG"
log "   (image read into the page cache in $(($(now_ms) - t0)) ms)"
rc=0
t0=$(now_ms)
verdict=$("$ORACLE" "$IMG" 2>&1) || rc=$?
log "   (fsck took $(($(now_ms) - t0)) ms)"
if ((rc == 0)) && [[ $verdict == CLEAN ]]; then
  log "   fsck-oracle (as the cluster left the volume): CLEAN"
  ((${#FAILURES[@]} == 0)) || fail "${#FAILURES[@]} earlier failure(s)"
  exit 0
fi
log "   fsck-oracle (as the cluster left the volume): $(head -1 <<<"$verdict")"
sed 's/^/     | /' <<<"$verdict"
# Which phase created the inodes fsck names (workers recorded the inode numbers they created).
for n in $(grep -oE '\b[0-9]{3,}\b' <<<"$verdict" | sort -un); do
  ph=""
  for f in "$TMP"/inos.*; do
    [[ -f $f ]] && grep -qx "$n" "$f" && ph+=" $(basename "$f" | cut -d. -f2)"
  done
  [[ -n $ph ]] && log "   inode $n (fsck names it) was created in phase(s):$(tr ' ' '\n' <<<"$ph" | sort -u | tr '\n' ' ')"
done
log "   for information: mounting the volume alone once (lock_nolock frees unlinked inodes)"
solo="(not run)"
if cl mount 1 -- -o lockproto=lock_nolock >"$TMP/solo.log" 2>&1 3>&- 4>&-; then
  bounded 60 "node 1: umount of the lock_nolock mount" umount "$M1" 2>>"$TMP/solo.log" || true
  cl umount 1 >/dev/null 2>&1 || true
  solo=$("$ORACLE" "$IMG" 2>&1 | head -20) || true
else
  solo="lock_nolock mount failed: $(tail -3 "$TMP/solo.log")"
fi
log "   fsck-oracle after the lock_nolock mount: $(head -1 <<<"$solo")"
fail "fsck-oracle on the volume as the cluster left it: $(head -1 <<<"$verdict") (after a lock_nolock mount: $(head -1 <<<"$solo"))"
