#!/usr/bin/env bash
# POSIX namespace and metadata on real mkfs.gfs2 images (4096- and 1024-byte blocks): files,
# directories, hard links, symlinks, device/fifo/socket nodes, renameat2 flags, truncate up and
# down, timestamps with nanoseconds, statfs consistency, xattrs, remount, fsck CLEAN.
source "$(dirname "$0")/fs_lib.sh"
fs_init

for bs in 4096 1024; do
  img=$T/posix-$bs.img
  mnt=$T/m$bs
  log "block size $bs"
  make_image "$img" 256M "$bs"
  mount_fs "$img" "$mnt"

  # Directories and files.
  mkdir -p "$mnt/a/b/c" || fail "mkdir -p"
  echo hello >"$mnt/a/b/c/file" || fail "create"
  expect_eq "read back" "$(cat "$mnt/a/b/c/file")" "hello"
  expect_eq "dir nlink" "$(stat -c %h "$mnt/a/b")" "3"
  rmdir "$mnt/a/b" 2>/dev/null && fail "rmdir of a non-empty dir succeeded"
  mkdir "$mnt/a" 2>/dev/null && fail "mkdir over an existing dir succeeded"
  [ -e "$mnt/nope" ] && fail "nonexistent name exists"
  longname=$(printf 'n%.0s' $(seq 256))
  touch "$mnt/$longname" 2>/dev/null && fail "256-byte name accepted"
  name255=$(printf 'n%.0s' $(seq 255))
  touch "$mnt/$name255" || fail "255-byte name refused"
  rm "$mnt/$name255" || fail "rm 255-byte name"

  # Hard links.
  ln "$mnt/a/b/c/file" "$mnt/a/hard" || fail "link"
  expect_eq "link count" "$(stat -c %h "$mnt/a/hard")" "2"
  expect_eq "same inode" "$(stat -c %i "$mnt/a/hard")" "$(stat -c %i "$mnt/a/b/c/file")"
  ln "$mnt/a/b" "$mnt/dirlink" 2>/dev/null && fail "hard link to a directory succeeded"
  rm "$mnt/a/b/c/file"
  expect_eq "link count after unlink" "$(stat -c %h "$mnt/a/hard")" "1"
  expect_eq "data via remaining link" "$(cat "$mnt/a/hard")" "hello"

  # Symlinks (short and long targets).
  ln -s ../a/hard "$mnt/a/b/sym" || fail "symlink"
  expect_eq "readlink" "$(readlink "$mnt/a/b/sym")" "../a/hard"
  # GFS2 symlinks are stuffed: the target must fit in the dinode block (bs - 232 bytes).
  longtarget=$(printf 'x/%.0s' $(seq $(( (bs - 240) / 2 ))))end
  ln -s "$longtarget" "$mnt/longsym" || fail "long symlink"
  ln -s "$(printf 'y%.0s' $(seq $((bs - 231))))" "$mnt/toolong" 2>"$T/sym.err" &&
    fail "over-long symlink accepted"
  grep -q "too long" "$T/sym.err" || fail "over-long symlink: $(cat "$T/sym.err")"
  expect_eq "long readlink" "$(readlink "$mnt/longsym")" "$longtarget"

  # Device, fifo and socket nodes.
  mknod "$mnt/chr" c 1 3 || fail "mknod c"
  mknod "$mnt/blk" b 7 0 || fail "mknod b"
  mkfifo "$mnt/fifo" || fail "mkfifo"
  python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$mnt/sock" ||
    fail "socket bind"
  expect_eq "chr" "$(stat -c '%F %t:%T' "$mnt/chr")" "character special file 1:3"
  expect_eq "blk" "$(stat -c '%F %t:%T' "$mnt/blk")" "block special file 7:0"
  expect_eq "fifo" "$(stat -c %F "$mnt/fifo")" "fifo"
  expect_eq "sock" "$(stat -c %F "$mnt/sock")" "socket"
  (echo through-fifo >"$mnt/fifo" &)
  expect_eq "fifo data" "$(timeout 10 cat "$mnt/fifo")" "through-fifo"

  # renameat2 flags.
  echo one >"$mnt/r1"
  echo two >"$mnt/r2"
  expect_eq "noreplace onto existing" "$($HELPER renameat2 "$mnt/r1" "$mnt/r2" noreplace)" "EEXIST"
  expect_eq "exchange" "$($HELPER renameat2 "$mnt/r1" "$mnt/r2" exchange)" "OK"
  expect_eq "r1 after exchange" "$(cat "$mnt/r1")" "two"
  expect_eq "r2 after exchange" "$(cat "$mnt/r2")" "one"
  expect_eq "exchange dir and file" "$($HELPER renameat2 "$mnt/a/b" "$mnt/r1" exchange)" "OK"
  [ -d "$mnt/r1" ] && [ -f "$mnt/a/b" ] || fail "dir/file exchange"
  expect_eq "exchange back" "$($HELPER renameat2 "$mnt/a/b" "$mnt/r1" exchange)" "OK"
  expect_eq "noreplace to new" "$($HELPER renameat2 "$mnt/r2" "$mnt/a/r2" noreplace)" "OK"
  mv "$mnt/r1" "$mnt/a/b/r1" || fail "rename over"
  mkdir "$mnt/d1" "$mnt/d2"
  touch "$mnt/d2/x"
  mv -T "$mnt/d1" "$mnt/d2" 2>/dev/null && fail "rename dir over non-empty dir succeeded"
  mkdir "$mnt/d1/sub"
  mv "$mnt/d1" "$mnt/d1/sub/" 2>/dev/null && fail "rename dir into itself succeeded"
  mv "$mnt/d1/sub" "$mnt/d2/" || fail "move dir across parents"
  expect_eq "d1 nlink" "$(stat -c %h "$mnt/d1")" "2"
  expect_eq "d2 nlink" "$(stat -c %h "$mnt/d2")" "3"

  # Truncate up and down.
  head -c 100000 /dev/urandom >"$mnt/t"
  sum=$(head -c 5000 "$mnt/t" | sha256sum)
  truncate -s 5000 "$mnt/t"
  expect_eq "truncated size" "$(stat -c %s "$mnt/t")" "5000"
  expect_eq "content kept" "$(sha256sum <"$mnt/t")" "$sum"
  truncate -s 10M "$mnt/t"
  expect_eq "grown size" "$(stat -c %s "$mnt/t")" "10485760"
  expect_eq "zeros after grow" "$(tail -c +5001 "$mnt/t" | tr -d '\0' | wc -c)" "0"
  truncate -s 0 "$mnt/t"
  expect_eq "empty" "$(stat -c %s "$mnt/t")" "0"
  echo stuffed >"$mnt/t"
  truncate -s 1 "$mnt/t"
  expect_eq "stuffed truncate" "$(cat "$mnt/t")" "s"

  # Timestamps with nanoseconds.
  touch -d '2021-03-04 05:06:07.123456789 UTC' "$mnt/t"
  expect_eq "mtime ns" "$(stat -c %.9Y "$mnt/t")" "1614834367.123456789"
  touch -a -d '2020-01-01 00:00:00.5 UTC' "$mnt/t"
  expect_eq "atime ns" "$(stat -c %.9X "$mnt/t")" "1577836800.500000000"
  touch -m -d '2022-02-02 02:02:02.000000001 UTC' "$mnt/a/hard"
  before=$(date +%s)
  touch "$mnt/t"  # UTIME_NOW
  [ "$(stat -c %Y "$mnt/t")" -ge "$before" ] || fail "touch (UTIME_NOW) did not update mtime"

  # chmod / chown.
  chmod 0751 "$mnt/t"
  expect_eq "mode" "$(stat -c %a "$mnt/t")" "751"
  chown 1234:5678 "$mnt/t"
  expect_eq "owner" "$(stat -c %u:%g "$mnt/t")" "1234:5678"

  # Extended attributes (fs_xattr.sh tests them in depth): set, get, list, remove; they survive
  # the remount below.
  python3 - "$mnt/t" <<'PY' || fail "xattr calls"
