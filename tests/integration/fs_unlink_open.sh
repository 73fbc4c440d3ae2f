#!/usr/bin/env bash
# Unlink of open files: data stays readable after unlink, the space comes back at the last close,
# and a clean unmount (and a SIGTERM while an unlinked file is still open) leaves fsck CLEAN.
source "$(dirname "$0")/fs_lib.sh"
fs_init

img=$T/unlink.img
mnt=$T/m
make_image "$img" 256M 4096
mount_fs "$img" "$mnt"

# wait_line FILE TEXT: bounded wait for a helper's output line.
wait_line() {
  local deadline=$((SECONDS + 30))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && fail "timed out waiting for '$2' in $1"
    sleep 0.05
  done
}

# Case 1: unlink while open, read after unlink, close, space reclaimed.
sync
free0=$(df_free "$mnt")
head -c 20M /dev/urandom >"$mnt/victim"
sync
free1=$(df_free "$mnt")
[ $((free0 - free1)) -ge 5120 ] || fail "20 MiB file used only $((free0 - free1)) blocks"
$HELPER holdopen "$mnt/victim" unlink >"$T/hold1.out" 2>&1 &
holder=$!
wait_line "$T/hold1.out" READY
[ -e "$mnt/victim" ] && fail "victim still visible after unlink"
kill -USR1 $holder
wait_line "$T/hold1.out" "STILL-READABLE\|MISMATCH"
grep -q MISMATCH "$T/hold1.out" && fail "unlinked-open file data changed"
expect_eq "space still held while open" "$(( $(df_free "$mnt") < free0 ))" "1"
kill -TERM $holder
wait $holder
deadline=$((SECONDS + 15))
until [ "$(df_free "$mnt")" = "$free0" ]; do
  [ $SECONDS -ge $deadline ] && fail "space not reclaimed after close: free $(df_free "$mnt") want $free0"
  sleep 0.1
done
log "space reclaimed after last close"

# Case 2: open twice (two processes), unlink, both read, one closes, other still reads.
head -c 3M /dev/urandom >"$mnt/shared"
$HELPER holdopen "$mnt/shared" keep >"$T/hold2.out" 2>&1 &
h2=$!
wait_line "$T/hold2.out" READY
$HELPER holdopen "$mnt/shared" unlink >"$T/hold3.out" 2>&1 &
h3=$!
wait_line "$T/hold3.out" READY
kill -TERM $h3
wait $h3
kill -USR1 $h2
wait_line "$T/hold2.out" "STILL-READABLE\|MISMATCH"
grep -q MISMATCH "$T/hold2.out" && fail "second opener lost the data"
kill -TERM $h2
wait $h2

# Case 3: unlinked but open with a writer: writes after unlink still work.
python3 - "$mnt/wr" <<'PY' || fail "write after unlink"
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
os.unlink(sys.argv[1])
os.pwrite(fd, b"abc" * 100000, 0)
assert os.pread(fd, 300000, 0) == b"abc" * 100000
os.close(fd)
PY
unmount_fs "$mnt"
check_clean "$img"

# Case 4: the daemon is stopped (SIGTERM) while an unlinked file is still open: the lazy unmount
# leaves the holder with a dead mount; the core must still free the inode and write a clean
# journal header.
mount_fs "$img" "$mnt"
head -c 4M /dev/urandom >"$mnt/orphan"
$HELPER holdopen "$mnt/orphan" unlink >"$T/hold4.out" 2>&1 &
h4=$!
wait_line "$T/hold4.out" READY
pid=${FS_PIDS[$mnt]}
kill -TERM "$pid"
deadline=$((SECONDS + 60))
while kill -0 "$pid" 2>/dev/null; do
  [ $SECONDS -ge $deadline ] && fail "daemon did not exit after SIGTERM"
  sleep 0.1
done
wait "$pid"
rc=$?
unset "FS_PIDS[$mnt]"
expect_eq "daemon exit status after SIGTERM" "$rc" "0"
kill -TERM $h4 2>/dev/null
wait $h4 2>/dev/null
mountpoint -q "$mnt" && umount -l "$mnt"
check_clean "$img"
mount_fs "$img" "$mnt"
expect_eq "root after orphan cleanup" "$(ls -A "$mnt" | wc -l)" "0"
unmount_fs "$mnt"
check_clean "$img"
