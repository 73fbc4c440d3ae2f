#!/usr/bin/env python3
"""The host side of the kernel-interop manifests.

manifest.py ROOT [--xattrs FILE] [--devices FILE]
    Prints the manifest of the tree under ROOT, line for line what guest_manifest.sh prints in
    the guest (see there for the format), sorted bytewise. --xattrs FILE also writes
    "path|name|sha256(value)|len" for every user.* and system.posix_acl_* xattr; --devices FILE
    writes "ino|path|major:minor" (hex) for every device node.
manifest.py --check-devices IMAGE FILE
    Reads the dinode of each device node of FILE (as --devices wrote it; the inode number is the
    dinode's block address) from the unmounted GFS2 IMAGE and checks its di_major/di_minor.
"""
import argparse
import hashlib
import os
import stat
import struct
import sys

LARGE = 64 << 20
MIB = 1 << 20


def sha_file(path, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size > LARGE:
            for idx in (0, size // 2 // MIB, (size - 1) // MIB):
                f.seek(idx * MIB)
                h.update(f.read(MIB))
            return "sampled:" + h.hexdigest()
        while True:
            b = f.read(MIB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def entry(root, rel, devices):
    p = os.path.join(root, rel)
    st = os.lstat(p)
    m = st.st_mode
    if stat.S_ISREG(m):
        t, x = "reg", sha_file(p, st.st_size)
    elif stat.S_ISDIR(m):
        t, x = "dir", "-"
    elif stat.S_ISLNK(m):
        t, x = "lnk", os.readlink(p)
    elif stat.S_ISFIFO(m):
        t, x = "fifo", "-"
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        t = "chr" if stat.S_ISCHR(m) else "blk"
        x = "%x:%x" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        devices.append("%d|%s|%s" % (st.st_ino, rel, x))
    elif stat.S_ISSOCK(m):
        t, x = "sock", "-"
    else:
        t, x = "weird", "-"
    return "|".join([rel, t, "%o" % stat.S_IMODE(m), str(st.st_uid), str(st.st_gid),
                     str(st.st_size), str(st.st_nlink), str(st.st_blocks),
                     str(int(st.st_mtime)), x])


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(l + "\n" for l in sorted(lines)))


def manifest(root, xfile, dfile):
    rels = ["."]
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            rels.append("./" + os.path.relpath(os.path.join(d, n), root))
    devices = []
    lines = [entry(root, r, devices) for r in rels]
    out = sys.stdout.buffer
    for ln in sorted(l.encode("utf-8", "surrogateescape") for l in lines):
        out.write(ln + b"\n")
    if dfile:
        write_lines(dfile, devices)
    if xfile:
        xl = []
        for r in rels:
            p = os.path.join(root, r)
            for n in os.listxattr(p, follow_symlinks=False):
                if n.startswith("user.") or n.startswith("system.posix_acl_"):
                    v = os.getxattr(p, n, follow_symlinks=False)
                    xl.append("%s|%s|%s|%d" % (r, n, hashlib.sha256(v).hexdigest(), len(v)))
        write_lines(xfile, xl)


def check_devices(image, dfile):
    bad = 0
    n = 0
    with open(image, "rb") as img:
        img.seek(65536 + 36)
        bsize = struct.unpack(">I", img.read(4))[0]  # sb_bsize
        for line in open(dfile):
            ino, rel, want = line.rstrip("\n").split("|")
            img.seek(int(ino) * bsize)
            b = img.read(104)
            magic, mtype = struct.unpack(">II", b[0:8])
            no_addr = struct.unpack(">Q", b[32:40])[0]
            mode = struct.unpack(">I", b[40:44])[0]
            major, minor = struct.unpack(">II", b[96:104])
            got = "%x:%x" % (major, minor)
            n += 1
            if magic != 0x01161970 or mtype != 4 or no_addr != int(ino):
                print("%s: block %s is no dinode of that address (magic %x type %d addr %d)"
                      % (rel, ino, magic, mtype, no_addr))
                bad += 1
            elif not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) or got != want:
                print("%s: on-disk dinode mode %o di_major:di_minor %s, the mount said %s"
                      % (rel, mode, got, want))
                bad += 1
    print("%d device dinodes checked, %d bad" % (n, bad))
    return 1 if bad else 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check-devices":
        sys.exit(check_devices(sys.argv[2], sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--xattrs")
    ap.add_argument("--devices")
    a = ap.parse_args()
    manifest(a.root, a.xattrs, a.devices)


if __name__ == "__main__":
    main()
