# cluster_lib.sh: helpers shared by the cluster tests (cluster_fs_mount.sh, cluster_coherence.sh,
# cluster_fs_concurrency.sh). Sourced, not run. The caller sets CLUSTER (scripts/cluster), NAME
# (the cluster's unique name), ST (its state dir), OP_TIMEOUT (seconds) and defines fail().
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