import errno, os, sys
f = sys.argv[1]
os.setxattr(f, "user.x", b"1")
os.setxattr(f, "user.gone", b"2")
assert os.getxattr(f, "user.x") == b"1"
os.removexattr(f, "user.gone")
assert os.listxattr(f) == ["user.x"], os.listxattr(f)
PY

  # statfs consistency: writing 8 MiB uses >= 8 MiB of blocks; deleting gives them back.
  sync
  free0=$(df_free "$mnt")
  files0=$(stat -f -c %d "$mnt")
  head -c 8M /dev/zero >"$mnt/big"
  free1=$(df_free "$mnt")
  used=$(( (free0 - free1) * bs ))
  [ $used -ge 8388608 ] || fail "statfs: 8 MiB file used only $used bytes"
  [ $used -le $((8388608 + 8388608 / 16 + 65536)) ] || fail "statfs: 8 MiB file used $used bytes"
  rm "$mnt/big"
  expect_eq "free blocks after delete" "$(df_free "$mnt")" "$free0"
  expect_eq "free inodes after delete" "$(stat -f -c %d "$mnt")" "$files0"
  expect_eq "statfs bsize" "$(stat -f -c %S "$mnt")" "$bs"

  # Remount: everything persisted.
  inode_hard=$(stat -c %i "$mnt/a/hard")
  unmount_fs "$mnt"
  check_clean "$img"
  mount_fs "$img" "$mnt"
  expect_eq "hard after remount" "$(cat "$mnt/a/hard")" "hello"
  expect_eq "inode stable" "$(stat -c %i "$mnt/a/hard")" "$inode_hard"
  expect_eq "symlink after remount" "$(readlink "$mnt/longsym")" "$longtarget"
  expect_eq "chr after remount" "$(stat -c '%F %t:%T' "$mnt/chr")" "character special file 1:3"
  expect_eq "mtime ns after remount" "$(stat -c %.9Y "$mnt/a/hard")" "1643767322.000000001"
  expect_eq "owner after remount" "$(stat -c %u:%g:%a "$mnt/t")" "1234:5678:751"
  expect_eq "listing" "$(cd "$mnt" && ls -A | sort | tr '\n' ' ')" \
    "a blk chr d1 d2 fifo longsym sock t "
  rm -rf "${mnt:?}"/* || fail "rm -rf"
  expect_eq "empty root" "$(ls -A "$mnt" | wc -l)" "0"
  unmount_fs "$mnt"
  check_clean "$img"
done
