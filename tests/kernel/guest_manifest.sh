#!/bin/sh
# manifest ROOT: one line per file under ROOT (ROOT itself is "."), for comparison with
# manifest.py (same format, same order after `LC_ALL=C sort`):
#   path|type|mode|uid|gid|size|nlink|blocks|mtime|extra
# type reg/dir/lnk/fifo/chr/blk/sock; mode octal (with suid/sgid/sticky); blocks in 512-byte
# units; mtime seconds; extra: sha256 of a regular file (files over 64 MiB: "sampled:" and the
# sha256 of the 1 MiB pieces at MiB index 0, size/2/1MiB and (size-1)/1MiB, concatenated), the
# target of a symlink, major:minor (hex) of a device, "-" otherwise.
# Written for busybox sh (the guest has nothing else); also runs with the host's sh.
set -u
root=$1
tmp=$(mktemp -d)
cd "$root" || exit 1
find . -exec stat -c '%F|%a|%u|%g|%s|%h|%b|%Y|%t:%T|%n' {} + >"$tmp/stat" || exit 1
find . -type f -size -67108865c -exec sha256sum {} + >"$tmp/sha" || exit 1
find . -type f -size +67108864c >"$tmp/large" || exit 1
while IFS= read -r f; do
  size=$(stat -c %s "$f")
  mib=1048576
  { dd if="$f" bs=$mib skip=0 count=1
    dd if="$f" bs=$mib skip=$((size / 2 / mib)) count=1
    dd if="$f" bs=$mib skip=$(((size - 1) / mib)) count=1; } 2>/dev/null |
    sha256sum | sed "s|-\$|$f|; s|^|sampled:|" >>"$tmp/sha"
done <"$tmp/large"
find . -type l >"$tmp/links" || exit 1
while IFS= read -r l; do
  printf '%s|%s\n' "$l" "$(readlink "$l")"
done <"$tmp/links" >"$tmp/targets"
awk -v shaf="$tmp/sha" -v lnkf="$tmp/targets" '
BEGIN {
  while ((getline line < shaf) > 0) {
    sp = index(line, "  ")
    sha[substr(line, sp + 2)] = substr(line, 1, sp - 1)
  }
  while ((getline line < lnkf) > 0) {
    b = index(line, "|")
    tgt[substr(line, 1, b - 1)] = substr(line, b + 1)
  }
}
{
  n = split($0, f, "|")
  name = $0
  for (k = 0; k < 9; k++) name = substr(name, index(name, "|") + 1)
  t = f[1]
  if (t ~ /^regular/) { t = "reg"; x = (name in sha) ? sha[name] : "NOSHA" }
  else if (t == "directory") { t = "dir"; x = "-" }
  else if (t == "symbolic link") { t = "lnk"; x = tgt[name] }
  else if (t == "fifo") { t = "fifo"; x = "-" }
  else if (t ~ /^character/) { t = "chr"; x = f[9] }
  else if (t ~ /^block/) { t = "blk"; x = f[9] }
  else if (t == "socket") { t = "sock"; x = "-" }
  else { x = "-" }
  print name "|" t "|" f[2] "|" f[3] "|" f[4] "|" f[5] "|" f[6] "|" f[7] "|" f[8] "|" x
}' "$tmp/stat" | LC_ALL=C sort
rc=$?
rm -rf "$tmp"
exit $rc
