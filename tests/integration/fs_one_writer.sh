#!/usr/bin/env bash
# One volume, one writer: a second mount of a mounted volume becomes another mount point of the
# serving daemon's filesystem (as the kernel does for a block device mounted twice; no second
# daemon opens the volume), a holder that serves no mount here is refused by name, a writer
# beside read-only mounts is refused; umount returns only once the
# daemon has flushed, written the clean journal header and released the device, so a mount right
# after an unmount is always safe — checked by a tight mount/write/umount/fsck loop; a daemon
# killed with -9 releases its claim; a successful mount prints nothing.
source "$(dirname "$0")/fs_lib.sh"
fs_init

img=$T/vol.img
m1=$T/m1
m2=$T/m2
make_image "$img" 256M 4096
mkdir -p "$m1" "$m2"
# Detached daemons are not in FS_PIDS: unmount and kill whatever serves this test's images.
FS_CLEANUP+=("umount -l '$m1' 2>/dev/null; umount -l '$m2' 2>/dev/null; pkill -9 -f -- '$T/' 2>/dev/null")

# wait_gone PID: bounded wait for a daemon process to exit.
wait_gone() {
  local deadline=$((SECONDS + 30))
  while kill -0 "$1" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && fail "daemon $1 still running 30 s after umount"
    sleep 0.05
  done
}

log "a detached mount prints nothing on success"
out=$("$UGFS2_BIN" "$img" "$m1" 2>&1) || fail "mount: $out"
[ -z "$out" ] || fail "a successful mount printed: $out"
mountpoint -q "$m1" || fail "not mounted"
holder=$(pgrep -f "^$UGFS2_BIN $img $m1\$" | head -1)
[ -n "$holder" ] || fail "daemon process not found"

log "a second mount of a mounted volume shows the same filesystem; no second daemon starts"
echo first >"$m1/shared"
"$UGFS2_BIN" "$img" "$m2" 2>"$T/second.err" || fail "second mount: $(cat "$T/second.err")"
expect_eq "content through the second mount point" "$(cat "$m2/shared")" first
mkdir "$m2/via2" && mv "$m1/shared" "$m2/via2/" || fail "rename across the two mount points"
expect_eq "rename seen through the first" "$(cat "$m1/via2/shared")" first
# Through a symlink and a hard link to the image (the claim is on the file, not the name), and
# read-only at a third place.
ln -s "$img" "$T/alias.img"
ln "$img" "$T/hard.img"
mkdir -p "$T/m3" "$T/m4" "$T/m5"
"$UGFS2_BIN" "$T/alias.img" "$T/m3" || fail "mount through a symlink"
"$UGFS2_BIN" "$T/hard.img" "$T/m4" || fail "mount through a hard link"
"$UGFS2_BIN" -o ro "$img" "$T/m5" || fail "read-only second mount"
echo no >"$T/m5/x" 2>/dev/null && fail "write through the read-only second mount point"
[ "$(pgrep -f -- "$T/" | wc -l)" -eq 1 ] || fail "more than one daemon: $(pgrep -fa -- "$T/")"
umount "$T/m3" "$T/m4" "$T/m5" "$m2" || fail "umount of the extra mount points"
mountpoint -q "$m1" || fail "the first mount went away with the extra ones"

log "a holder that serves no mount here is refused by name"
make_image "$T/other.img" 64M 4096
python3 -c "
import fcntl, os, signal, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('hhqqixxxx', fcntl.F_WRLCK, 0, 0, 0, 0))
print('locked', flush=True)
signal.pause()  # hold the lock until the test kills us
" "$T/other.img" >"$T/holder.out" </dev/null &
holder_py=$!
FS_CLEANUP+=("kill $holder_py 2>/dev/null")
deadline=$((SECONDS + 10))
until grep -q locked "$T/holder.out"; do
  [ $SECONDS -ge $deadline ] && fail "lock holder did not start"
  sleep 0.05
done
rc=0
"$UGFS2_BIN" "$T/other.img" "$m2" 2>"$T/refused.err" || rc=$?
[ $rc -ne 0 ] || fail "mounted an image another process holds"
mountpoint -q "$m2" && fail "refused mount appeared"
grep -q "already mounted by pid $holder_py" "$T/refused.err" ||
  fail "refusal does not name pid $holder_py: $(cat "$T/refused.err")"
kill "$holder_py"
wait "$holder_py" 2>/dev/null

echo data >"$m1/a"
umount "$m1" || fail "umount"
# The volume is complete the moment umount returns (no wait for the process to exit).
check_clean "$img"
wait_gone "$holder"

log "two read-only mounts share the volume; a writer beside them is refused"
"$UGFS2_BIN" -o ro "$img" "$m1" || fail "first ro mount"
"$UGFS2_BIN" -o ro "$img" "$m2" || fail "second ro mount"
[ "$(cat "$m2/a")" = data ] || fail "ro mount content"
rc=0
"$UGFS2_BIN" "$img" "$T/m3" 2>"$T/rw-beside-ro.err" || rc=$?
[ $rc -ne 0 ] || fail "writer mounted beside two readers"
grep -q "mounted read-only" "$T/rw-beside-ro.err" || fail "refusal: $(cat "$T/rw-beside-ro.err")"
umount "$m1" || fail "umount ro 1"
umount "$m2" || fail "umount ro 2"

log "tight mount / write / umount / fsck loop"
: >"$T/sums"
for i in $(seq 1 25); do
  "$UGFS2_BIN" "$img" "$m1" 2>"$T/loop.err" || fail "round $i: mount refused: $(cat "$T/loop.err")"
  mkdir -p "$m1/r$i"
  for j in $(seq 1 20); do
    head -c $((j * 997)) /dev/urandom >"$m1/r$i/f$j"
  done
  dd if=/dev/urandom of="$m1/r$i/big" bs=64k count=$((i % 7 + 1)) status=none
  rm -f "$m1/r$((i - 1))/f1" 2>/dev/null
  (cd "$m1" && find "r$i" -type f -exec sha256sum {} +) >>"$T/sums"
  umount "$m1" || fail "round $i: umount"
  check_clean "$img"
done
"$UGFS2_BIN" "$img" "$m1" || fail "final mount"
sed -i '/\/f1$/d' "$T/sums"
(cd "$m1" && sha256sum --quiet -c "$T/sums") || fail "contents differ after the loop"
[ "$(ls "$m1"/r*/f1 2>/dev/null | wc -l)" -eq 1 ] || fail "f1 deletions lost (only r25/f1 should remain)"

log "a daemon killed with -9 releases its claim"
victim=$(pgrep -f "^$UGFS2_BIN $img $m1\$" | head -1)
echo more >"$m1/after"
sync "$m1/after"
kill -9 "$victim"
wait_gone "$victim"
umount -l "$m1" 2>/dev/null
"$UGFS2_BIN" -f "$img" "$m1" >"$T/after-kill.log" 2>&1 &
FS_PIDS[$m1]=$!
wait_mounted "$m1" "${FS_PIDS[$m1]}" || fail "mount after kill -9: $(cat "$T/after-kill.log")"
[ "$(cat "$m1/after")" = more ] || fail "fsync'd file lost after kill -9"
unmount_fs "$m1"
check_clean "$img"
