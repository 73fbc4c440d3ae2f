# cluster_lib.sh: helpers shared by the cluster tests (cluster_fs_mount.sh, cluster_coherence.sh,
# cluster_fs_concurrency.sh). Sourced, not run. The caller sets CLUSTER (scripts/cluster), NAME
# (the cluster's unique name), ST (its state dir), OP_TIMEOUT (seconds) and defines fail();
# cluster_teardown also uses IMG, NODES and TMP. The recovery tests source it too.
cl() { "$CLUSTER" --name "$NAME" "$@"; }
mnt() { echo "$ST/node$1/mnt"; }
now_ms() { date +%s%3N; }
is_mnt() { grep -q "^[^ ]* [^ ]* [^ ]* [^ ]* $1 " /proc/self/mountinfo; } # never stats the path
# bounded SECONDS WHAT CMD...: CMD's status, or the test fails after SECONDS. Not `timeout`: a
# request a stuck daemon has read blocks its caller uninterruptibly (SIGKILL waits for the
# reply), so CMD runs in the background and is left to the cleanup (which kills the daemons).
bounded() {
  local secs=$1 what=$2
  shift 2
  local pid deadline rc=0
  "$@" &
  pid=$!
  deadline=$(($(now_ms) + secs * 1000))
  while kill -0 "$pid" 2>/dev/null; do
    (($(now_ms) < deadline)) || fail "$what: still running after ${secs}s (stuck daemon?)"
    sleep 0.05
  done
  wait "$pid" || rc=$?
  return $rc
}
# on I CMD...: CMD in node I's network namespace, bounded.
on() {
  local i=$1
  shift
  bounded "$OP_TIMEOUT" "node $i: $*" "$CLUSTER" --name "$NAME" exec "$i" "$@"
}
# daemon_pids I: the ugfs2 processes in node I's namespace.
daemon_pids() {
  local p
  for p in $(ip netns pids "ugfs2.$NAME.n$1" 2>/dev/null); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == ugfs2 ]] && echo "$p"
  done
  return 0
}
# busy_glocks: filters a glock dump (stdin) to the glocks with holders, waiters or a phase.
busy_glocks() {
  awk '/^G:/ { busy = ($0 !~ /phase:idle/); g = $0; shown = 0; if (busy) { print; shown = 1 }; next }
       { if (!shown) { print g; shown = 1 }; print }'
}
# cluster_teardown RC: the cleanup of a cluster test (call it from the EXIT trap with the exit
# status so far; it returns the final one). Background jobs are SIGKILLed; every mount of NODES
# (and of EXTRA_MNTS, an optional array) gets a graceful unmount (10 s), then every node that
# still has a daemon is crashed, stuck FUSE connections of the image are aborted; then
# `scripts/cluster down`; then nothing of the cluster may be left (namespaces, mounts,
# processes, loop devices, state dir). Uses CLUSTER, NAME, ST, IMG, NODES, TMP.
cluster_teardown() {
  local rc=$1 i m p left
  for p in $(jobs -p); do kill -KILL "$p" 2>/dev/null; done
  local umounts=()
  for m in $(for i in "${NODES[@]}"; do mnt "$i"; done) ${EXTRA_MNTS[@]+"${EXTRA_MNTS[@]}"}; do
    is_mnt "$m" || continue
    umount "$m" 2>/dev/null &
    umounts+=($!)
  done
  local deadline=$((SECONDS + 10))
  for p in "${umounts[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  done
  for i in "${NODES[@]}"; do
    [[ -n $(daemon_pids "$i") ]] || continue
    echo "cleanup: node $i still has a daemon: crashing it" >&2
    timeout -k 5 60 "$CLUSTER" --name "$NAME" crash "$i" >/dev/null 2>&1
  done
  # A daemon thread stuck in the kernel (a cache invalidation waiting for a page lock that a
  # request of the same connection holds) keeps its /dev/fuse open after SIGKILL, so the
  # connection, the detached mount and its loop device stay: abort the connections of our
  # image's loop devices still there after 5 s (/sys/fs/fuse/connections/DEV, DEV = the
  # device number of the fuseblk superblock, the loop device's).
  deadline=$((SECONDS + 5))
  while losetup -j "$IMG" 2>/dev/null | grep -q . && ((SECONDS < deadline)); do sleep 0.1; done
  local dev conn
  # fusectl is not mounted on a fresh Debian 12: without it nothing could be aborted.
  mountpoint -q /sys/fs/fuse/connections || mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null
  for dev in $(losetup -j "$IMG" 2>/dev/null | cut -d: -f1); do
    conn=$(stat -c '%t %T' "$dev" 2>/dev/null) || continue
    conn=$(((0x${conn% *} << 20) | 0x${conn#* }))
    [[ -w /sys/fs/fuse/connections/$conn/abort ]] || continue
    echo "cleanup: aborting the stuck FUSE connection $conn ($dev)" >&2
    echo 1 >"/sys/fs/fuse/connections/$conn/abort"
  done
  # `down`: corosyncs, namespaces, loop devices, the state dir and the image.
  timeout -k 5 120 "$CLUSTER" --name "$NAME" down >"$TMP/down.log" 2>&1 ||
    { echo "cleanup: scripts/cluster down failed: $(cat "$TMP/down.log")" >&2; ((rc != 0)) || rc=1; }
  deadline=$((SECONDS + 20))
  for p in $(jobs -p); do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  done
  left=""
  for p in $(jobs -p); do kill -0 "$p" 2>/dev/null && left+=" job($p)"; done
  [[ -n $left ]] || wait 2>/dev/null
  ip netns list 2>/dev/null | grep -q "^ugfs2\.$NAME\." && left+=" namespaces"
  grep -q " $ST" /proc/self/mountinfo && left+=" mounts"
  pgrep -f "$ST/" >/dev/null && left+=" processes($(pgrep -f "$ST/" | tr '\n' ' '))"
  losetup -a 2>/dev/null | grep -q "$ST/" && left+=" loop-devices"
  [[ -e $ST ]] && left+=" state-dir"
  if [[ -n $left ]]; then
    echo "cleanup: left behind by cluster $NAME:$left" >&2
    ((rc != 0)) || rc=1
  fi
  return "$rc"
}
# daemon_stacks I: every thread's stack of node I's daemons (gdb), for a hang's diagnostics.
daemon_stacks() {
  local pid
  for pid in $(daemon_pids "$1"); do
    echo "-------- node $1: daemon $pid: thread stacks" >&2
    command -v gdb >/dev/null &&
      timeout 30 gdb -p "$pid" -batch -ex 'thread apply all bt 14' 2>/dev/null |
      grep -E '^(Thread|#)' | grep -v ' in (start_thread|clone3) ' | head -250 >&2
  done
}
# wait_daemons_gone I SECS: node I's daemons exit within SECS; else their stacks and fail.
wait_daemons_gone() {
  local deadline=$((SECONDS + $2))
  while [[ -n $(daemon_pids "$1") ]]; do
    if ((SECONDS >= deadline)); then
      daemon_stacks "$1"
      fail "node $1: its daemon did not exit within $2 s of the unmount"
    fi
    sleep 0.1
  done
}
# poll SECONDS WHAT CMD...: CMD until it succeeds (every 0.1 s); fails the test after SECONDS
# with CMD's last output. Logs how long it took when that was more than one try (log() is the
# caller's). Uses TMP.
poll() {
  local secs=$1 what=$2
  shift 2
  local t0 deadline tries=0
  t0=$(now_ms)
  deadline=$((t0 + secs * 1000))
  until "$@" >"$TMP/poll.last" 2>&1; do
    tries=$((tries + 1))
    (($(now_ms) < deadline)) || fail "$what: still not so after ${secs}s ($tries tries); last try: $(tail -5 "$TMP/poll.last")"
    sleep 0.1
  done
  ((tries == 0)) || log "  ($what: took $(($(now_ms) - t0)) ms, $((tries + 1)) tries)"
}
