#!/usr/bin/env bash
# What fstests' generic group found, each checked on a real mount: MAP_SHARED of an O_DIRECT
# file and direct writes dropping stale cached pages (generic/091, 263, 451), suid/sgid cleared by
# an unprivileged O_DIRECT write and by fallocate/punch/zero-range (generic/355, 683-685),
# remount ro/rw with a clean journal while read-only (generic/294, 306, 452), atime with
# relatime / strictatime / noatime / nodiratime (generic/003), SEEK_DATA/SEEK_HOLE at a negative
# offset (generic/448), file handles with ESTALE for deleted and reused dinodes (generic/426,
# 467, 477), node ids that carry the generation (a reused dinode is a new kernel inode, the old
# reference answers ESTALE). fsck CLEAN at the end.
source "$(dirname "$0")/fs_lib.sh"
fs_init

img=$T/vol.img
mnt=$T/m
make_image "$img" 256M 4096
mount_fs "$img" "$mnt" allow_other
chmod 1777 "$mnt"

log "O_DIRECT + MAP_SHARED; a direct write drops cached pages"
$HELPER dio-mmap "$mnt/dio" || fail "dio-mmap"

log "SEEK_DATA / SEEK_HOLE at a negative offset: ENXIO"
echo x >"$mnt/seekfile"
$HELPER seek-negative "$mnt/seekfile" || fail "seek-negative"

log "file handles"
$HELPER handles "$mnt" || fail "handles"

log "node ids carry the generation: a reused dinode is a new node, the old reference ESTALE"
out=$($HELPER nodeid-reuse "$mnt") || fail "nodeid-reuse: $out"
log "$out"

log "suid/sgid dropped by unprivileged direct writes and fallocate"
user=nobody
grp=$(id -gn nobody)
# The system python: root's PATH may point at a per-user interpreter nobody cannot run.
as_nobody() { setpriv --reuid=nobody --regid="$grp" --clear-groups /usr/bin/python3 "$REPO/tests/integration/fs_helper.py" "$@"; }
mode_of() { stat -c %a "$1"; }
# modify OP FILE [as_nobody]: the operation under test (an O_DIRECT write or a fallocate mode).
modify() {
  local op=$1 f=$2 runner=${3:-$HELPER}
  if [ "$op" = dio ]; then $runner dio-write "$f"; else $runner fallocate "$f" "$op"; fi
}
for op in dio alloc punch zero; do
  f=$mnt/priv-$op
  head -c 16384 /dev/urandom >"$f"
  chown "$user:$grp" "$f"
  chmod 6755 "$f"   # suid + sgid + group exec: both must go
  modify $op "$f" as_nobody || fail "$op as nobody"
  expect_eq "mode after $op by the owner" "$(mode_of "$f")" 755
  # sgid without group exec stays for a member of the group...
  chmod 2744 "$f"
  modify $op "$f" as_nobody || fail "$op as nobody (sgid)"
  expect_eq "sgid without g+x, writer in the group ($op)" "$(mode_of "$f")" 2744
  # ... but goes for a writer outside the file's group (generic/683-685: root's file, mode 6666),
  # and the mode the kernel reports right after the operation already shows it.
  chown root:root "$f"
  chmod 6666 "$f"
  modify $op "$f" as_nobody || fail "$op as nobody (not in the group)"
  expect_eq "sgid without g+x, writer not in the group ($op)" "$(mode_of "$f")" 666
  chown "$user:$grp" "$f"
  # ... and root's writes keep every bit.
  chmod 6755 "$f"
  modify $op "$f" || fail "$op as root"
  expect_eq "mode after $op by root" "$(mode_of "$f")" 6755
done

