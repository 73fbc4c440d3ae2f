#!/usr/bin/env bash
# The Linux kernel's own gfs2 (Debian's linux-image-amd64, booted under qemu: kernel_lib.sh) as
# the interop oracle of ugfs2, on real mkfs.gfs2 images; every check ends with fsck-oracle CLEAN:
#  (1) ugfs2 writes a varied tree (tree.sh) on 4096- and 1024-byte block images; the kernel's
#      manifest of it (guest_manifest.sh) equals the host's (manifest.py); ugfs2 still reads the
#      same after the kernel's mount.
#  (2) the kernel writes the tree; ugfs2's manifest of it equals the kernel's; ugfs2 then changes
#      it (the kernel's exhash directory included) and the kernel reads back ugfs2's manifest.
#  (3) ugfs2 is killed with kill -9 after fsync'd writes: the kernel replays ugfs2's journal and
#      every fsync'd file has its checksum.
#  (4) qemu is killed (SIGKILL) while the kernel writes: ugfs2 replays the kernel's journal and
#      every file whose fsync the guest logged has its checksum.
# Skips (77) only when qemu cannot run a guest here (see kernel_smoke).
source "$(dirname "$0")/../integration/fs_lib.sh"
source "$(dirname "$0")/kernel_lib.sh"
fs_init
T0=$SECONDS
kernel_setup
kernel_smoke
log "smoke boot passed ($((SECONDS - T0))s so far)"

MANIFEST="python3 $KERNEL_DIR/manifest.py"

# ugfs2_umount MNT: umount(8) (fuseblk: it waits for the daemon's final flush), then the daemon
# must exit 0.
ugfs2_umount() { unmount_fs "$1" umount; }

# ugfs2_kill9 MNT IMG: kill -9 the daemon, drop the dead mount, wait for its loop device to go.
ugfs2_kill9() {
  local mnt=$1 img=$2
  local pid=${FS_PIDS[$mnt]}
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  unset "FS_PIDS[$mnt]"
  umount -l "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null
  local deadline=$((SECONDS + 30))
  while [ -n "$(losetup -j "$img" 2>/dev/null)" ]; do
    if [ $SECONDS -ge $deadline ]; then
      log "warning: loop device still attached to $img 30s after the kill: $(losetup -j "$img")"
      break
    fi
    sleep 0.1
  done
}

# compare WHAT WANT GOT: the two manifests must be identical.
compare() {
  local what=$1 want=$2 got=$3
  [ -s "$got" ] || fail "$what: no manifest ($got empty or missing)"
  if ! diff -u "$want" "$got" >"$T/diff.txt"; then
    echo "--- $what: manifest differences (- $(basename "$want"), + $(basename "$got")) ---" >&2
    grep '^[-+]\.' "$T/diff.txt" | head -60 >&2
    fail "$what: manifests differ in $(grep -c '^[-+]\.' "$T/diff.txt") lines (format: path|type|mode|uid|gid|size|nlink|blocks|mtime|sha256-or-target)"
  fi
  log "$what: manifests identical ($(wc -l <"$want") entries)"
}

# compare_guest WHAT WANT GOT: compare, device numbers blanked if the kernel cannot read them.
compare_guest() {
  kernel_mask_rdev "$2" >"$2.cmp"
  kernel_mask_rdev "$3" >"$3.cmp"
  compare "$1" "$2.cmp" "$3.cmp"
}

# check_devices IMG MANIFEST: the device numbers ugfs2 showed (MANIFEST.devices) are the ones in
# the on-disk dinodes (IMG unmounted).
check_devices() {
  python3 "$KERNEL_DIR/manifest.py" --check-devices "$1" "$2.devices" >"$T/devices.out" 2>&1 ||
    fail "device numbers of $(basename "$2"): $(cat "$T/devices.out")"
  log "$(basename "$2"): $(tail -1 "$T/devices.out") (on-disk major:minor as ugfs2 showed them)"
}

