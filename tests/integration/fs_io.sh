#!/usr/bin/env bash
# Data paths on real images (4096- and 1024-byte blocks): O_DIRECT write/read (FOPEN_DIRECT_IO,
# MAP_SHARED allowed on such opens through the raw DIRECT_IO_ALLOW_MMAP bit), mmap read and MAP_SHARED write read back after a
# remount, fallocate + SEEK_DATA/SEEK_HOLE, copy_file_range, a 2 GiB sparse file written at
# scattered offsets (metadata tree height >= 2), the page cache kept across opens (no READ on a
# cached re-read, checked with the SIGUSR1 request counters), fsync; fsck CLEAN after each.
source "$(dirname "$0")/fs_lib.sh"
fs_init

stat_of() {  # stat_of PID NAME: one counter from the daemon's SIGUSR1 dump
  rm -f "/run/ugfs2/$1.stats"
  kill -USR1 "$1"
  for _ in $(seq 100); do [ -s "/run/ugfs2/$1.stats" ] && break; sleep 0.05; done
  [ -s "/run/ugfs2/$1.stats" ] || fail "no stats dump from pid $1"
  awk -v k="$2" '$1 == k {print $2}' "/run/ugfs2/$1.stats"
}

# height_of IMG ADDR: di_height of the dinode at block ADDR (gfs2_edit needs a path with a '/').
height_of() { gfs2_edit -p "$2" field di_height "$(realpath "$1")" 2>/dev/null | tail -1 | tr -dc '0-9'; }

for bs in 4096 1024; do
  img=$T/io-$bs.img
  mnt=$T/m$bs
  log "block size $bs"
  make_image "$img" 512M "$bs"
  mount_fs "$img" "$mnt"
  pid=${FS_PIDS[$mnt]}

  # O_DIRECT: 8 x 1 MiB written and read with O_DIRECT; buffered read agrees.
  out=$($HELPER odirect "$mnt/direct" 8) || fail "O_DIRECT test"
  expect_eq "MAP_SHARED on an O_DIRECT open" "$out" "odirect-mmap-shared: allowed"
  dd if="$mnt/direct" of=/dev/null bs=4k iflag=direct count=3 status=none || fail "dd O_DIRECT 4k"

  # mmap: MAP_SHARED write of 3 MiB + odd tail, read back via read(2) and a new mapping.
  $HELPER mmap-write "$mnt/mapped" $((3 * 1048576 + 1234)) || fail "mmap write"

  # fallocate and SEEK_DATA/SEEK_HOLE.
  out=$($HELPER seek "$mnt/seek" "$bs") || fail "seek/fallocate: $out"
  log "$out"
  fallocate -l 1M "$mnt/falloc" || fail "fallocate"
  expect_eq "fallocated size" "$(stat -c %s "$mnt/falloc")" "1048576"
  [ "$(stat -c %b "$mnt/falloc")" -ge 2048 ] || fail "fallocate allocated too little"
  if fallocate -p -o 0 -l 65536 "$mnt/falloc" 2>"$T/punch.err"; then
    log "punch hole supported"
  else
    log "punch hole: $(cat "$T/punch.err")"
  fi

  # copy_file_range.
  head -c 3000000 /dev/urandom >"$mnt/src"
  out=$($HELPER copy-range "$mnt/src" "$mnt/dst") || fail "copy_file_range: $out"
  cmp "$mnt/src" "$mnt/dst" || fail "copy_file_range data differs"

  # 2 GiB sparse file at scattered offsets.
  $HELPER sparse-write "$mnt/sparse" || fail "sparse write"
  $HELPER sparse-verify "$mnt/sparse" || fail "sparse verify (before remount)"
  [ "$(du -k "$mnt/sparse" | cut -f1)" -lt 8192 ] || fail "sparse file uses $(du -k "$mnt/sparse")"
  sparse_ino=$(stat -c %i "$mnt/sparse")

  # Cached re-read sends no READ (keep_cache + 1 s attr timeout).
  head -c 4M /dev/urandom >"$mnt/cached"
  cat "$mnt/cached" >/dev/null
  r0=$(stat_of "$pid" read)
  cat "$mnt/cached" >/dev/null
  cat "$mnt/cached" >/dev/null
  r1=$(stat_of "$pid" read)
  expect_eq "READ requests during cached re-read" "$((r1 - r0))" "0"

  sync "$mnt/src" || fail "fsync"
  sums=$(cd "$mnt" && sha256sum direct mapped src dst cached)
  unmount_fs "$mnt"
  check_clean "$img"
  h=$(height_of "$img" "$sparse_ino")
  log "sparse file dinode $sparse_ino: di_height=$h"
  [ -n "$h" ] && [ "$h" -ge 2 ] || fail "sparse file height '$h' < 2"

  mount_fs "$img" "$mnt"
  expect_eq "checksums after remount" "$(cd "$mnt" && sha256sum direct mapped src dst cached)" "$sums"
  $HELPER odirect-verify "$mnt/direct" 8 || fail "O_DIRECT data after remount"
  $HELPER mmap-verify "$mnt/mapped" $((3 * 1048576 + 1234)) || fail "mmap data after remount"
  $HELPER sparse-verify "$mnt/sparse" || fail "sparse verify (after remount)"
  # Shrink the sparse file (frees the tree), then grow it again.
  truncate -s $((1536 << 20)) "$mnt/sparse" || fail "truncate down sparse"
  truncate -s $((3 << 30)) "$mnt/sparse" || fail "truncate up sparse"
  expect_eq "sparse size" "$(stat -c %s "$mnt/sparse")" "$((3 << 30))"
  rm -f "$mnt"/*
  unmount_fs "$mnt"
  check_clean "$img"
done

# Direct writes' mtime/ctime under every I/O policy: the keeping ones (proposal-2021, naive) keep
# the writer's DF glock after its write, so the update's try of EX right after it always fails;
# it must be retried, not dropped. And the GETATTR / GETXATTR (security.capability) the kernel
# sends before each of the writer's WRITEs is served under the glock the writer keeps (the
# io_lent counter of `ugfs2-tool counters`), not queued behind it until the linger ends.
TOOL=${UGFS2_TOOL:-$(dirname "$UGFS2_BIN")/../dlm/ugfs2-tool}
[ -x "$TOOL" ] || fail "no ugfs2-tool (set UGFS2_TOOL)"
img=$T/times.img
mnt=$T/mtimes
make_image "$img" 256M 4096
for policy in merged proposal-2021 naive; do
  mount_fs "$img" "$mnt" "direct,io_policy=$policy"
  head -c 1048576 /dev/zero >"$mnt/f"
  lent=$("$TOOL" counters "$mnt" | awk '$1 == "io_lent" {print $2}')
  if [ "$policy" = merged ]; then
    expect_eq "io_policy=merged: io_lent (it keeps no glock)" "$lent" 0
  else
    [ "${lent:-0}" -ge 200 ] || fail "io_policy=$policy: io_lent=${lent:-none} after 256 writes"
  fi
  sync "$mnt/f" || fail "fsync"
  out=$($HELPER dio-times "$mnt/f" 2>&1) || fail "io_policy=$policy: $out"
  log "io_policy=$policy: $out"
  rm -f "$mnt/f"
  unmount_fs "$mnt"
done
check_clean "$img"
