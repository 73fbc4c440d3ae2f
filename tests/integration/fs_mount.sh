#!/usr/bin/env bash
# How users mount: `cmake --install` into a temp prefix, `mount -t fuse.ugfs2` through the fuse3
# mount helper, an fstab line (mount --fstab FILE), umount(8), the detached daemon (no -f),
# --help/--version, bad options and lock_dlm volumes (refused without corosync, naming
# lockproto=lock_nolock),
# ro mounts, and the stats_file written at exit. fsck CLEAN after each unmount.
source "$(dirname "$0")/fs_lib.sh"
fs_init
command -v mount.fuse3 >/dev/null || skip "mount.fuse3 missing"

img=$T/vol.img
mnt=$T/m
make_image "$img" 128M 4096
mkdir -p "$mnt"

# Install (when the build tree is known) or fall back to a symlink into a private PATH dir.
prefix=$T/prefix
mkdir -p "$prefix/bin"
build_dir=${UGFS2_BUILD_DIR:-$(dirname "$(dirname "$UGFS2_BIN")")}
if [ -f "$build_dir/cmake_install.cmake" ] &&
   cmake --install "$build_dir" --prefix "$prefix" --component Unspecified >"$T/install.log" 2>&1 &&
   [ -x "$prefix/bin/ugfs2" ]; then
  log "installed with cmake --install into $prefix"
else
  log "cmake --install unavailable; symlinking $UGFS2_BIN"
  ln -sf "$UGFS2_BIN" "$prefix/bin/ugfs2"
fi
export PATH=$prefix/bin:$PATH
# `mount -t fuse.ugfs2` needs ugfs2 in a standard directory (fs_lib.sh).
fs_provide_standard_path

# --help / --version.
ugfs2 --help | grep -q "lockproto=lock_nolock" || fail "--help"
ugfs2 --version | grep -Eq "^ugfs2 [0-9]+\.[0-9]+" || fail "--version: $(ugfs2 --version)"
ugfs2 >/dev/null 2>&1 && fail "no arguments accepted"
rc=0; ugfs2 -o bogus_option "$img" "$mnt" 2>"$T/bad.err" || rc=$?
[ $rc -ne 0 ] && grep -q "bogus_option" "$T/bad.err" || fail "bad option: rc=$rc $(cat "$T/bad.err")"
[ "$(wc -l <"$T/bad.err")" -eq 1 ] || fail "bad option: more than one error line"
rc=0; ugfs2 "$img" "$T/no-such-dir" 2>"$T/bad.err" || rc=$?
[ $rc -ne 0 ] && grep -q "no-such-dir" "$T/bad.err" || fail "bad mountpoint: $(cat "$T/bad.err")"

# Detached daemon (no -f): returns once mounted; umount(8) stops it. On failure the cleanup
# unmounts it and kills every process serving this test's files.
FS_CLEANUP+=("umount -l '$mnt' 2>/dev/null; pkill -9 -f -- '$T/' 2>/dev/null")
ugfs2 -o stats_file="$T/exit.stats" "$img" "$mnt" || fail "daemon mode mount"
# As root the mount is fuseblk (umount waits for the daemon), over a loop device for an image.
grep -Eq " $(realpath "$mnt") fuse(blk)?\.ugfs2 " /proc/mounts || fail "not mounted after daemon mode"
echo one >"$mnt/one"
cat "$mnt/one" >/dev/null
dpid=$(pgrep -f "ugfs2 -o stats_file=$T/exit.stats" | head -1)
umount "$mnt" || fail "umount"
deadline=$((SECONDS + 30))
while [ -n "$dpid" ] && kill -0 "$dpid" 2>/dev/null; do
  [ $SECONDS -ge $deadline ] && fail "detached daemon still running after umount"
  sleep 0.1
done
grep -q "^create 1$" "$T/exit.stats" || fail "stats_file at exit: $(head -40 "$T/exit.stats")"
check_clean "$img"

# mount -t fuse.ugfs2 (mount(8) -> mount.fuse3 -> ugfs2 DEVICE MOUNTPOINT -o OPTIONS).
mount -t fuse.ugfs2 -o rw,nosuid,nodev,noatime,_netdev,x-test=1 "$img" "$mnt" 2>"$T/mount.err" ||
  fail "mount -t fuse.ugfs2: $(cat "$T/mount.err")"
line=$(grep " $(realpath "$mnt") " /proc/mounts)
[[ "$line" == *".ugfs2 "* && "$line" == *nosuid* && "$line" == *nodev* ]] || fail "mount line: $line"
expect_eq "data via mount -t" "$(cat "$mnt/one")" "one"
echo two >"$mnt/two"
umount "$mnt" || fail "umount (mount -t)"
for _ in $(seq 100); do pgrep -f "ugfs2 $img" >/dev/null || break; sleep 0.1; done
check_clean "$img"

# An fstab line (in a private fstab file: mount --fstab).
cat >"$T/fstab" <<FSTAB
$img $(realpath "$mnt") fuse.ugfs2 defaults,noauto,nofail,_netdev,attr_timeout=2,entry_timeout=2 0 0
FSTAB
mount --fstab "$T/fstab" "$(realpath "$mnt")" 2>"$T/mount.err" || fail "fstab mount: $(cat "$T/mount.err")"
expect_eq "data via fstab mount" "$(cat "$mnt/two")" "two"
fusermount3 -u "$mnt" || fail "fusermount3 -u (fstab)"
for _ in $(seq 100); do pgrep -f "ugfs2 $img" >/dev/null || break; sleep 0.1; done
check_clean "$img"

# Read-only mount.
mount -t fuse.ugfs2 -o ro "$img" "$mnt" 2>"$T/mount.err" || fail "ro mount: $(cat "$T/mount.err")"
expect_eq "ro data" "$(cat "$mnt/one")" "one"
touch "$mnt/new" 2>/dev/null && fail "write on a ro mount succeeded"
umount "$mnt" || fail "umount ro"
for _ in $(seq 100); do pgrep -f "ugfs2 $img" >/dev/null || break; sleep 0.1; done
check_clean "$img"

# lock_dlm volume: without corosync on this host, refused naming lockproto=lock_nolock (and
# corosync); mounts with lockproto=lock_nolock.
dlm=$T/dlm.img
truncate -s 128M "$dlm"
mkfs.gfs2 -O -p lock_dlm -t testclu:vol -b 4096 -j 2 "$dlm" >/dev/null 2>&1 || fail "mkfs lock_dlm"
rc=0; ugfs2 "$dlm" "$mnt" 2>"$T/dlm.err" || rc=$?
[ $rc -ne 0 ] || { umount "$mnt"; fail "lock_dlm volume mounted without lockproto=lock_nolock"; }
[ "$(grep -c . "$T/dlm.err")" -eq 1 ] || fail "lock_dlm refusal: $(cat "$T/dlm.err")"
grep -q "lock_nolock" "$T/dlm.err" || fail "lock_dlm refusal does not say what to do: $(cat "$T/dlm.err")"
grep -q "corosync" "$T/dlm.err" || fail "lock_dlm refusal does not name corosync: $(cat "$T/dlm.err")"
log "lock_dlm refused: $(cat "$T/dlm.err")"
mount_fs "$dlm" "$mnt" lockproto=lock_nolock
echo dlm >"$mnt/f" || fail "write on lock_dlm volume mounted lock_nolock"
unmount_fs "$mnt"
check_clean "$dlm"