# host_extras ROOT: what only the host can make (a socket; xattrs when ugfs2 takes them).
# Sets XATTRS=1 when the xattr probe worked.
XATTRS=0
host_extras() {
  local root=$1
  python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()' \
    "$root/socket" || fail "bind a unix socket on the ugfs2 mount"
  XATTRS=0
  if command -v setfattr >/dev/null && setfattr -n user.probe -v 1 "$root/links-target" 2>"$T/xattr.err"; then
    XATTRS=1
    local big
    big=$(head -c 1500 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-3000)
    setfattr -x user.probe "$root/links-target" &&
      setfattr -n user.small -v hello "$root/links-target" &&
      setfattr -n user.other -v 12345678 "$root/links-target" &&
      setfattr -n user.big -v "$big" "$root/sizes/s1" &&
      setfattr -n user.dir -v d "$root/tree" &&
      setfattr -n user.many -v m "$root/many/entry-5-with-a-somewhat-longer-name" ||
      fail "setfattr on the ugfs2 mount (after the probe worked)"
    if command -v setfacl >/dev/null; then
      # An access ACL (it also sets the group mode bits: compared in the manifests) and a
      # default ACL on a directory.
      setfacl -m u:1000:rwx,g:100:r-x "$root/sizes/s100" &&
        setfacl -d -m u:1000:rwx "$root/tree/a/empty" || fail "setfacl on the ugfs2 mount"
    fi
    log "xattr probe worked: set user.* xattrs (one of 3000 bytes) and ACLs; the guest cannot" \
        "read them (busybox has no getfattr): compared on the host after the kernel's mount"
  else
    log "note: ugfs2 takes no xattrs yet ($(head -1 "$T/xattr.err" 2>/dev/null)): xattr checks skipped"
  fi
}

# host_manifest ROOT OUT: manifest.py; OUT.devices for check_devices, OUT.xattrs when XATTRS=1.
host_manifest() {
  if [ "$XATTRS" = 1 ]; then
    $MANIFEST "$1" --devices "$2.devices" --xattrs "$2.xattrs" >"$2" || fail "manifest.py $1"
  else
    $MANIFEST "$1" --devices "$2.devices" >"$2" || fail "manifest.py $1"
  fi
}

# The guest's command for a manifest of the volume.
cat >"$T/guest-manifest.sh" <<'EOF'
manifest "$MNT" >"$OUT/manifest" || { echo "UGFS2G manifest failed"; exit 1; }
EOF

# --- (1) ugfs2 writes, the kernel reads -------------------------------------------------------
for bs in 4096 1024; do
  t=$SECONDS
  img=$T/c1-$bs.img
  mnt=$T/m1
  log "(1) bs $bs: ugfs2 writes the tree"
  make_image "$img" 1G "$bs"
  mount_fs "$img" "$mnt"
  sh "$KERNEL_DIR/tree.sh" "$mnt" "$bs" >"$T/tree.log" 2>&1 || fail "tree.sh on ugfs2: $(tail -5 "$T/tree.log")"
  host_extras "$mnt"
  sync
  host_manifest "$mnt" "$T/c1-$bs.host"
  ugfs2_umount "$mnt"
  check_clean "$img"
  check_devices "$img" "$T/c1-$bs.host"
  kernel_run "c1-$bs" "$img" "$T/guest-manifest.sh"
  compare_guest "(1) bs $bs: kernel reads ugfs2's tree" "$T/c1-$bs.host" "$T/c1-$bs.out/manifest"
  check_clean "$img"
  # ugfs2 again, after the kernel's mount (atime updates, statfs, its journal).
  mount_fs "$img" "$mnt"
  host_manifest "$mnt" "$T/c1-$bs.again"
  ugfs2_umount "$mnt"
  compare "(1) bs $bs: ugfs2 after the kernel" "$T/c1-$bs.host" "$T/c1-$bs.again"
  if [ "$XATTRS" = 1 ]; then
    diff "$T/c1-$bs.host.xattrs" "$T/c1-$bs.again.xattrs" >&2 || fail "(1) bs $bs: xattrs differ after the kernel's mount"
    log "(1) bs $bs: $(wc -l <"$T/c1-$bs.host.xattrs") xattrs unchanged after the kernel's mount"
  fi
  check_clean "$img"
  rm -f "$img"
  log "(1) bs $bs passed in $((SECONDS - t))s"
