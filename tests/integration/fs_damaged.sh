#!/usr/bin/env bash
# Damaged volumes (corrupt copies of a good image made with dd / gfs2_edit):
#  * superblock: mount refused with one clear error line and a non-zero exit (also for a foreign
#    ext4 volume and an all-zero file) and nothing gets mounted;
#  * dinode (bad magic; absurd di_height): mount works, touching that file gives EIO, its
#    neighbours still work, the daemon keeps running and unmounts cleanly;
#  * rgrp header (bad magic): mount is refused with a clear message, or it works and the damage
#    shows up as EIO/ENOSPC for allocations; either way no crash and a clean exit.
source "$(dirname "$0")/fs_lib.sh"
fs_init

img=$T/good.img
mnt=$T/m
make_image "$img" 256M 4096 -r 32
mount_fs "$img" "$mnt"
mkdir "$mnt/dir"
echo good >"$mnt/dir/a"
echo victim >"$mnt/dir/victim"
head -c 8M /dev/urandom >"$mnt/dir/tall"   # height >= 1 metadata tree
echo neighbour >"$mnt/dir/z"
victim=$(stat -c %i "$mnt/dir/victim")
tall=$(stat -c %i "$mnt/dir/tall")
tall_sum=$(sha256sum <"$mnt/dir/tall")
unmount_fs "$mnt"
check_clean "$img"
IMGPATH=$(realpath "$img")

# expect_refused IMG WHAT [opts]: the daemon must exit non-zero with an error line, no mount.
expect_refused() {
  local bad=$1 what=$2 opts=${3:-}
  mkdir -p "$mnt"
  local rc=0
  if [ -n "$opts" ]; then
    timeout 60 "$UGFS2_BIN" -o "$opts" "$bad" "$mnt" >"$T/refused.out" 2>&1 || rc=$?
  else
    timeout 60 "$UGFS2_BIN" "$bad" "$mnt" >"$T/refused.out" 2>&1 || rc=$?
  fi
  [ $rc -ne 0 ] || fail "$what: mount was not refused"
  [ $rc -ne 124 ] || fail "$what: ugfs2 hung"
  grep -q " $(realpath "$mnt") " /proc/mounts && fail "$what: something got mounted"
  grep -Eq "^ugfs2: cannot (mount|open)" "$T/refused.out" ||
    fail "$what: no clear error line: $(cat "$T/refused.out")"
  log "$what refused (exit $rc): $(grep '^ugfs2:' "$T/refused.out" | head -1)"
}

# --- superblock ---
cp --sparse=always "$img" "$T/sb.img"
printf '\xde\xad\xbe\xef' | dd of="$T/sb.img" bs=1 seek=65536 conv=notrunc status=none
expect_refused "$T/sb.img" "bad superblock magic"
cp --sparse=always "$img" "$T/sb2.img"
# sb_bsize (be32 at 65536 + 24 + 4 + 4 + 4 = +36?): corrupt the whole rest of the sb fields.
head -c 200 /dev/urandom | dd of="$T/sb2.img" bs=1 seek=$((65536 + 24)) conv=notrunc status=none
expect_refused "$T/sb2.img" "garbage superblock fields"
truncate -s 64M "$T/zero.img"
expect_refused "$T/zero.img" "all-zero device"
if command -v mkfs.ext4 >/dev/null; then
  truncate -s 64M "$T/ext4.img"
  mkfs.ext4 -q -F "$T/ext4.img" >/dev/null 2>&1
  expect_refused "$T/ext4.img" "foreign (ext4) volume"
fi
expect_refused "$T/does-not-exist.img" "missing device"

