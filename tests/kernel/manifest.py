#!/usr/bin/env python3
"""manifest.py ROOT [--xattrs FILE]: the host's manifest of the tree under ROOT, line for line
what guest_manifest.sh prints in the guest (see there for the format), sorted bytewise.
With --xattrs FILE, also writes "path|name|sha256(value)|len" for every user.* xattr to FILE."""
import hashlib
import os
import stat
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
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def entry(root, rel):
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
    elif stat.S_ISSOCK(m):
        t, x = "sock", "-"
    else:
        t, x = "weird", "-"
    return "|".join([rel, t, "%o" % stat.S_IMODE(m), str(st.st_uid), str(st.st_gid),
                     str(st.st_size), str(st.st_nlink), str(st.st_blocks),
                     str(int(st.st_mtime)), x])


def main():
    root = sys.argv[1]
    xfile = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--xattrs" else None
    rels = ["."]
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            rels.append("./" + os.path.relpath(os.path.join(d, n), root))
    lines = [entry(root, r) for r in rels]
    out = sys.stdout.buffer
    for ln in sorted(l.encode("utf-8", "surrogateescape") for l in lines):
        out.write(ln + b"\n")
    if xfile:
        xl = []
        for r in rels:
            p = os.path.join(root, r)
            for n in os.listxattr(p, follow_symlinks=False):
                if n.startswith("user."):
                    v = os.getxattr(p, n, follow_symlinks=False)
                    xl.append("%s|%s|%s|%d" % (r, n, hashlib.sha256(v).hexdigest(), len(v)))
        with open(xfile, "w") as f:
            f.write("".join(l + "\n" for l in sorted(xl)))


if __name__ == "__main__":
    main()