done

# --- (2) the kernel writes, ugfs2 reads (and writes back) -------------------------------------
# What ugfs2 changes in the kernel's tree: removes and adds entries in the exhash directory,
# renames, appends, truncates, new files and directories.
ugfs2_changes() {
  local root=$1
  (cd "$root" && set -e
    for i in $(seq 0 3 2998); do rm -f "many/entry-$i-with-a-somewhat-longer-name"; done
    for i in $(seq 1 1500); do echo "ugfs2 $i" >"many/ugfs2-added-$i-with-a-long-name"; done
    mv many/entry-1-with-a-somewhat-longer-name tree/a/b/moved-from-many
    mv tree/a/b/sibling many/sibling-moved-in
    head -c 100000 /dev/urandom >>big20m
    truncate -s 100000 sparse3g
    head -c 3000 /dev/urandom >sizes/s100
    mkdir -p ugfs2/x/y
    head -c 50000 /dev/urandom >ugfs2/x/y/data
    ln -s ../../big20m ugfs2/x/link
    ln big20m ugfs2/big-hardlink
    chmod 4711 modes/f755
    chown 7:8 modes/f644
    rm -r tree/a/b/c/d/e/f
    rmdir modes/private
  ) >"$T/changes.log" 2>&1 || fail "ugfs2 changes to the kernel's tree: $(tail -5 "$T/changes.log")"
}

for bs in 4096 1024; do
  t=$SECONDS
  img=$T/c2-$bs.img
  mnt=$T/m2
  log "(2) bs $bs: the kernel writes the tree"
  make_image "$img" 1G "$bs"
  cat >"$T/guest-tree.sh" <<EOF
sh /bin/tree.sh "\$MNT" $bs || { echo "UGFS2G tree.sh failed"; exit 1; }
sync
manifest "\$MNT" >"\$OUT/manifest" || { echo "UGFS2G manifest failed"; exit 1; }
EOF
  kernel_run "c2-$bs" "$img" "$T/guest-tree.sh"
  check_clean "$img"
  mount_fs "$img" "$mnt"
  host_manifest "$mnt" "$T/c2-$bs.host"
  compare_guest "(2) bs $bs: ugfs2 reads the kernel's tree" "$T/c2-$bs.out/manifest" "$T/c2-$bs.host"
  log "(2) bs $bs: ugfs2 changes the kernel's tree"
  ugfs2_changes "$mnt"
  sync
  host_manifest "$mnt" "$T/c2-$bs.changed"
  ugfs2_umount "$mnt"
  check_clean "$img"
  check_devices "$img" "$T/c2-$bs.host"
  check_devices "$img" "$T/c2-$bs.changed"
  kernel_run "c2b-$bs" "$img" "$T/guest-manifest.sh"
  compare_guest "(2) bs $bs: the kernel reads ugfs2's changes" "$T/c2-$bs.changed" "$T/c2b-$bs.out/manifest"
  check_clean "$img"
  rm -f "$img"
  log "(2) bs $bs passed in $((SECONDS - t))s"
done

# --- (3) ugfs2 killed -9 after fsync'd writes: the kernel replays ugfs2's journal -------------
t=$SECONDS
img=$T/c3.img
mnt=$T/m3
log "(3) ugfs2: fsync'd writes, then kill -9"
make_image "$img" 1G 4096
mount_fs "$img" "$mnt"
mkdir -p "$mnt/base" && sh "$KERNEL_DIR/tree.sh" "$mnt/base" 4096 >"$T/tree.log" 2>&1 ||
  fail "tree.sh: $(tail -5 "$T/tree.log")"