log "atime: relatime (default)"
mkdir "$mnt/at"
echo aaa >"$mnt/at/f"
a0=$(stat -c %x "$mnt/at/f")
sleep 1.1   # atime has one-second resolution in what stat(1) compares
cat "$mnt/at/f" >/dev/null
a1=$(stat -c %x "$mnt/at/f")
[ "$a0" != "$a1" ] || fail "relatime: first read after a write did not update atime"
sleep 1.1
cat "$mnt/at/f" >/dev/null
[ "$(stat -c %x "$mnt/at/f")" = "$a1" ] || fail "relatime: second read updated atime"
d0=$(stat -c %x "$mnt/at")
sleep 1.1
ls "$mnt/at" >/dev/null
[ "$(stat -c %x "$mnt/at")" != "$d0" ] || fail "relatime: listing a new directory did not update its atime"

log "remount read-only: journal clean, writes refused; back to read-write"
# mount -t fuse.ugfs2 -o remount (what fstests runs) goes through mount.fuse3 to ugfs2's remount
# helper, which switches the daemon synchronously: the journal is clean when mount returns.
fs_provide_standard_path  # mount.fuse3 finds ugfs2 only in a standard directory
remount() { mount -t fuse.ugfs2 -o "remount,$1" "$img" "$mnt"; }
echo before >"$mnt/at/g"
remount ro || fail "remount,ro"
grep " $(realpath "$mnt") " /proc/mounts | grep -q " ro," || fail "not read-only in /proc/mounts"
check_clean "$img"
echo no >"$mnt/at/h" 2>/dev/null && fail "write on a read-only remount"
a_ro=$(stat -c %x "$mnt/at/g")
sleep 1.1
cat "$mnt/at/g" >/dev/null
[ "$(stat -c %x "$mnt/at/g")" = "$a_ro" ] || fail "atime updated on a read-only mount"
remount rw,strictatime || fail "remount,rw"
echo after >"$mnt/at/h" || fail "write after remount,rw"
# A remount without the helper (mount(8) finds none for fuseblk.ugfs2, or remount(2) itself):
# the daemon follows the kernel's state through its mount-table watcher; the first write after
# a read-write remount is served even before the watcher thread has noticed.
for round in 1 2 3; do
  mount -o remount,ro "$mnt" || fail "plain remount,ro"
  deadline=$((SECONDS + 10))
  until "$ORACLE" "$img" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && fail "journal not clean 10 s after a plain remount,ro: $("$ORACLE" "$img")"
    sleep 0.1
  done
  mount -o remount,rw "$mnt" || fail "plain remount,rw"
  echo "round $round" >"$mnt/at/plain-$round" || fail "first write after a plain remount,rw"
done

log "strictatime: every read updates atime"
s1=$(stat -c %x "$mnt/at/f")
sleep 1.1
cat "$mnt/at/f" >/dev/null
s2=$(stat -c %x "$mnt/at/f")
[ "$s2" != "$s1" ] || fail "strictatime: read did not update atime"
sleep 1.1
cat "$mnt/at/f" >/dev/null
[ "$(stat -c %x "$mnt/at/f")" != "$s2" ] || fail "strictatime: second read did not update atime"

log "noatime, nodiratime"
remount noatime || fail "remount,noatime"
echo ccc >"$mnt/at/n"
n1=$(stat -c %x "$mnt/at/n")
sleep 1.1
cat "$mnt/at/n" >/dev/null
[ "$(stat -c %x "$mnt/at/n")" = "$n1" ] || fail "noatime: read updated atime"
remount relatime,nodiratime || fail "remount,nodiratime"
mkdir "$mnt/nd"
nd=$(stat -c %x "$mnt/nd")
sleep 1.1
ls "$mnt/nd" >/dev/null
[ "$(stat -c %x "$mnt/nd")" = "$nd" ] || fail "nodiratime: listing updated the directory's atime"

unmount_fs "$mnt"
check_clean "$img"

log "a mount that started read-only cannot be remounted read-write"
mount_fs "$img" "$mnt" ro
rc=0
remount rw 2>"$T/rw.err" || rc=$?
[ $rc -ne 0 ] || fail "remount,rw of a read-only mount succeeded"
grep -q "read-only from the start" "$T/rw.err" || fail "unclear refusal: $(cat "$T/rw.err")"
[ "$(cat "$mnt/at/h")" = after ] || fail "content after remounts"
unmount_fs "$mnt"
check_clean "$img"
