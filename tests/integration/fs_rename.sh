#!/usr/bin/env bash
# Rename storms: concurrent renames, RENAME_NOREPLACE and RENAME_EXCHANGE across directories from
# several processes; every file must survive exactly once; fsck CLEAN (4096 and 1024 blocks).
# Also a directory-moving storm (mv of subtrees between parents).
source "$(dirname "$0")/fs_lib.sh"
fs_init

for bs in 4096 1024; do
  img=$T/rename-$bs.img
  mnt=$T/m$bs
  log "block size $bs"
  make_image "$img" 256M "$bs"
  mount_fs "$img" "$mnt"
  out=$($HELPER rename-storm "$mnt/storm" 8 60 6 1500) || fail "rename storm: $out"
  log "$out"
  # Directory storm: 4 workers move 10 subtrees between 5 parents.
  for p in 0 1 2 3 4; do mkdir -p "$mnt/p$p"; done
  for s in $(seq 0 9); do mkdir -p "$mnt/p0/s$s/inner" && echo "$s" >"$mnt/p0/s$s/inner/id"; done
  workers=()
  for w in 1 2 3 4; do
    (for i in $(seq 60); do
       s=$((RANDOM % 10)); to=$((RANDOM % 5))
       for p in 0 1 2 3 4; do
         mv "$mnt/p$p/s$s" "$mnt/p$to/" 2>/dev/null && break
       done
     done) &
    workers+=($!)
  done
  wait "${workers[@]}"  # not a bare `wait`: the daemon is a background job too
  expect_eq "subtrees after dir storm" "$(cat "$mnt"/p*/s*/inner/id | sort -n | tr '\n' ' ')" \
    "0 1 2 3 4 5 6 7 8 9 "
  total=0
  for p in 0 1 2 3 4; do
    n=$(find "$mnt/p$p" -mindepth 1 -maxdepth 1 -type d | wc -l)
    expect_eq "p$p nlink" "$(stat -c %h "$mnt/p$p")" "$((n + 2))"
    total=$((total + n))
  done
  expect_eq "subtree count" "$total" "10"
  unmount_fs "$mnt"
  check_clean "$img"
done
