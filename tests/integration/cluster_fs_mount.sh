#!/usr/bin/env bash
# cluster_fs_mount.sh: one lock_dlm volume mounted on three nodes at once (ctest label: cluster).
#
# The real parts: `scripts/cluster up -n 3` (3 network namespaces, 3 corosyncs, one shared image
# formatted lock_dlm with 3 journals and lock table NAME:ugfs2), then one ugfs2 daemon per node
# (all three started at once). Checks, each bounded (a name that appears on another node is
# polled for up to NAME_WAIT seconds: the kernel's entry and attribute caches time out after 1 s;
# everything else is checked at once):
#  1. every node mounts and serves (stat of the root in each namespace); exactly one node is the
#     first mounter; `ugfs2-tool glocks` works and shows glocks; the three nodes hold three
#     different journals (the journal the daemon log names, and the journal glock 9/J it holds
#     EX in its dump);
#  2. cross-node coherence: node 1 writes a file, nodes 2 and 3 read identical bytes (O_DIRECT,
#     and a node that never read it); node 2 appends, nodes 1 and 3 see the new size and bytes
#     (O_DIRECT and buffered); node 3 renames it into a new directory, nodes 1 and 2 find it
#     there (and not under the old name); mkdir and chmod on one node are seen on the others;
#  3. concurrency: the three nodes each create 100 files in one shared directory and 100 in a
#     directory of their own, at the same time; then every node lists all 300 shared names and
#     each own directory's 100, and reads a sample of the others' files with the right bytes;
#  4. a fourth mount (node 1 again, another mountpoint) is refused: without jid= with a message
#     naming gfs2_jadd, with jid=1 naming the busy journal; the three mounts keep serving;
#  5. every node unmounts (umount returns, the daemon exits, its log says "unmounted ...
#     cleanly"), no daemon logged an error, and fsck-oracle says CLEAN.
# No file is unlinked (a cluster mount leaves unlinked inodes for a node mounting alone).
# On any exit a trap unmounts, stops the daemons and runs `scripts/cluster down` for the unique
# cluster name, then checks that no namespace, mount, process or loop device is left.
#
# Environment: UGFS2_BIN (daemon), UGFS2_TOOL (ugfs2-tool), both set by ctest (defaults: the
# newest build tree of this checkout); UGFS2_CLUSTER_ROOT; UGFS2_FSCK_ORACLE.
# Every command in a node is bounded by polling it (not `timeout`: a FUSE request a stuck daemon
# has read blocks its caller beyond SIGKILL); a stuck daemon fails the test with its glock dump.
# Run: cd build/test && ctest -R cluster_fs_mount --output-on-failure (about 15 s).
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
NAME=cfm$$        # unique cluster name; also the lock table's cluster part
NODES=(1 2 3)
NAME_WAIT=3       # seconds a name or attribute change made on another node may take to show
OP_TIMEOUT=60     # bound of any single command run in a node
FILES=100         # files per node in the shared directory, and in its own

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root"
[[ -e /dev/fuse ]] || skip "/dev/fuse missing"
for t in corosync corosync-quorumtool ip nsenter unshare mkfs.gfs2 fsck.gfs2 tunegfs2 losetup \
  fusermount3; do
  command -v "$t" >/dev/null || skip "missing $t"
done
[[ -x ${UGFS2_BIN:-} ]] || { echo "FAIL: no ugfs2 daemon (set UGFS2_BIN)" >&2; exit 1; }
[[ -x ${UGFS2_TOOL:-} ]] || { echo "FAIL: no ugfs2-tool (set UGFS2_TOOL)" >&2; exit 1; }
[[ -x $ORACLE ]] || { echo "FAIL: no fsck oracle at $ORACLE" >&2; exit 1; }

ST=$ROOT/$NAME    # the cluster's state dir (scripts/cluster's layout, docs/cluster.md)
IMG=$ST/image.img
MNT2=$ST/node1/mnt2  # the refused fourth mount (under the state dir: `down` unmounts it)
TMP=$(mktemp -d /tmp/cluster_fs_mount.XXXXXX)
chmod 755 "$TMP"
T0=$SECONDS

