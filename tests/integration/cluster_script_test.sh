#!/usr/bin/env bash
# cluster_script_test.sh: end-to-end test of scripts/cluster (ctest label: cluster).
#
# Brings up a uniquely named 3-node cluster and checks membership and quorum from every
# namespace (quorumtool and a real libcpg client), exec, crash/restart, cut/heal, a second
# concurrent cluster, the UGFS2_DAEMON mount hook (with a stand-in daemon), `down`, `down`
# after a SIGKILLed `up`, and the self-cleanup of an `up` stopped by SIGTERM.
# Needs root, corosync, iproute2, mkfs.gfs2. Exit 77 = skipped.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CLUSTER=${UGFS2_CLUSTER_SCRIPT:-$REPO/scripts/cluster}
ROOT=${UGFS2_CLUSTER_ROOT:-/tmp/ugfs2-cluster}
A=cst$$a # main 3-node cluster
B=cst$$b # concurrent 2-node cluster
C=cst$$c # killed-`up` cluster
D=cst$$d # SIGTERMed-`up` cluster

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
for t in corosync corosync-quorumtool corosync-cpgtool ip nsenter unshare mkfs.gfs2; do
  command -v "$t" >/dev/null || skip "missing $t"
done

TMP=$(mktemp -d /tmp/cluster_script_test.XXXXXX)
cleanup() {
  local rc=$?
  for n in "$A" "$B" "$C" "$D"; do "$CLUSTER" --name "$n" down >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
  ((rc == 0)) && echo "PASS" || echo "FAILED (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { echo "=== $*"; }
fail() {
  echo "FAIL: $*" >&2
  "$CLUSTER" --name "$A" status -v >&2 || true
  exit 1
}
check() { "$@" || fail "command failed: $*"; }
ca() { "$CLUSTER" --name "$A" "$@"; }
cb() { "$CLUSTER" --name "$B" "$@"; }

# Nothing of cluster $1 may remain: namespaces, processes, mounts, state dir.
assert_gone() {
  local n=$1
  ! ip netns list | grep -q "^ugfs2\.$n\." || fail "namespaces of $n left: $(ip netns list | grep "ugfs2\.$n\.")"
  ! pgrep -f "$ROOT/$n/" >/dev/null || fail "processes of $n left: $(pgrep -af "$ROOT/$n/")"
  ! grep -q " $ROOT/$n" /proc/self/mountinfo || fail "mounts of $n left"
  [[ ! -e $ROOT/$n ]] || fail "state dir $ROOT/$n left"
}

quorum_field() { # CLUSTER I FIELD -> value from corosync-quorumtool -s run in node I's namespace
  "$CLUSTER" --name "$1" exec "$2" corosync-quorumtool -s 2>/dev/null |
    awk -F: -v f="$3" '$1 == f {gsub(/ /, "", $2); print $2}' || true
}

# --- 1. bring-up ---------------------------------------------------------------------------
step "up 3-node cluster $A"
check ca up -n 3 --size 1G
[[ -f $ROOT/$A/cluster.env ]] || fail "no state file"
[[ $(ip netns list | grep -c "^ugfs2\.$A\.") -eq 4 ]] || fail "expected 4 namespaces"
check ca wait-quorum --timeout 30
list=$(ca list) || fail "list failed"
grep -q "^$A " <<<"$list" || fail "list does not show $A: $list"

step "quorumtool in each namespace: 3 members, quorate"
for i in 1 2 3; do
  [[ $(quorum_field "$A" "$i" Nodes) == 3 ]] || fail "node $i: quorumtool does not show 3 nodes"
  [[ $(quorum_field "$A" "$i" Quorate) == Yes ]] || fail "node $i: not quorate"
  [[ $(quorum_field "$A" "$i" "Node ID") == "$i" ]] || fail "node $i: quorumtool talks to the wrong corosync"
  [[ $(ca members "$i") == "1 2 3" ]] || fail "node $i: members '$(ca members "$i")'"
done

step "exec runs in the node's namespace"
addrs=""
for i in 1 2 3; do
  addr=$(ca env "$i" | sed -n 's/^export UGFS2_ADDR=//p')
  [[ $addr == 198.18.0.* ]] || fail "node $i: bad address '$addr'"
  ca exec "$i" ip -4 -br addr show dev eth0 | grep -q "$addr/24" || fail "node $i: eth0 lacks $addr"
  [[ $(ca exec "$i" ip netns identify) == "ugfs2.$A.n$i" ]] || fail "node $i: wrong namespace"
  [[ $(ca exec "$i" sh -c 'echo $UGFS2_NODE') == "$i" ]] || fail "node $i: UGFS2_NODE not set"
  addrs+="$addr "
done
set +e; ca exec 2 sh -c 'exit 7'; rc=$?; set -e
[[ $rc -eq 7 ]] || fail "exec did not propagate exit status (got $rc)"
links=$(ca exec 1 corosync-cfgtool -s) || fail "corosync-cfgtool failed on node 1"
[[ $(grep -c 'connected' <<<"$links") -eq 2 ]] || fail "node 1's knet links are not all connected: $links"

# --- 2. CPG clients (libcpg over the per-namespace abstract IPC socket) --------------------
if command -v cc >/dev/null && [[ -f /usr/include/corosync/cpg.h ]]; then
  step "libcpg client per node joins one group; cpgtool shows 3 members everywhere"
  cat >"$TMP/cpgjoin.c" <<'EOF'
/* Joins CPG group argv[1], prints "nodeid N" (local node id), then dispatches until killed. */
#include <corosync/cpg.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t n, uint32_t p, void *m, size_t l) {}
static void confchg(cpg_handle_t h, const struct cpg_name *g, const struct cpg_address *m, size_t nm,
                    const struct cpg_address *l, size_t nl, const struct cpg_address *j, size_t nj) {
  printf("members %zu\n", nm);
  fflush(stdout);
}
int main(int argc, char **argv) {
  cpg_callbacks_t cb = {.cpg_deliver_fn = deliver, .cpg_confchg_fn = confchg};
  cpg_handle_t h;
  struct cpg_name g;
  unsigned int nodeid = 0;
  int fd, tries = 0;
  cs_error_t e;
  if (argc < 2 || cpg_initialize(&h, &cb) != CS_OK) return 1;
  if (cpg_local_get(h, &nodeid) != CS_OK) return 1;
  g.length = strlen(argv[1]);
  memcpy(g.value, argv[1], g.length);
  while ((e = cpg_join(h, &g)) == CS_ERR_TRY_AGAIN && tries++ < 1000) usleep(10000);
  if (e != CS_OK) return 1;
  printf("nodeid %u\n", nodeid);
  fflush(stdout);
  cpg_fd_get(h, &fd);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, -1) > 0 && cpg_dispatch(h, CS_DISPATCH_ALL) != CS_OK) return 2;
  }
}
EOF
  cc -o "$TMP/cpgjoin" "$TMP/cpgjoin.c" -lcpg || fail "cannot build the cpg client"
  for i in 1 2 3; do
    ca exec "$i" "$TMP/cpgjoin" cst_group >"$TMP/cpg$i.out" 2>&1 &
    cpg_pid=$!
    disown "$cpg_pid" # killed by crash/down; no job-status noise
    check ca register "$i" "$cpg_pid" cpgjoin
  done
  for i in 1 2 3; do
    ok=0
    for _ in $(seq 50); do
      n=$(ca exec "$i" corosync-cpgtool -d ' ' | awk '$1 == "cst_group"' | wc -l)
      [[ $n -eq 3 ]] && { ok=1; break; }
      sleep 0.2
    done
    ((ok)) || fail "node $i: cpgtool does not show 3 members of cst_group"
    ids=$(ca exec "$i" corosync-cpgtool -d ' ' | awk '$1 == "cst_group" {print $3}' | sort -n | tr '\n' ' ')
    [[ $ids == "1 2 3 " ]] || fail "node $i: cpg member node ids '$ids'"
    grep -qx "nodeid $i" "$TMP/cpg$i.out" || fail "cpg client in node $i did not get node id $i"
  done
  CPG=1