sync -f "$mnt" || fail "syncfs"
: >"$T/c3.sums"
sumrec() { (cd "$mnt" && sha256sum "$@") >>"$T/c3.sums" || fail "sha256sum $*"; }
mkdir -p "$mnt/crash/sub/deeper" || fail mkdir
for i in $(seq 1 12); do
  case $((i % 4)) in
    0) python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o640)
os.write(fd, os.urandom(int(sys.argv[2])))
os.fsync(fd)
os.close(fd)' "$mnt/crash/py$i" $((i * 37123)) || fail "python fsync write"
       sumrec "crash/py$i" ;;
    1) dd if=/dev/urandom of="$mnt/crash/sub/dd$i" bs=65536 count=$((i + 1)) conv=fsync status=none ||
         fail "dd conv=fsync"
       sumrec "crash/sub/dd$i" ;;
    2) head -c $((i * 5000 + 1)) /dev/urandom >"$mnt/crash/sub/deeper/sync$i" &&
         sync "$mnt/crash/sub/deeper/sync$i" || fail "sync FILE"
       sumrec "crash/sub/deeper/sync$i" ;;
    3) # an overwrite in the middle of an fsync'd file, and an append, each fsync'd
       python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"X" * 10000, 30000)
os.fsync(fd)
os.lseek(fd, 0, os.SEEK_END)
os.write(fd, os.urandom(70000))
os.fdatasync(fd)
os.close(fd)' "$mnt/base/big20m" || fail "overwrite/append"
       python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, os.urandom(5000), 3 << 30)
os.fsync(fd)
os.close(fd)' "$mnt/base/sparse3g" || fail "sparse overwrite" ;;
  esac
done
sumrec base/big20m
# The 3 GiB file: only the MiB around the fsync'd write at 3 GiB (hashing 3 GiB under TCG takes
# minutes); recorded as "<sha256>  base/sparse3g@3072M".
(cd "$mnt" && dd if=base/sparse3g bs=1M skip=3072 count=1 status=none | sha256sum |
  sed 's|-$|base/sparse3g@3072M|') >>"$T/c3.sums" || fail "sha256 of sparse3g at 3 GiB"
# Not fsync'd: may or may not survive, never checked.
for i in $(seq 1 20); do head -c 30000 /dev/urandom >"$mnt/crash/unsynced$i"; done
rm -f "$mnt/base/many/entry-1"*
ugfs2_kill9 "$mnt" "$img"
out=$("$ORACLE" "$img" 2>&1)
if [ "$out" = CLEAN ]; then log "(3) note: the journal was clean at the kill"; else log "(3) journal dirty at the kill (as expected): the kernel replays it"; fi
{
  echo 'cd "$MNT" || exit 1'
  awk '$2 !~ /@/ {print "sha256sum " $2 " >>\"$OUT/sums\" || exit 1"}
       $2 ~ /@/ {split($2, a, "@"); sub(/M$/, "", a[2])
                 print "dd if=" a[1] " bs=1048576 skip=" a[2] " count=1 2>/dev/null | sha256sum |" \
                       " sed \"s|-\\$|" $2 "|\" >>\"$OUT/sums\" || exit 1"}' "$T/c3.sums"
  echo 'manifest "$MNT" >"$OUT/manifest" || exit 1'
} >"$T/guest-c3.sh"
kernel_run c3 "$img" "$T/guest-c3.sh"
grep -a 'jid=0: Replayed' "$T/c3.out/dmesg" | tail -1 | while read -r l; do log "(3) kernel: $l"; done
if ! diff "$T/c3.sums" "$T/c3.out/sums" >"$T/diff.txt"; then
  cat "$T/diff.txt" >&2
  kernel_guest_fail c3 "(3) fsync'd files differ after the kernel replayed ugfs2's journal"
fi
log "(3) all $(wc -l <"$T/c3.sums") fsync'd files intact after the kernel's replay"
check_clean "$img"
mount_fs "$img" "$mnt"
host_manifest "$mnt" "$T/c3.host"
ugfs2_umount "$mnt"
compare_guest "(3) ugfs2 after the kernel's replay" "$T/c3.out/manifest" "$T/c3.host"
check_devices "$img" "$T/c3.host"
check_clean "$img"
rm -f "$img"
log "(3) passed in $((SECONDS - t))s"