log() { echo "[cluster_fs_mount +$((SECONDS - T0))s] $*"; }
# cl, mnt, now_ms, is_mnt, bounded, on, daemon_pids
source "$HERE/cluster_lib.sh"

# Diagnostics for a failure: cluster status, every daemon's log, every mounted node's glocks.
diag() {
  set +e
  echo "======== diagnostics (cluster $NAME)" >&2
  timeout 20 "$CLUSTER" --name "$NAME" status >&2 2>&1
  local i
  for i in "${NODES[@]}"; do
    echo "-------- node $i: daemons: $(daemon_pids "$i" | tr '\n' ' ')" >&2
    if [[ -f $ST/node$i/daemon.log ]]; then
      echo "-------- node $i: daemon.log (last 60 lines)" >&2
      tail -60 "$ST/node$i/daemon.log" >&2
    fi
    if is_mnt "$(mnt "$i")"; then
      echo "-------- node $i: ugfs2-tool glocks" >&2
      timeout 20 "$UGFS2_TOOL" glocks "$(mnt "$i")" 2>&1 | head -150 >&2
    fi
  done
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
  EXTRA_MNTS=("$MNT2")
  cluster_teardown "$rc"
  rc=$?
  rm -rf "$TMP"
  ((rc == 0)) && echo "PASS ($((SECONDS - T0)) s)" || echo "FAILED (exit $rc, $((SECONDS - T0)) s)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_pids SECONDS WHAT PID...: bounded wait for background jobs; fails if one exits non-zero.
wait_pids() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs)) p rc
  for p in "$@"; do
    while kill -0 "$p" 2>/dev/null; do
      ((SECONDS < deadline)) || fail "$what: not done after ${secs}s"
      sleep 0.1
    done
    rc=0
    wait "$p" || rc=$?
    ((rc == 0)) || fail "$what: a job exited with status $rc"
  done
}

sha() { sha256sum | cut -d' ' -f1; }

# Deterministic contents of file K of node I (1..300 lines: stuffed and unstuffed files).
cat >"$TMP/lib.sh" <<'EOF'
gen() {
  local i=$1 k=$2 n l s=""
  n=$(((k * 13 + i * 7) % 300 + 1))
  for ((l = 1; l <= n; l++)); do s+="ugfs2 node $i file $k line $l"$'\n'; done
  printf '%s' "$s"
}
# worker I MNT N: N files in MNT/shared and N in MNT/ownI, interleaved.
worker() {
  local i=$1 m=$2 n=$3 k
  for ((k = 1; k <= n; k++)); do
    gen "$i" "$k" >"$m/shared/n${i}_$k" || { echo "node $i: writing shared/n${i}_$k failed"; return 1; }
    gen "$i" "$k" >"$m/own$i/f$k" || { echo "node $i: writing own$i/f$k failed"; return 1; }
  done
}
# check_sample I MNT: node I reads a sample of the other nodes' files.
check_sample() {
  local i=$1 m=$2 j k f bad=0
  for j in 1 2 3; do
    ((j == i)) && continue
    for k in 1 2 17 42 50 63 77 99 100; do
      for f in "shared/n${j}_$k" "own$j/f$k"; do
        if ! cmp -s <(gen "$j" "$k") "$m/$f"; then
          echo "node $i: $f differs from what node $j wrote ($(stat -c %s "$m/$f" 2>&1) bytes)"
          bad=1
        fi
      done
    done
  done
  return $bad
}
EOF
# shellcheck disable=SC1091
source "$TMP/lib.sh"

# ================================================================================================
log "1. up -n 3: lock_dlm image, 3 journals, lock table $NAME:ugfs2"
cl up -n 3 --size 1G >"$TMP/up.out" 2>&1 3>&- 4>&- || fail "cluster up: $(tail -5 "$TMP/up.out")"
[[ -f $IMG ]] || fail "no image at $IMG"
sb=$(tunegfs2 -l "$IMG" 2>&1) || fail "tunegfs2 -l: $sb"
grep -q '^Lock protocol: lock_dlm$' <<<"$sb" || fail "image is not lock_dlm: $sb"
grep -q "^Lock table: $NAME:ugfs2\$" <<<"$sb" || fail "lock table is not $NAME:ugfs2: $sb"
grep -q '^Journals: *3$' "$ST/mkfs.log" || fail "image does not have 3 journals: $(cat "$ST/mkfs.log")"