else
  echo "(no C compiler or libcpg headers: skipping the CPG client check)"
  CPG=0
fi

# --- 3. crash, restart, cut, heal -------------------------------------------------------------
step "crash 3: nodes 1 and 2 see 2 members and stay quorate"
pid3=$(head -1 "$ROOT/$A/node3/corosync.pid")
check ca crash 3
! kill -0 "$pid3" 2>/dev/null || [[ $(awk '{print $3}' "/proc/$pid3/stat" 2>/dev/null) == Z ]] ||
  fail "corosync of node 3 survived the crash"
[[ -z $(ip netns pids "ugfs2.$A.n3" | xargs -r ps -o stat= -p | grep -v Z || true) ]] ||
  fail "processes left in node 3's namespace"
check ca wait-quorum 1 2 --members 2 --timeout 20
[[ $(quorum_field "$A" 1 Quorate) == Yes ]] || fail "node 1 lost quorum"
! ca exec 3 timeout 5 corosync-quorumtool -s >/dev/null 2>&1 || fail "node 3 still answers after crash"
if ((CPG)); then
  for _ in $(seq 50); do
    [[ $(ca exec 1 corosync-cpgtool -d ' ' | awk '$1 == "cst_group"' | wc -l) -eq 2 ]] && break
    sleep 0.2
  done
  [[ $(ca exec 1 corosync-cpgtool -d ' ' | awk '$1 == "cst_group"' | wc -l) -eq 2 ]] ||
    fail "cpg group still shows node 3's client"
fi

