#!/usr/bin/env bash
# 100,000 files in one directory (exhash growth, leaf splits): create, count, stat a sample,
# remount, count again, delete all; fsck CLEAN after each unmount.
source "$(dirname "$0")/fs_lib.sh"
fs_init
N=${UGFS2_MANYFILES:-100000}
img=$T/many.img
mnt=$T/m
make_image "$img" 2G 4096
mount_fs "$img" "$mnt"
mkdir "$mnt/big" || fail "mkdir"
log "creating $N files"
$HELPER create "$mnt/big" "$N" 16 || fail "create $N files"
expect_eq "count" "$($HELPER count "$mnt/big")" "$N"
expect_eq "ls count" "$(ls -f "$mnt/big" | wc -l)" "$((N + 2))"
$HELPER stat-some "$mnt/big" "$N" 997 || fail "stat sample"
[ "$(cat "$mnt/big/f$(printf %06d $((N - 1)))")" = "xxxxxxxxxxxxxxxx" ] || fail "content"
unmount_fs "$mnt"
check_clean "$img"
mount_fs "$img" "$mnt"
expect_eq "count after remount" "$($HELPER count "$mnt/big")" "$N"
$HELPER stat-some "$mnt/big" "$N" 1009 || fail "stat sample after remount"
log "deleting $N files"
$HELPER delete "$mnt/big" "$N" || fail "delete"
expect_eq "count after delete" "$($HELPER count "$mnt/big")" "0"
rmdir "$mnt/big" || fail "rmdir"
unmount_fs "$mnt"
check_clean "$img"