log "   mount on the three nodes at once"
export UGFS2_DAEMON="$UGFS2_BIN -f" UGFS2_MOUNT_TIMEOUT=90
pids=()
for i in "${NODES[@]}"; do
  cl mount "$i" >"$TMP/mount$i.out" 2>&1 3>&- 4>&- &  # (no inherited test fds in daemons)
  pids+=($!)
done
wait_pids 120 "mounting the three nodes" "${pids[@]}"
declare -A JOURNAL DAEMON
for i in "${NODES[@]}"; do
  m=$(mnt "$i")
  grep -q " $m fuseblk.ugfs2 " /proc/mounts || fail "node $i: $m is not a fuseblk.ugfs2 mount"
  mapfile -t dp < <(daemon_pids "$i")
  ((${#dp[@]} == 1)) || fail "node $i: expected one ugfs2 daemon in its namespace, found ${#dp[@]}"
  DAEMON[$i]=${dp[0]}
  out=$(on "$i" stat -c '%F %a' "$m" 2>&1) || fail "node $i: stat of the root: $out"
  [[ $out == "directory 755" ]] || fail "node $i: root is '$out'"
  grep -q "joined cluster $NAME, lockspace ugfs2, node $i\$" "$ST/node$i/daemon.log" ||
    fail "node $i: the daemon did not log joining cluster $NAME as node $i"
  j=$(sed -n "s/.* info: mounted .* (GFS2, .*, lock_dlm $NAME:ugfs2, journal\([0-9][0-9]*\))\$/\1/p" \
    "$ST/node$i/daemon.log")
  [[ $j =~ ^[0-9]+$ ]] || fail "node $i: no 'mounted ... journalN' line in its daemon log"
  JOURNAL[$i]=$j
done
first=$(grep -l "cluster mount: first node to mount" "$ST"/node*/daemon.log | wc -l)
others=$(grep -l "cluster mount: other nodes are mounted" "$ST"/node*/daemon.log | wc -l)
((first == 1 && others == 2)) || fail "expected one first mounter and two others, got $first and $others"
[[ $(printf '%s\n' "${JOURNAL[@]}" | sort -n | tr '\n' ' ') == "0 1 2 " ]] ||
  fail "the nodes did not take journals 0, 1, 2: ${JOURNAL[*]}"
log "   journals: node 1 -> ${JOURNAL[1]}, node 2 -> ${JOURNAL[2]}, node 3 -> ${JOURNAL[3]}"

log "   ugfs2-tool glocks on every node: glocks shown, the node's own journal glock held EX"
for i in "${NODES[@]}"; do
  on "$i" "$UGFS2_TOOL" glocks "$(mnt "$i")" >"$TMP/glocks$i.txt" 2>&1 ||
    fail "node $i: ugfs2-tool glocks: $(cat "$TMP/glocks$i.txt")"
  ng=$(grep -c '^G:' "$TMP/glocks$i.txt" || true)
  ((ng >= 2)) || fail "node $i: the glock dump shows $ng glocks: $(cat "$TMP/glocks$i.txt")"
  # journal glocks (type 9) this node holds EX (a G: line followed by an EX holder)
  held=$(awk '/^G:/ { g = ""; if (match($0, / n:9\/[0-9a-f]+/)) g = substr($0, RSTART + 5, RLENGTH - 5) }
              /^ H: s:EX/ && g != "" { print g; g = "" }' "$TMP/glocks$i.txt")
  [[ $held == "$(printf '%x' "${JOURNAL[$i]}")" ]] ||
    fail "node $i: holds journal glock(s) '$held', its log says journal ${JOURNAL[$i]}: $(cat "$TMP/glocks$i.txt")"
  grep -q '^G:  s:SH n:1/1 ' "$TMP/glocks$i.txt" || fail "node $i: the live glock 1/1 is not held SH"
done

# ================================================================================================
log "2. cross-node coherence"
head -c $((1024 * 1024 + 4321)) /dev/urandom >"$TMP/data"
head -c 70001 /dev/urandom >"$TMP/append"
cat "$TMP/data" "$TMP/append" >"$TMP/data+append"
sum1=$(sha <"$TMP/data")
size1=$(stat -c %s "$TMP/data")
sum2=$(sha <"$TMP/data+append")
size2=$(stat -c %s "$TMP/data+append")
# in node I: PATH's size / mode is VALUE (stat's error, if any, is the poll's last output)
size_is() { on "$1" sh -c 's=$(stat -c %s "$1") && echo "size $s" && [ "$s" = "$2" ]' _ "$2" "$3"; }
mode_is() { on "$1" sh -c 'm=$(stat -c %a "$1") && echo "mode $m" && [ "$m" = "$2" ]' _ "$2" "$3"; }

log "   node 1 writes file1; nodes 2 (O_DIRECT) and 3 (first read there) read it"
on 1 cp "$TMP/data" "$(mnt 1)/file1" || fail "node 1: writing file1"
for i in 2 3; do poll "$NAME_WAIT" "node $i: file1 visible" on "$i" stat -c %n "$(mnt "$i")/file1"; done
got=$(on 2 dd if="$(mnt 2)/file1" iflag=direct bs=1M status=none | sha) || fail "node 2: reading file1"
[[ $got == "$sum1" ]] || fail "node 2: file1 (O_DIRECT) differs from what node 1 wrote"
got=$(on 3 cat "$(mnt 3)/file1" | sha) || fail "node 3: reading file1"
[[ $got == "$sum1" ]] || fail "node 3: file1 differs from what node 1 wrote"
for i in 2 3; do
  s=$(on "$i" stat -c %s "$(mnt "$i")/file1") || fail "node $i: stat file1"
  [[ $s == "$size1" ]] || fail "node $i: file1 has size $s, expected $size1"
done

log "   node 2 appends; nodes 1 and 3 see the new size and bytes"
on 2 sh -c 'cat "$1" >>"$2"' _ "$TMP/append" "$(mnt 2)/file1" || fail "node 2: appending to file1"
for i in 1 3; do
  poll "$NAME_WAIT" "node $i: file1 has the appended size $size2" \
    size_is "$i" "$(mnt "$i")/file1" "$size2"
  got=$(on "$i" dd if="$(mnt "$i")/file1" iflag=direct bs=1M status=none | sha) || fail "node $i: reading file1"
  [[ $got == "$sum2" ]] || fail "node $i: file1 after the append (O_DIRECT) differs"
  got=$(on "$i" cat "$(mnt "$i")/file1" | sha) || fail "node $i: reading file1"
  [[ $got == "$sum2" ]] || fail "node $i: file1 after the append (buffered, page cache) differs"
done

log "   node 3 renames it to dest/renamed (a new directory); nodes 1 and 2 find it there"
on 3 mkdir "$(mnt 3)/dest" || fail "node 3: mkdir dest"
on 3 mv "$(mnt 3)/file1" "$(mnt 3)/dest/renamed" || fail "node 3: rename file1"
for i in 1 2; do
  poll "$NAME_WAIT" "node $i: file1 gone from the root" on "$i" test ! -e "$(mnt "$i")/file1"
  poll "$NAME_WAIT" "node $i: dest/renamed visible" on "$i" stat -c %n "$(mnt "$i")/dest/renamed"
  got=$(on "$i" dd if="$(mnt "$i")/dest/renamed" iflag=direct bs=1M status=none | sha) ||
    fail "node $i: reading dest/renamed"
  [[ $got == "$sum2" ]] || fail "node $i: dest/renamed differs"
done

log "   mkdir and chmod on one node, seen on the others"
on 1 mkdir -m 0755 "$(mnt 1)/made_on_1" || fail "node 1: mkdir"
for i in 2 3; do
  poll "$NAME_WAIT" "node $i: made_on_1 visible with mode 755" \
    mode_is "$i" "$(mnt "$i")/made_on_1" 755
done
on 2 chmod 0710 "$(mnt 2)/made_on_1" || fail "node 2: chmod"
on 2 mkdir -m 0700 "$(mnt 2)/made_on_1/sub_on_2" || fail "node 2: mkdir sub_on_2"
on 3 chmod 0640 "$(mnt 3)/dest/renamed" || fail "node 3: chmod dest/renamed"
for i in 1 3; do
  poll "$NAME_WAIT" "node $i: chmod 710 of made_on_1 by node 2 visible" \
    mode_is "$i" "$(mnt "$i")/made_on_1" 710
  poll "$NAME_WAIT" "node $i: made_on_1/sub_on_2 visible with mode 700" \
    mode_is "$i" "$(mnt "$i")/made_on_1/sub_on_2" 700
done
for i in 1 2; do
  poll "$NAME_WAIT" "node $i: chmod 640 of dest/renamed by node 3 visible" \
    mode_is "$i" "$(mnt "$i")/dest/renamed" 640
done

# ================================================================================================
log "3. concurrency: each node creates $FILES files in shared/ and $FILES in its own directory, at once"
on 1 mkdir "$(mnt 1)/shared" || fail "node 1: mkdir shared"
for i in "${NODES[@]}"; do
  on "$i" mkdir "$(mnt "$i")/own$i" || fail "node $i: mkdir own$i"
done
for i in "${NODES[@]}"; do
  poll "$NAME_WAIT" "node $i: shared/ visible" on "$i" test -d "$(mnt "$i")/shared"
done
t0=$(now_ms)
pids=()
for i in "${NODES[@]}"; do
  # not `on`: the bound is the wait below
  "$CLUSTER" --name "$NAME" exec "$i" bash -c 'source "$1" && worker "$2" "$3" "$4"' _ \
    "$TMP/lib.sh" "$i" "$(mnt "$i")" "$FILES" >"$TMP/worker$i.out" 2>&1 &
  pids+=($!)
done
wait_pids 300 "the three nodes creating files" "${pids[@]}"
log "   $((3 * FILES * 2)) files created in $(($(now_ms) - t0)) ms"
for i in "${NODES[@]}"; do for ((k = 1; k <= FILES; k++)); do echo "n${i}_$k"; done; done |
  sort >"$TMP/shared.expected"
for ((k = 1; k <= FILES; k++)); do echo "f$k"; done | sort >"$TMP/own.expected"
for i in "${NODES[@]}"; do
  on "$i" ls -1 "$(mnt "$i")/shared" >"$TMP/shared$i.txt" 2>&1 || fail "node $i: ls shared: $(cat "$TMP/shared$i.txt")"
  sort -o "$TMP/shared$i.txt" "$TMP/shared$i.txt"
  cmp -s "$TMP/shared$i.txt" "$TMP/shared.expected" ||
    fail "node $i: shared/ lists $(wc -l <"$TMP/shared$i.txt") names, expected $((3 * FILES)); diff: $(diff "$TMP/shared.expected" "$TMP/shared$i.txt" | head -10)"
  for j in "${NODES[@]}"; do
    on "$i" ls -1 "$(mnt "$i")/own$j" >"$TMP/own$i.$j.txt" 2>&1 || fail "node $i: ls own$j: $(cat "$TMP/own$i.$j.txt")"
    sort -o "$TMP/own$i.$j.txt" "$TMP/own$i.$j.txt"
    cmp -s "$TMP/own$i.$j.txt" "$TMP/own.expected" ||
      fail "node $i: own$j/ lists $(wc -l <"$TMP/own$i.$j.txt") names, expected $FILES"
  done
  on "$i" bash -c 'source "$1" && check_sample "$2" "$3"' _ "$TMP/lib.sh" "$i" "$(mnt "$i")" \
    >"$TMP/sample$i.out" 2>&1 || fail "node $i: the other nodes' files read wrong: $(head -5 "$TMP/sample$i.out")"
done

# ================================================================================================
log "4. a fourth mount (node 1 again, at $MNT2) is refused"
mkdir -p "$MNT2"
# try_mount4 TAG ARGS...: runs the daemon in node 1; it must exit non-zero without mounting.
try_mount4() {
  local tag=$1 pid rc t0
  shift
  t0=$SECONDS
  "$CLUSTER" --name "$NAME" exec 1 "$UGFS2_BIN" -f "$@" "$IMG" "$MNT2" >"$TMP/mount4$tag.out" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    is_mnt "$MNT2" && fail "fourth mount ($tag) succeeded at $MNT2"
    ((SECONDS - t0 < 90)) || fail "fourth mount ($tag): neither refused nor mounted after 90 s"
    sleep 0.1
  done
  rc=0
  wait "$pid" || rc=$?
  ((rc != 0)) || fail "fourth mount ($tag) exited 0: $(cat "$TMP/mount4$tag.out")"
  ! is_mnt "$MNT2" || fail "fourth mount ($tag) left $MNT2 mounted"
  log "   ($tag: refused in $((SECONDS - t0)) s, exit $rc: $(grep 'cannot mount' "$TMP/mount4$tag.out" | head -1))"
}
try_mount4 any
grep -q 'gfs2_jadd' "$TMP/mount4any.out" || fail "the refused fourth mount does not name gfs2_jadd: $(cat "$TMP/mount4any.out")"
try_mount4 jid1 -o jid=1
grep -Eq 'journal 1 (is in use by another node|of .* is already used)' "$TMP/mount4jid1.out" ||
  fail "the refused mount with jid=1 does not name the busy journal: $(cat "$TMP/mount4jid1.out")"
for i in "${NODES[@]}"; do
  [[ $(daemon_pids "$i" | tr '\n' ' ') == "${DAEMON[$i]} " ]] || fail "node $i: its daemons changed: $(daemon_pids "$i")"
  got=$(on "$i" dd if="$(mnt "$i")/dest/renamed" iflag=direct bs=1M status=none | sha) ||
    fail "node $i: reading dest/renamed after the refused mounts"
  [[ $got == "$sum2" ]] || fail "node $i: dest/renamed differs after the refused mounts"
  on "$i" sh -c 'echo "after the refused mounts: node $1" >"$2"' _ "$i" "$(mnt "$i")/own$i/after" ||
    fail "node $i: writing after the refused mounts"
done
for i in "${NODES[@]}"; do
  j=$((i % 3 + 1))
  got=$(on "$i" cat "$(mnt "$i")/own$j/after") || fail "node $i: reading own$j/after"
  [[ $got == "after the refused mounts: node $j" ]] || fail "node $i: own$j/after reads '$got'"
done

# ================================================================================================
log "5. unmount every node; the daemons exit; fsck"
for i in "${NODES[@]}"; do
  t0=$(now_ms)
  bounded 60 "node $i: umount" umount "$(mnt "$i")" 2>"$TMP/umount$i.out" ||
    fail "node $i: umount failed (exit $?): $(cat "$TMP/umount$i.out")"
  ! is_mnt "$(mnt "$i")" || fail "node $i: still mounted after umount"
  deadline=$((SECONDS + 30))
  while kill -0 "${DAEMON[$i]}" 2>/dev/null && [[ $(awk '{print $3}' "/proc/${DAEMON[$i]}/stat" 2>/dev/null) != Z ]]; do
    ((SECONDS < deadline)) || fail "node $i: the daemon (pid ${DAEMON[$i]}) did not exit within 30 s of umount"
    sleep 0.1
  done
  grep -q "unmounted $IMG cleanly" "$ST/node$i/daemon.log" || fail "node $i: its daemon did not log a clean unmount"
  cl umount "$i" >/dev/null 2>&1 || fail "node $i: scripts/cluster umount after the unmount"
  log "   node $i: unmounted, daemon gone ($(($(now_ms) - t0)) ms)"
done
if grep -H ' error: ' "$ST"/node*/daemon.log >"$TMP/errors.out"; then
  fail "daemon errors logged: $(head -10 "$TMP/errors.out")"
fi
grep -H ' warning: ' "$ST"/node*/daemon.log | sed 's/^/   warning logged: /' || true
losetup -j "$IMG" | grep -q . && fail "loop devices still attached to the image: $(losetup -j "$IMG")"
verdict=$("$ORACLE" "$IMG" 2>&1) || fail "fsck-oracle: $verdict"
[[ $verdict == CLEAN ]] || fail "fsck-oracle: $verdict"
log "   fsck-oracle: CLEAN"