# --- (4) the kernel killed mid-write: ugfs2 replays the kernel's journal ----------------------
t=$SECONDS
img=$T/c4.img
mnt=$T/m4
log "(4) the kernel writes and fsyncs; qemu is killed"
make_image "$img" 1G 4096
cat >"$T/guest-c4.sh" <<'EOF'
mkdir -p "$MNT/crash/d1" "$MNT/crash/d2" || exit 1
i=0
while :; do
  i=$((i + 1))
  d=$MNT/crash/d$((i % 2 + 1))
  # not fsync'd, never checked
  head -c $((i * 3001 % 90000 + 1)) /dev/urandom >"$d/nosync$i"
  [ $i -gt 3 ] && rm -f "$d/nosync$((i - 3))" "$MNT/crash/d$(((i - 3) % 2 + 1))/nosync$((i - 3))"
  dd if=/dev/urandom of="$d/f$i" bs=$((i * 7919 % 200000 + 1)) count=1 conv=fsync 2>/dev/null || exit 1
  sum=$(sha256sum "$d/f$i" | cut -d' ' -f1)
  echo "UGFS2G FSYNCED ${d#$MNT/}/f$i $sum"
done
EOF
kernel_start c4 "$img" "$T/guest-c4.sh"
deadline=$((SECONDS + KERNEL_TIMEOUT))
want=12
while [ "$(grep -ac '^UGFS2G FSYNCED ' "$T/c4.serial.log")" -lt $want ]; do
  kill -0 "$QEMU_PID" 2>/dev/null || kernel_guest_fail c4 "the guest stopped before $want fsyncs"
  [ $SECONDS -ge $deadline ] && { kernel_kill_qemu; kernel_guest_fail c4 "fewer than $want fsyncs within ${KERNEL_TIMEOUT}s"; }
  sleep 0.1
done
kill -9 "$QEMU_PID"
wait "$QEMU_PID" 2>/dev/null
QEMU_PID=""
# Complete lines only: a line the kill cut has no 64-hex checksum.
tr -d '\r' <"$T/c4.serial.log" | grep -aE '^UGFS2G FSYNCED [^ ]+ [0-9a-f]{64}$' |
  awk '{print $4 "  " $3}' >"$T/c4.sums"
log "(4) qemu killed after $(wc -l <"$T/c4.sums") logged fsyncs ($((SECONDS - t))s)"
out=$("$ORACLE" "$img" 2>&1)
if [ "$out" = CLEAN ]; then log "(4) note: the journal was clean at the kill"; else log "(4) journal dirty at the kill (as expected): ugfs2 replays it"; fi
mount_fs "$img" "$mnt"
grep -i "replay" "$T/m4.log" | tail -2 | while read -r l; do log "(4) ugfs2: $l"; done
(cd "$mnt" && sha256sum -c --quiet "$T/c4.sums") >"$T/c4.verify" 2>&1 ||
  fail "(4) fsync'd files lost or corrupted after ugfs2 replayed the kernel's journal: $(head -10 "$T/c4.verify")"
log "(4) all $(wc -l <"$T/c4.sums") logged fsync'd files intact after ugfs2's replay"
# ugfs2 goes on writing where the kernel stopped.
(set -e; rm -rf "$mnt"/crash/d1/nosync*; mkdir "$mnt/crash/after"
 head -c 300000 /dev/urandom >"$mnt/crash/after/data"; mv "$mnt/crash/d2" "$mnt/crash/after/d2") \
  >"$T/c4.after.log" 2>&1 || fail "(4) writes after the replay: $(tail -3 "$T/c4.after.log")"
ugfs2_umount "$mnt"
check_clean "$img"
rm -f "$img"
log "(4) passed in $((SECONDS - t))s"

log "all checks passed in $((SECONDS - T0))s (accel $KERNEL_ACCEL)"
