#!/usr/bin/env bash
# A copied source tree (/usr/include: ~8000 files, plus the repository itself on the 1 KiB image)
# verified by sha256 after a remount, on 4096- and 1024-byte block images; then deleted; fsck
# CLEAN after each unmount.
source "$(dirname "$0")/fs_lib.sh"
fs_init

src=/usr/include
[ -d "$src" ] || skip "$src missing"

for bs in 4096 1024; do
  img=$T/tree-$bs.img
  mnt=$T/m$bs
  log "block size $bs: copying $src"
  make_image "$img" 1G "$bs"
  mount_fs "$img" "$mnt"
  (cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/want.sums"
  cp -a "$src" "$mnt/tree" || fail "cp -a $src"
  if [ "$bs" = 1024 ]; then
    cp -a "$REPO/fuse" "$REPO/tests" "$mnt/" || fail "cp repo dirs"
  fi
  nfiles=$(wc -l <"$T/want.sums")
  log "copied $nfiles files; remounting"
  unmount_fs "$mnt"
  check_clean "$img"
  mount_fs "$img" "$mnt"
  (cd "$mnt/tree" && sha256sum --quiet -c "$T/want.sums") >"$T/verify.out" 2>&1 ||
    fail "checksums differ after remount: $(head -5 "$T/verify.out")"
  expect_eq "file count" "$(find "$mnt/tree" -type f | wc -l)" "$nfiles"
  expect_eq "symlinks" "$(find "$mnt/tree" -type l | wc -l)" "$(find "$src" -type l | wc -l)"
  expect_eq "dirs" "$(find "$mnt/tree" -type d | wc -l)" "$(find "$src" -type d | wc -l)"
  if [ "$bs" = 1024 ]; then
    diff -r "$REPO/fuse" "$mnt/fuse" >/dev/null || fail "repo copy differs"
  fi
  # Lookup counting: after ls -lR (READDIRPLUS) and the reads above, make the kernel forget
  # everything it can; the daemon must have seen no FORGET for more than it handed out, and only
  # a handful of inodes may stay referenced.
  ls -lR "$mnt" >/dev/null
  sync
  echo 2 >/proc/sys/vm/drop_caches
  sleep 1
  pid=${FS_PIDS[$mnt]}
  rm -f "/run/ugfs2/$pid.stats"
  kill -USR1 "$pid"
  for _ in $(seq 100); do [ -s "/run/ugfs2/$pid.stats" ] && break; sleep 0.05; done
  under=$(awk '$1 == "forget_underflows" {print $2}' "/run/ugfs2/$pid.stats")
  kin=$(awk '$1 == "kernel_inodes" {print $2}' "/run/ugfs2/$pid.stats")
  rdp=$(awk '$1 == "readdirplus" {print $2}' "/run/ugfs2/$pid.stats")
  fm=$(awk '$1 == "forget_multi" {print $2}' "/run/ugfs2/$pid.stats")
  log "readdirplus $rdp, forget_multi $fm, kernel_inodes after drop_caches $kin, underflows $under"
  expect_eq "forget underflows" "$under" "0"
  [ "$kin" -lt 50 ] || fail "$kin inodes still referenced by the kernel after drop_caches"
  rm -f "/run/ugfs2/$pid.stats"
  rm -rf "${mnt:?}"/* || fail "rm -rf tree"
  unmount_fs "$mnt"
  check_clean "$img"
done
