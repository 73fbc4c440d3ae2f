#!/usr/bin/env bash
# Glock demotes under load. For UGFS2_DEMOTE_SECS (20) seconds, fs_glock_load.py runs buffered
# writes + fsync to A, O_DIRECT writes read back to B, MAP_SHARED stores + msync to C, readers
# that check everything acknowledged so far, and creates / hard links / renames / unlinks /
# mkdir+rmdir in dir/ (plus a fio O_DIRECT verify job on D); meanwhile `ugfs2-tool demote MNT all`
# runs in a loop as fast as it goes, and glocks named in `ugfs2-tool glocks MNT` are demoted one
# by one. Then every file must match what its writer acknowledged (checksums, again after a
# remount), fsck CLEAN, no error in the daemon's log, and at least UGFS2_DEMOTE_MIN (50)
# `demote all` requests accepted, asking at least that many glocks in all, and some named
# demotes accepted (NotFound is fine for those: a glock may be forgotten after the dump).
#
# A core without demotes fails at once, by design: before the load the root directory's inode
# glock is demoted, and NotSupported (the placeholder FileSystem::DemoteGlock) or an empty dump
# is a failure, not a skip.
#
# Run: ctest --test-dir build/test -R fs_glock_demote (label fuse), or as root
#   tests/integration/fs_glock_demote.sh build/test/fuse/ugfs2
# Environment: UGFS2_TOOL (default: the ugfs2-tool of the daemon's build tree),
# UGFS2_DEMOTE_SECS, UGFS2_DEMOTE_MIN.
source "$(dirname "$0")/fs_lib.sh"
fs_init

TOOL=${UGFS2_TOOL:-$(dirname "$UGFS2_BIN")/../dlm/ugfs2-tool}
[ -x "$TOOL" ] || fail "ugfs2-tool not found at $TOOL (set UGFS2_TOOL)"
SECS=${UGFS2_DEMOTE_SECS:-20}
MIN=${UGFS2_DEMOTE_MIN:-50}
LOAD="python3 $REPO/tests/integration/fs_glock_load.py"

img=$T/vol.img
mnt=$T/m
make_image "$img" 1G 4096
mount_fs "$img" "$mnt"

# wait_pid PID SECONDS: bounded wait for a background process to end (1 if it did not).
wait_pid() {
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}
# sum_of FILE WORDS: the sum of N over "N WORDS" in the tool's summary lines in FILE.
sum_of() { grep -o "[0-9]* $2" "$1" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
# names_in DUMP: the glock names (TYPE/HEXNUMBER) of a dump, once each.
names_in() { grep -o 'n:[0-9]*/[0-9a-f]*' "$1" | cut -c3- | sort -u; }
# stuck WHAT: the daemon no longer makes progress; show its glocks, then fail.
stuck() {
  echo "--- glocks of the stuck mount ---" >&2
  timeout 70 "$TOOL" glocks "$mnt" 2>&1 | head -200 >&2
  fail "$1"
}

log "preflight: glock dumps and demotes work"
echo probe >"$mnt/probe"
cat "$mnt/probe" >/dev/null
"$TOOL" glocks "$mnt" >"$T/glocks0.txt" 2>"$T/glocks0.err" ||
  fail "ugfs2-tool glocks $mnt: $(cat "$T/glocks0.err")"
root_glock=2/$(printf '%x' "$(stat -c %i "$mnt")")
out=$("$TOOL" demote "$mnt" "$root_glock" 2>&1)
case "$out" in
  *" 1 accepted"*) ;;
  *": NotFound"*) log "no glock $root_glock held (NotFound)" ;;
  *) fail "demote of the root directory's inode glock $root_glock: $out (FileSystem::DemoteGlock not implemented?)" ;;
esac
[ -s "$T/glocks0.txt" ] ||
  fail "the glock dump is empty while files are in use (FileSystem::DumpGlocks not implemented?)"
[ -n "$(names_in "$T/glocks0.txt")" ] ||
  fail "the glock dump names no glock ('n:TYPE/NUMBER' expected): $(head -3 "$T/glocks0.txt")"
out=$("$TOOL" demote "$mnt" all 2>&1) || fail "demote all: $out"
log "preflight: $(names_in "$T/glocks0.txt" | wc -l) glocks in the dump; $out"

