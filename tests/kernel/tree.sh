#!/bin/sh
# tree.sh ROOT BSIZE: writes the varied tree of the interop checks under ROOT (a gfs2 volume of
# block size BSIZE). Plain POSIX sh on purpose: the host runs it on a ugfs2 mount (coreutils),
# the guest on the kernel's mount (busybox). Fails on the first command that fails.
set -eu
root=$1
bs=$2
cd "$root"

# Nested directories, and a file at the bottom.
mkdir -p tree/a/b/c/d/e/f/g/h
echo deep >tree/a/b/c/d/e/f/g/h/leaf
mkdir tree/a/empty tree/a/b/sibling

# Sizes around the stuffed-dinode limit (a 232-byte dinode header) and block boundaries.
mkdir sizes
stuffed=$((bs - 232))
: >sizes/s0
for s in 1 100 $((stuffed - 1)) $stuffed $((stuffed + 1)) $((bs - 1)) $bs $((bs + 1)) \
         $((5 * bs + 7)) $((1048576 + 3)); do
  head -c $s /dev/urandom >sizes/s$s
done
# 20 MiB of data.
head -c 20971520 /dev/urandom >big20m
# Sparse: 64 KiB at 0 and at 3 GiB; data at 0 and 1 MiB + 5; a file that is all hole.
head -c 65536 /dev/urandom >sparse3g
head -c 65536 /dev/urandom | dd of=sparse3g bs=65536 seek=49152 conv=notrunc 2>/dev/null
head -c 4096 /dev/urandom >sparse1m
head -c 777 /dev/urandom | dd of=sparse1m bs=1 seek=1048581 conv=notrunc 2>/dev/null
truncate -s 1073741824 hole1g

# A directory of 3000 entries (exhash, several leaves), with a few subdirectories in it.
mkdir many
i=0
while [ $i -lt 3000 ]; do
  echo "entry $i" >many/entry-$i-with-a-somewhat-longer-name
  i=$((i + 1))
done
mkdir many/sub1 many/sub2 many/sub3
rm many/entry-17-with-a-somewhat-longer-name many/entry-2999-with-a-somewhat-longer-name

# Hard links (nlink 3, one in the big directory).
echo "linked content" >links-target
ln links-target links-hard1
ln links-target many/links-hard2

# Symlinks: short, 300-byte target, to a directory, dangling absolute; long names.
ln -s links-target sym-short
long=""
i=0
while [ $i -lt 30 ]; do long="${long}component$i/"; i=$((i + 1)); done
long=$(printf '%s' "$long" | cut -c1-300)
ln -s "$long" sym-300
ln -s tree/a sym-dir
ln -s /nonexistent/absolute/target sym-dangling
name255=$(printf 'n%.0s' $(seq 255))
echo "long name" >"$name255"
echo "space" >"with space"
echo "utf8" >"caf$(printf '\303\251')-$(printf '\342\234\223')"

# A fifo and device nodes (one with a minor above 255).
mkfifo fifo
mknod chr-null c 1 3
mknod blk-loop b 7 200
mknod chr-big c 250 70000

# Modes and owners (chown first: it clears set-id bits).
mkdir modes
for m in 0 400 600 640 644 755 4755 2755 6711 1777; do
  : >modes/f$m
done
chown 1000:1000 modes/f600 modes/f640
chown 65534:65534 modes/f4755
chown 4000000000:123 modes/f2755
chown 0:100 modes/f6711
for m in 0 400 600 640 644 755 4755 2755 6711 1777; do
  chmod $m modes/f$m
done
mkdir modes/sticky modes/private modes/sgid
chmod 1777 modes/sticky
chmod 700 modes/private
chown 0:777 modes/sgid
chmod 2775 modes/sgid
: >modes/sgid/inherits-gid
mkdir modes/sgid/inherits-sgid
chown -h 1234:5678 sym-short
chown 42:43 fifo chr-big

# Fixed mtimes (the directories last: creating entries changes them).
touch -d @1000000000 sizes/s1 big20m sparse3g
touch -d @2000000000 modes/f644
touch -d @1234567890 tree/a/b/c tree modes many