# --- dinode with a bad magic ---
cp --sparse=always "$img" "$T/di.img"
printf '\xde\xad\xbe\xef' | dd of="$T/di.img" bs=1 seek=$((victim * 4096)) conv=notrunc status=none
mount_fs "$T/di.img" "$mnt"
pid=${FS_PIDS[$mnt]}
expect_eq "good file" "$(cat "$mnt/dir/a")" "good"
cat "$mnt/dir/victim" >/dev/null 2>"$T/di.err" && fail "reading a damaged dinode succeeded"
grep -q "Input/output error" "$T/di.err" || fail "damaged dinode: $(cat "$T/di.err")"
stat "$mnt/dir/victim" >/dev/null 2>&1 && fail "stat of a damaged dinode succeeded"
rm "$mnt/dir/victim" 2>/dev/null && log "note: unlink of the damaged dinode succeeded"
ls -l "$mnt/dir" >/dev/null 2>&1 || log "note: ls -l reports the damaged entry"
expect_eq "names still listed" "$(ls "$mnt/dir" | grep -c -e '^a$' -e '^z$')" "2"
expect_eq "neighbour" "$(cat "$mnt/dir/z")" "neighbour"
echo new >"$mnt/dir/new" || fail "create next to a damaged dinode"
kill -0 "$pid" || fail "daemon died"
unmount_fs "$mnt"
log "damaged dinode (magic): EIO, daemon survived"

# --- dinode with an absurd metadata height ---
cp --sparse=always "$img" "$T/height.img"
gfs2_edit -p "$tall" field di_height 99 "$(realpath "$T/height.img")" >/dev/null 2>&1 ||
  fail "gfs2_edit could not set di_height"
mount_fs "$T/height.img" "$mnt"
pid=${FS_PIDS[$mnt]}
cat "$mnt/dir/tall" >/dev/null 2>"$T/h.err" && fail "reading a dinode with di_height 99 succeeded"
grep -q "Input/output error" "$T/h.err" || fail "di_height 99: $(cat "$T/h.err")"
expect_eq "good file" "$(cat "$mnt/dir/a")" "good"
kill -0 "$pid" || fail "daemon died"
unmount_fs "$mnt"
log "damaged dinode (height): EIO, daemon survived"

# --- rgrp header ---
rgs=($(gfs2_edit -p rindex "$IMGPATH" 2>/dev/null | awk '/ri_addr/ {print $2}'))
[ ${#rgs[@]} -ge 3 ] || fail "expected >= 3 rgrps, got ${#rgs[@]}"
bad_rg=${rgs[$(( ${#rgs[@]} - 1 ))]}   # the last one: only used once the others fill up
cp --sparse=always "$img" "$T/rg.img"
printf '\xde\xad\xbe\xef\x00\x00\x00\x09' | dd of="$T/rg.img" bs=1 seek=$((bad_rg * 4096)) conv=notrunc status=none
mkdir -p "$mnt"
rc=0
"$UGFS2_BIN" -f "$T/rg.img" "$mnt" >"$T/rg.log" 2>&1 &
pid=$!
FS_PIDS[$mnt]=$pid
if wait_mounted "$mnt" "$pid"; then
  log "damaged rgrp $bad_rg: mount accepted; exercising allocation"
  expect_eq "existing data" "$(sha256sum <"$mnt/dir/tall")" "$tall_sum"
  out=$($HELPER fill "$mnt/filler" 1024)
  log "fill with a damaged rgrp: $out"
  [[ "$out" == *"error ENOSPC"* || "$out" == *"error EIO"* ]] || fail "fill: $out"
  rm -f "$mnt/filler"
  kill -0 "$pid" || fail "daemon died"
  unmount_fs "$mnt"
else
  wait "$pid"
  rc=$?
  unset "FS_PIDS[$mnt]"
  [ $rc -ne 0 ] || fail "damaged rgrp: daemon exited 0 without mounting"
  grep -Eq "^ugfs2: cannot (mount|open)" "$T/rg.log" || fail "damaged rgrp: unclear error: $(cat "$T/rg.log")"
  log "damaged rgrp $bad_rg: mount refused (exit $rc): $(grep '^ugfs2:' "$T/rg.log" | head -1)"
fi

# The good image is untouched by all of this.
check_clean "$img"