log "load for ${SECS}s while demoting"
$LOAD run "$mnt" "$SECS" "$T/state" >"$T/load.log" 2>&1 &
load_pid=$!
fio_pid=""
if command -v fio >/dev/null; then
  (cd "$T" && exec fio --name=dio --filename="$mnt/D" --size=8M --bs=4k --rw=randwrite \
    --direct=1 --ioengine=psync --verify=crc32c --verify_backlog=64 --verify_fatal=1 \
    --verify_state_save=0 --time_based --runtime="$SECS" --output="$T/fio.log") &
  fio_pid=$!
fi
end=$((SECONDS + SECS))
(
  while [ $SECONDS -lt $end ]; do
    "$TOOL" demote "$mnt" all --count 10 >>"$T/demote_all.out" 2>>"$T/demote_all.err"
  done
) &
all_pid=$!
(
  while [ $SECONDS -lt $end ]; do
    "$TOOL" glocks "$mnt" >"$T/dump.txt" 2>>"$T/dump.err" && echo ok >>"$T/dumps.out"
    for n in $(names_in "$T/dump.txt" | shuf -n 20); do
      "$TOOL" demote "$mnt" "$n" >>"$T/demote_one.out" 2>>"$T/demote_one.err"
      [ $SECONDS -lt $end ] || break
    done
  done
) &
one_pid=$!

# The load ends by itself after SECS (its workers get 120 s more to finish their last request).
wait_pid "$load_pid" $((SECS + 150)) || stuck "the load did not finish (deadlock?): $(cat "$T/load.log")"
wait "$load_pid"
rc=$?
cat "$T/load.log"
[ $rc -eq 2 ] && stuck "load workers stuck (deadlock?)"
[ $rc -eq 0 ] || fail "the load failed ($rc): $(grep FAILED "$T/load.log")"
for p in $all_pid $one_pid; do
  wait_pid "$p" 90 || stuck "ugfs2-tool demote did not return within 90 s"
done
if [ -n "$fio_pid" ]; then
  wait_pid "$fio_pid" 150 || stuck "fio did not finish"
  wait "$fio_pid" || fail "fio O_DIRECT verify job failed: $(grep -i -m5 'verify\|err' "$T/fio.log")"
fi

# What the demotes did.
all_sent=$(sum_of "$T/demote_all.out" sent)
all_ok=$(sum_of "$T/demote_all.out" accepted)
asked=$(sum_of "$T/demote_all.out" "glocks asked")
one_sent=$(sum_of "$T/demote_one.out" sent)
one_ok=$(sum_of "$T/demote_one.out" accepted)
dumps=$(cat "$T/dumps.out" 2>/dev/null | wc -l)
log "demote all: $all_sent sent, $all_ok accepted, $asked glocks asked; named demotes: $one_sent sent, $one_ok accepted; $dumps dumps"
[ -s "$T/demote_all.err" ] && fail "demote all refused: $(sort "$T/demote_all.err" | uniq -c | head -5)"
bad_one=$(grep -v ': NotFound: ' "$T/demote_one.err" 2>/dev/null | head -5)
[ -z "$bad_one" ] || fail "named demotes refused: $bad_one"
[ -s "$T/dump.err" ] && fail "ugfs2-tool glocks failed: $(head -3 "$T/dump.err")"
[ "$all_ok" -ge "$MIN" ] || fail "only $all_ok 'demote all' requests accepted (want >= $MIN)"
[ "$asked" -ge "$MIN" ] || fail "'demote all' asked only $asked glocks in all (want >= $MIN)"
[ "$one_ok" -ge 1 ] || fail "no named demote accepted ($one_sent sent)"
[ "$dumps" -ge 1 ] || fail "no glock dump during the load"

log "every file against what was acknowledged"
"$TOOL" demote "$mnt" all >/dev/null || fail "final demote all"
$LOAD verify "$mnt" "$T/state" || fail "verify after the load"
echo 3 >/proc/sys/vm/drop_caches
$LOAD verify "$mnt" "$T/state" >/dev/null || fail "verify after dropping the kernel's caches"
if grep -q " error: " "$T/m.log"; then
  fail "the daemon logged errors: $(grep -m5 " error: " "$T/m.log")"
fi
unmount_fs "$mnt"
check_clean "$img"

log "again after a remount"
mount_fs "$img" "$mnt"
$LOAD verify "$mnt" "$T/state" >/dev/null || fail "verify after the remount"
"$TOOL" demote "$mnt" all >/dev/null || fail "demote all after the remount"
$LOAD verify "$mnt" "$T/state" >/dev/null || fail "verify after the remount and a demote"
unmount_fs "$mnt"
check_clean "$img"