step "restart 3: 3 members again"
check ca restart 3
check ca wait-quorum --members 3 --timeout 30

step "cut 2: node 2 alone and inquorate, nodes 1 and 3 keep quorum"
check ca cut 2
check ca wait-quorum 2 --members 1 --inquorate --timeout 20
check ca wait-quorum 1 3 --members 2 --timeout 20
[[ $(quorum_field "$A" 2 Quorate) == No ]] || fail "quorumtool on node 2 does not show inquorate"
ca status | awk '$1 == 2' | grep -q ' cut ' || fail "status does not show node 2 cut"

step "heal 2: rejoin"
check ca heal 2
check ca wait-quorum --members 3 --timeout 30

# --- 4. a second cluster at the same time -----------------------------------------------------
step "second concurrent cluster $B (2 nodes, two_node) does not collide"
check cb up -n 2 --size 512M
for i in 1 2; do
  baddr=$(cb env "$i" | sed -n 's/^export UGFS2_ADDR=//p')
  [[ " $addrs " != *" $baddr "* ]] || fail "cluster $B reuses address $baddr of $A"
  [[ $(cb members "$i") == "1 2" ]] || fail "$B node $i: members '$(cb members "$i")'"
done
grep -q "two_node: 1" "$ROOT/$B/node1/corosync.conf" || fail "2-node cluster lacks two_node"
check ca wait-quorum --members 3 --timeout 5
check cb crash 2
check cb wait-quorum 1 --members 1 --timeout 20 # two_node: the survivor stays quorate
check ca wait-quorum --members 3 --timeout 5
check cb down
assert_gone "$B"
check ca wait-quorum --members 3 --timeout 5

# --- 5. mount hook (stand-in daemon: a tmpfs mount that lives as long as the process) --------
step "mount/umount via UGFS2_DAEMON"
cat >"$TMP/fake-daemon" <<'EOF'
#!/bin/bash
# stand-in for the ugfs2 daemon: ARGS... DEVICE MOUNTPOINT; stays in the foreground.
mnt=${*: -1}
echo "node=$UGFS2_NODE journal=$UGFS2_JOURNAL locktable=$UGFS2_LOCKTABLE args=$*"
mount -t tmpfs "fake-ugfs2-$UGFS2_NODE" "$mnt" || exit 1
while mountpoint -q "$mnt"; do sleep 0.2; done
EOF
chmod +x "$TMP/fake-daemon"
export UGFS2_DAEMON="$TMP/fake-daemon --fake"
check ca mount 1 -- --extra
check ca mount 2
grep -q "node=1 journal=0 locktable=$A:ugfs2 args=--fake --extra $ROOT/$A/image.img $ROOT/$A/node1/mnt" \
  "$ROOT/$A/node1/daemon.log" || fail "daemon got wrong arguments: $(cat "$ROOT/$A/node1/daemon.log")"
mountpoint -q "$ROOT/$A/node1/mnt" || fail "node 1 mount not visible from the host"
ca status | awk '$1 == 2' | grep -q "$ROOT/$A/node2/mnt" || fail "status does not show node 2's mount"
check ca umount 2
! mountpoint -q "$ROOT/$A/node2/mnt" || fail "node 2 still mounted"
unset UGFS2_DAEMON
# node 1 stays mounted: `down` must unmount it

# --- 6. down ------------------------------------------------------------------------------------
step "down $A"
check ca down
assert_gone "$A"
check ca down # idempotent
if ((CPG)); then ! pgrep -f "$TMP/cpgjoin" >/dev/null || fail "cpg clients survived down"; fi

# --- 7. down after a SIGKILLed up ---------------------------------------------------------------
step "down after \`up\` was SIGKILLed midway"
"$CLUSTER" --name "$C" up -n 3 --size 512M >"$TMP/upC.log" 2>&1 &
up_pid=$!
for _ in $(seq 300); do [[ -e $ROOT/$C/node2/corosync.pid ]] && break; sleep 0.05; done
[[ -e $ROOT/$C/node2/corosync.pid ]] || fail "up of $C never got to corosync: $(cat "$TMP/upC.log")"
kill -KILL "$up_pid"
wait "$up_pid" 2>/dev/null || true
ip netns list | grep -q "^ugfs2\.$C\." || fail "expected leftovers of the killed up"
check "$CLUSTER" --name "$C" down
assert_gone "$C"

# --- 8. up stopped by SIGTERM cleans up after itself --------------------------------------------
step "\`up\` stopped by SIGTERM removes what it built"
"$CLUSTER" --name "$D" up -n 3 --size 512M >"$TMP/upD.log" 2>&1 &
up_pid=$!
for _ in $(seq 300); do [[ -e $ROOT/$D/node1/corosync.pid ]] && break; sleep 0.05; done
kill -TERM "$up_pid"
wait "$up_pid" 2>/dev/null && fail "up of $D succeeded despite SIGTERM"
assert_gone "$D"
