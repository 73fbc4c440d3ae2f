#!/usr/bin/env bash
# ENOSPC on a small volume (4096 and 1024 blocks): a large write fails cleanly with ENOSPC, many
# small files hit ENOSPC too, the volume stays CLEAN, and after deleting everything statfs
# reports exactly the free space it had before (blocks and inodes).
source "$(dirname "$0")/fs_lib.sh"
fs_init

for bs in 4096 1024; do
  img=$T/enospc-$bs.img
  mnt=$T/m$bs
  log "block size $bs"
  make_image "$img" 48M "$bs" -J 8
  mount_fs "$img" "$mnt"
  free0=$(df_free "$mnt")
  ffree0=$(stat -f -c %d "$mnt")
  mkdir "$mnt/d"

  out=$($HELPER fill "$mnt/d/big" 1024)
  log "fill: $out"
  [[ "$out" == *"error ENOSPC"* ]] || fail "expected ENOSPC, got: $out"
  dd if=/dev/zero of="$mnt/d/more" bs=64k count=16 2>"$T/dd.err" && fail "dd on a full volume succeeded"
  grep -q "No space left on device" "$T/dd.err" || fail "dd error: $(cat "$T/dd.err")"
  [ "$(df_free "$mnt")" -lt 64 ] || fail "volume not full: $(df_free "$mnt") free blocks"
  # The volume must still work for reads and deletes while full.
  size=$(stat -c %s "$mnt/d/big")
  [ "$size" -gt $((30 << 20)) ] || fail "only $size bytes fit on a 48 MiB volume"
  cmp -n "$size" "$mnt/d/big" <(head -c "$size" /dev/zero | tr '\0' z) || fail "content of full file"
  unmount_fs "$mnt"
  check_clean "$img"

  mount_fs "$img" "$mnt"
  rm -f "$mnt/d/big" "$mnt/d/more"
  # Now many small files until ENOSPC (dinode and directory-leaf allocation failures).
  python3 - "$mnt/d" <<'PY' >"$T/small.out" 2>&1 || fail "small files: $(cat "$T/small.out")"
import errno, os, sys
d = sys.argv[1]
i = 0
try:
    while True:
        with open(os.path.join(d, "s%07d" % i), "wb") as f:
            f.write(b"q" * 3000)
        i += 1
except OSError as e:
    if e.errno != errno.ENOSPC:
        raise
print("created", i)
PY
  log "small files: $(cat "$T/small.out")"
  unmount_fs "$mnt"
  check_clean "$img"

  mount_fs "$img" "$mnt"
  rm -rf "$mnt/d" || fail "rm -rf on a full volume"
  expect_eq "free blocks after deleting everything" "$(df_free "$mnt")" "$free0"
  expect_eq "free inodes after deleting everything" "$(stat -f -c %d "$mnt")" "$ffree0"
  unmount_fs "$mnt"
  check_clean "$img"
  mount_fs "$img" "$mnt"
  expect_eq "free blocks after remount" "$(df_free "$mnt")" "$free0"
  unmount_fs "$mnt"
  check_clean "$img"
done
