#!/usr/bin/env python3
"""Workers and checkers of cluster_fs_concurrency.sh: what one node does to a volume that the
other nodes change at the same time, and the oracles that check the result from every node.

Every file name and every record describes itself, so that whatever another node did in between,
a checker can tell a right byte from a wrong one without knowing the interleaving:
  storm    names are ID.TAG (ID = nNpPsS: node, process, sequence of the create; TAG tells the
           names of one inode apart), the content is a function of ID only;
  append   64-byte records "A N P SEQ ...." ending in a CRC-32 of the rest;
  slots    RECSIZE-byte records "W N P SEQ slot K ..." filled with bytes derived from the header,
           ending in a CRC-32;
  mix      (fsstress-like) no oracle of its own: every node must see the same tree, byte for byte.
Each subcommand prints one summary line (or a manifest) on stdout, problems on stderr, and exits
1 if there was a problem. Expected races (ENOENT, EEXIST, ...) are counted, not problems.

Usage: cluster_storm.py SUBCOMMAND ARGS... (see the cmd_* functions)."""
import errno
import hashlib
import json
import mmap
import os
import random
import stat
import sys
import time
import zlib

PROG = "cluster_storm"


def die(msg):
    print(PROG + ": " + msg, file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------------------------------------------
# Phase (a): one node in its own directory (warm-up and the measured re-run).


def own_content(k, version):
    # 1..80 lines: stuffed (in the dinode block) and unstuffed files.
    n = (k * 13) % 80 + 1
    return b"".join(b"own file %03d version %d line %03d\n" % (k, version, i) for i in range(n))


def odirect_read(path, size):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, max(4096, (size + 4095) // 4096 * 4096))
        got = os.preadv(fd, [buf], 0)
        return bytes(buf[:got])
    finally:
        os.close(fd)


def cmd_warm(d, n):
    """Creates d (if missing) and N files in it, writes them, stats them and reads them back."""
    n = int(n)
    os.makedirs(d, exist_ok=True)
    for k in range(n):
        data = own_content(k, 0)
        p = os.path.join(d, "f%03d" % k)
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
    bad = check_own(d, n, 0)
    os.listdir(d)  # the measured work lists the directory too (an open of it: its iopen glock)
    print("warm: %d files in %s written, stated and read back%s" %
          (n, d, "" if not bad else ", %d wrong" % bad))
    return 1 if bad else 0


def check_own(d, n, version):
    bad = 0
    for k in range(n):
        p = os.path.join(d, "f%03d" % k)
        want = own_content(k, version)
        st = os.stat(p)
        if st.st_size != len(want):
            print("%s: size %d, expected %d" % (p, st.st_size, len(want)), file=sys.stderr)
            bad += 1
            continue
        with open(p, "rb") as f:
            got = f.read()
        if got != want:
            print("%s: content differs (buffered read)" % p, file=sys.stderr)
            bad += 1
        if odirect_read(p, len(want)) != want:
            print("%s: content differs (O_DIRECT read)" % p, file=sys.stderr)
            bad += 1
    return bad


def cmd_rework(d, n, version, step):
    """The measured work on the files cmd_warm made (version VERSION - 1), one STEP of it:
      stat   listdir, stat of every file (its size);
      read   buffered and O_DIRECT reads of every file (checked);
      write  overwrites of every file with version VERSION (same size: no truncate, no
             allocation), fsync'ed, then read back (checked)."""
    n, version = int(n), int(version)
    bad = 0
    if step == "stat":
        names = sorted(os.listdir(d))
        missing = [("f%03d" % k) for k in range(n) if ("f%03d" % k) not in names]
        if missing:
            die("rework: %s lacks %s" % (d, " ".join(missing[:5])))
        for k in range(n):
            p = os.path.join(d, "f%03d" % k)
            if os.stat(p).st_size != len(own_content(k, version - 1)):
                print("%s: wrong size" % p, file=sys.stderr)
                bad += 1
        what = "listed and stated"
    elif step == "read":
        bad = check_own(d, n, version - 1)
        what = "read (buffered and O_DIRECT)"
    elif step == "write":
        for k in range(n):
            p = os.path.join(d, "f%03d" % k)
            data = own_content(k, version)
            fd = os.open(p, os.O_WRONLY)
            if os.pwrite(fd, data, 0) != len(data):
                die("rework: short write to " + p)
            os.fsync(fd)
            os.close(fd)
        bad = check_own(d, n, version)
        what = "overwritten (same size, fsync) and read back"
    else:
        die("rework: unknown step " + step)
    print("rework: %d files %s%s" % (n, what, "" if not bad else ", %d wrong" % bad))
    return 1 if bad else 0


def cmd_check_own(d, n, version):
    bad = check_own(d, int(n), int(version))
    print("check: %s version %s: %s" % (d, version, "ok" if not bad else "%d wrong" % bad))
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------
# Phase (b): the shared directory storm.


def storm_content(ident):
    h = zlib.crc32(ident.encode())
    lines = h % 300 + 1  # 1..300 lines of ~32 bytes: stuffed and unstuffed files
    return b"".join(b"storm %s line %04d\n" % (ident.encode(), i) for i in range(lines))


def ident_of(name):
    return name.split(".", 1)[0]


def record_inos(path, inos):
    if path:
        with open(path, "w") as f:
            f.write("".join("%d\n" % i for i in inos))


def cmd_storm(root, node, proc, ops, seed, inos_out=""):
    """ROOT/s1 (the one shared directory) and ROOT/s2: OPS operations of a random mix of create,
    rename within s1, rename s1 -> s2 (and back), link, unlink of own and of others' names, and
    reads checking that a name's content matches it. INOS_OUT: where to write the inode numbers
    of the files created (for telling which phase made an inode fsck complains about)."""
    node, proc, ops, seed = int(node), int(proc), int(ops), int(seed)
    rng = random.Random(seed * 1000 + node * 10 + proc)
    s1, s2 = os.path.join(root, "s1"), os.path.join(root, "s2")
    me = "n%dp%d" % (node, proc)
    counts = {k: 0 for k in ("create", "rename", "rename_s2", "rename_s1", "link", "unlink_own",
                             "unlink_other", "read", "enoent", "nothing_to_pick")}
    seq = 0
    tag = 0
    inos = []
    listing = {s1: [], s2: []}
    bad = 0

    def refresh():
        for d in (s1, s2):
            listing[d] = os.listdir(d)

    def pick(d, own=None):
        names = listing[d]
        if own is not None:
            names = [x for x in names if x.startswith(me + "s") == own]
        if not names and own is not None:
            names = listing[d]
        if not names:
            raise LookupError(d)
        return rng.choice(names)

    def race(e):
        if e.errno != errno.ENOENT:
            raise e
        counts["enoent"] += 1

    for i in range(ops):
        if i % 8 == 0:
            refresh()
        r = rng.random()
        try:
            if r < 0.30 or not listing[s1]:
                ident = "%ss%04d" % (me, seq)
                seq += 1
                fd = os.open(os.path.join(s1, ident + ".c"), os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             0o644)
                os.write(fd, storm_content(ident))
                inos.append(os.fstat(fd).st_ino)
                os.close(fd)
                listing[s1].append(ident + ".c")
                counts["create"] += 1
                continue
            tag += 1
            if r < 0.42:
                src = pick(s1)
                counts["rename"] += 1
                os.rename(os.path.join(s1, src),
                          os.path.join(s1, "%s.r%s_%d" % (ident_of(src), me, tag)))
            elif r < 0.52:
                src = pick(s1)
                counts["rename_s2"] += 1
                os.rename(os.path.join(s1, src),
                          os.path.join(s2, "%s.m%s_%d" % (ident_of(src), me, tag)))
            elif r < 0.56 and listing[s2]:
                src = pick(s2)
                counts["rename_s1"] += 1
                os.rename(os.path.join(s2, src),
                          os.path.join(s1, "%s.b%s_%d" % (ident_of(src), me, tag)))
            elif r < 0.70:
                d = s2 if (listing[s2] and rng.random() < 0.3) else s1
                src = pick(d)
                counts["link"] += 1
                os.link(os.path.join(d, src),
                        os.path.join(s1, "%s.l%s_%d" % (ident_of(src), me, tag)))
            elif r < 0.80:
                d = s2 if (listing[s2] and rng.random() < 0.3) else s1
                src = pick(d, own=True)
                counts["unlink_own"] += 1
                os.unlink(os.path.join(d, src))
            elif r < 0.90:
                d = s2 if (listing[s2] and rng.random() < 0.3) else s1
                src = pick(d, own=False)
                counts["unlink_other"] += 1
                os.unlink(os.path.join(d, src))
            else:
                d = s2 if (listing[s2] and rng.random() < 0.3) else s1
                src = pick(d)
                counts["read"] += 1
                with open(os.path.join(d, src), "rb") as f:
                    got = f.read()
                if got != storm_content(ident_of(src)):
                    print("%s: node %d read %d bytes from %s/%s, not the content of %s: %r" %
                          (me, node, len(got), os.path.basename(d), src, ident_of(src),
                           got[:40]), file=sys.stderr)
                    bad += 1
        except LookupError:
            counts["nothing_to_pick"] += 1
        except OSError as e:
            try:
                race(e)
            except OSError:
                die("%s: operation %d: %s" % (me, i, e))
    record_inos(inos_out, inos)
    print("storm %s: %d ops: %s" % (me, ops, json.dumps(counts, sort_keys=True)))
    return 1 if bad else 0


def cmd_storm_check(root):
    """From one node: every name of s1 and s2 has the content of its ID; names of one inode share
    the ID; each inode's link count is the number of its names. Prints the manifest (name, inode,
    link count), sorted, for the comparison between nodes."""
    bad = 0
    by_ino = {}
    lines = []
    for sub in ("s1", "s2"):
        d = os.path.join(root, sub)
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode):
                print("%s/%s: not a regular file" % (sub, name), file=sys.stderr)
                bad += 1
                continue
            with open(p, "rb") as f:
                got = f.read()
            if got != storm_content(ident_of(name)):
                print("%s/%s: %d bytes, not the content of %s (%s)" %
                      (sub, name, len(got), ident_of(name), got[:40]), file=sys.stderr)
                bad += 1
            by_ino.setdefault(st.st_ino, []).append((sub + "/" + name, st.st_nlink))
            lines.append("%s/%s ino %d links %d" % (sub, name, st.st_ino, st.st_nlink))
    multi = 0
    for ino, names in sorted(by_ino.items()):
        idents = {ident_of(n.split("/", 1)[1]) for n, _ in names}
        if len(idents) != 1:
            print("inode %d has names of different files: %s" % (ino, [n for n, _ in names]),
                  file=sys.stderr)
            bad += 1
        for n, links in names:
            if links != len(names):
                print("%s (inode %d): link count %d, but %d name(s) point at it: %s" %
                      (n, ino, links, len(names), [x for x, _ in names]), file=sys.stderr)
                bad += 1
        multi += len(names) > 1
    for line in lines:
        print(line)
    print("# %d names, %d inodes, %d with several names%s" %
          (len(lines), len(by_ino), multi, "" if not bad else ", %d problems" % bad))
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------
# Phase (c): one file, concurrent appends and overlapping pwrites.

APPEND_REC = 64


def append_record(node, proc, seq):
    head = b"A %d %d %06d " % (node, proc, seq)
    body = head + b"." * (APPEND_REC - 9 - len(head))
    return body + b"%08x\n" % zlib.crc32(body)


def cmd_append(path, node, proc, count):
    """COUNT records appended through one O_APPEND descriptor, one write(2) each."""
    node, proc, count = int(node), int(proc), int(count)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for seq in range(count):
        rec = append_record(node, proc, seq)
        if os.write(fd, rec) != len(rec):
            die("append: short write")
    os.close(fd)
    print("append n%dp%d: %d records of %d bytes" % (node, proc, count, APPEND_REC))
    return 0


def cmd_append_check(path, nodes, procs, count):
    nodes, procs, count = int(nodes), int(procs), int(count)
    with open(path, "rb") as f:
        data = f.read()
    want = {(n, p, s) for n in range(1, nodes + 1) for p in range(procs) for s in range(count)}
    bad = 0
    if len(data) != len(want) * APPEND_REC:
        print("%s: %d bytes, expected %d records of %d = %d" %
              (path, len(data), len(want), APPEND_REC, len(want) * APPEND_REC), file=sys.stderr)
        bad += 1
    seen = {}
    torn = dups = 0
    for off in range(0, len(data) - len(data) % APPEND_REC, APPEND_REC):
        rec = data[off:off + APPEND_REC]
        try:
            _, n, p, s = rec[:-9].split(b" ")[:4]
            key = (int(n), int(p), int(s))
        except ValueError:
            key = None
        if key is None or rec != append_record(*key):
            torn += 1
            if torn <= 5:
                print("record at offset %d is torn or foreign: %r" % (off, rec), file=sys.stderr)
            continue
        if key in seen:
            print("record %s at offset %d already at offset %d" % (key, off, seen[key]),
                  file=sys.stderr)
            dups += 1
            continue
        seen[key] = off
    lost = want - set(seen)
    if lost:
        per = {}
        for n, p, _ in lost:
            per["n%dp%d" % (n, p)] = per.get("n%dp%d" % (n, p), 0) + 1
        print("%d record(s) lost (per writer: %s), e.g. %s" %
              (len(lost), json.dumps(per, sort_keys=True), sorted(lost)[:3]), file=sys.stderr)
    bad += torn + dups + len(lost)
    print("append check: %d bytes, %d records intact, %d torn, %d duplicated, %d lost" %
          (len(data), len(seen), torn, dups, len(lost)))
    return 1 if bad else 0


def slot_record(node, proc, seq, slot, size):
    head = b"W %d %d %05d slot %03d " % (node, proc, seq, slot)
    fill = hashlib.sha256(head).digest()
    body = head + (fill * (size // len(fill) + 1))[:size - 9 - len(head)]
    return body + b"%08x\n" % zlib.crc32(body)


def cmd_slots(path, node, proc, slots, rounds, size, seed):
    """ROUNDS passes over the SLOTS slots of SIZE bytes each, in random order, one pwrite(2) of
    a whole record each (every writer writes every slot, at the same time as the others)."""
    node, proc, slots, rounds, size, seed = map(int, (node, proc, slots, rounds, size, seed))
    rng = random.Random(seed * 1000 + node * 10 + proc)
    fd = os.open(path, os.O_WRONLY)
    seq = 0
    for _ in range(rounds):
        order = list(range(slots))
        rng.shuffle(order)
        for k in order:
            rec = slot_record(node, proc, seq, k, size)
            if os.pwrite(fd, rec, k * size) != size:
                die("slots: short pwrite")
            seq += 1
    os.close(fd)
    print("slots n%dp%d: %d pwrites of %d bytes" % (node, proc, seq, size))
    return 0


def cmd_slots_check(path, slots, size):
    slots, size = int(slots), int(size)
    with open(path, "rb") as f:
        data = f.read()
    bad = 0
    if len(data) != slots * size:
        print("%s: %d bytes, expected %d" % (path, len(data), slots * size), file=sys.stderr)
        bad += 1
    writers = []
    complete = 0
    for k in range(slots):
        rec = data[k * size:(k + 1) * size]
        try:
            f = rec.split(b" ", 6)
            n, p, s, k2 = int(f[1]), int(f[2]), int(f[3]), int(f[5])
            ok = f[0] == b"W" and k2 == k and rec == slot_record(n, p, s, k, size)
        except (ValueError, IndexError):
            ok = False
        if not ok:
            print("slot %d does not hold one complete record: %r...%r" % (k, rec[:40], rec[-12:]),
                  file=sys.stderr)
            bad += 1
        else:
            complete += 1
            writers.append("n%dp%d" % (n, p))
    print("slots check: %d bytes, %d slots of %d bytes, %d hold one complete record; last "
          "writers %s" % (len(data), slots, size, complete, " ".join(writers)))
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------
# Phase (c2): O_DIRECT writers of one file on several nodes; the file's mtime afterwards.


def cmd_dio_times(path, node, proc, secs, seed):
    """In-place O_DIRECT 4 KiB writes to random pages of PATH (which already has its blocks) for
    SECS seconds; prints the wall-clock time (ns) at which the last write started."""
    rng = random.Random("%s/%s/%s" % (seed, node, proc))
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        pages = os.fstat(fd).st_size // 4096
        if pages == 0:
            die("%s is empty" % path)
        buf = mmap.mmap(-1, 4096)
        buf[:] = (b"n%sp%s " % (node.encode(), proc.encode())).ljust(4096, b".")
        end = time.monotonic() + float(secs)
        writes = 0
        while True:
            last = time.time_ns()
            os.pwritev(fd, [buf], rng.randrange(pages) * 4096)
            writes += 1
            if time.monotonic() >= end:
                break
    finally:
        os.close(fd)
    print("dio-times node %s proc %s: %d writes, last started at %d" % (node, proc, writes, last))
    return 0


def cmd_times_check(path, not_before_ns, slack_ms):
    """PATH's mtime and ctime are at least NOT_BEFORE_NS - SLACK_MS (the direct writes' time
    granularity): the last direct write's update was made."""
    st = os.stat(path)
    floor = int(not_before_ns) - int(slack_ms) * 1000000
    for what, t in (("mtime", st.st_mtime_ns), ("ctime", st.st_ctime_ns)):
        if t < floor:
            print("%s %s is %.3f s older than the last direct write's start (slack %s ms)" %
                  (path, what, (int(not_before_ns) - t) / 1e9, slack_ms), file=sys.stderr)
            return 1
    print("%s: mtime %.3f s, ctime %.3f s after the last direct write started" %
          (path, (st.st_mtime_ns - int(not_before_ns)) / 1e9,
           (st.st_ctime_ns - int(not_before_ns)) / 1e9))
    return 0


# ------------------------------------------------------------------------------------------------
# Phase (d): a random mix (fsstress-like).

EXPECTED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR,
            errno.EINVAL}


def cmd_mix(root, node, proc, ops, seed, inos_out=""):
    """OPS random operations in ROOT/n<NODE> (this node's tree) and ROOT/shared (everyone's):
    create, mkdir, write, truncate, rename, link, unlink, rmdir, chmod, utime, read. The names
    come from a small set (dirs d0-d3, files f0-f5, up to 2 levels deep), so the processes and
    nodes keep colliding; errors a race explains (ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR,
    EINVAL: a directory moved under itself) are counted, any other fails. INOS_OUT: as for
    cmd_storm (files and directories created)."""
    node, proc, ops, seed = map(int, (node, proc, ops, seed))
    rng = random.Random(seed * 1000 + node * 10 + proc)
    trees = [os.path.join(root, "n%d" % node), os.path.join(root, "shared")]
    counts = {}
    errs = {}
    inos = []

    def dirpath(tree, min_depth=1):
        # Never the tree itself (depth 0) for rmdir/rename/chmod/utime: the trees stay put.
        depth = rng.choices((0, 1, 2), weights=(5, 4, 1))[0] if min_depth == 0 else \
            rng.choices((1, 2), weights=(3, 1))[0]
        parts = [rng.choice(("d0", "d1", "d2", "d3")) for _ in range(depth)]
        return os.path.join(tree, *parts)

    def filepath(tree):
        return os.path.join(dirpath(tree, 0), rng.choice(["f%d" % i for i in range(6)]))

    for i in range(ops):
        tree = trees[0] if rng.random() < 0.6 else trees[1]
        op = rng.choice(("create", "create", "create", "mkdir", "mkdir", "write", "write",
                         "truncate", "rename", "rename", "link", "unlink", "rmdir", "chmod",
                         "utime", "read"))
        counts[op] = counts.get(op, 0) + 1
        try:
            if op == "create":
                fd = os.open(filepath(tree), os.O_CREAT | os.O_WRONLY, 0o644)
                os.write(fd, os.urandom(rng.randrange(1, 9000)))
                inos.append(os.fstat(fd).st_ino)
                os.close(fd)
            elif op == "mkdir":
                p = os.path.join(dirpath(tree, 0), rng.choice(("d0", "d1", "d2", "d3")))
                os.mkdir(p)
                try:
                    inos.append(os.lstat(p).st_ino)
                except OSError:
                    pass  # renamed or removed by someone else meanwhile
            elif op == "write":
                fd = os.open(filepath(tree), os.O_WRONLY)
                os.pwrite(fd, os.urandom(rng.randrange(1, 8192)), rng.randrange(0, 65536))
                os.close(fd)
            elif op == "truncate":
                os.truncate(filepath(tree), rng.randrange(0, 70000))
            elif op == "rename":
                other = trees[rng.randrange(2)]
                if rng.random() < 0.7:
                    os.rename(filepath(tree), filepath(other))
                else:
                    os.rename(dirpath(tree), dirpath(other))
            elif op == "link":
                os.link(filepath(tree), filepath(trees[rng.randrange(2)]))
            elif op == "unlink":
                os.unlink(filepath(tree))
            elif op == "rmdir":
                os.rmdir(dirpath(tree))
            elif op == "chmod":
                os.chmod(rng.choice((filepath, dirpath))(tree), rng.choice((0o600, 0o644, 0o755,
                                                                            0o700, 0o640)))
            elif op == "utime":
                t = rng.randrange(10**9, 2 * 10**9)
                os.utime(rng.choice((filepath, dirpath))(tree), (t, t))
            else:
                with open(filepath(tree), "rb") as f:
                    f.read()
        except OSError as e:
            if e.errno not in EXPECTED:
                die("mix n%dp%d: operation %d (%s): %s" % (node, proc, i, op, e))
            name = errno.errorcode.get(e.errno, str(e.errno))
            errs[name] = errs.get(name, 0) + 1
    record_inos(inos_out, inos)
    print("mix n%dp%d: %d ops %s; expected errors %s" %
          (node, proc, ops, json.dumps(counts, sort_keys=True), json.dumps(errs, sort_keys=True)))
    return 0


def cmd_manifest(root):
    """Every object under ROOT: path, type, mode, link count, size, inode, and for files the
    SHA-256 of the content (sorted). Equal manifests from every node = one coherent tree."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
                digest = "-"
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()[:16]
            except OSError as e:
                die("manifest: %s: %s" % (p, e))
            lines.append("%s %s %o links %d size %d ino %d sha %s" %
                         (os.path.relpath(p, root), "d" if stat.S_ISDIR(st.st_mode) else "f",
                          stat.S_IMODE(st.st_mode), st.st_nlink, st.st_size, st.st_ino, digest))
    for line in sorted(lines):
        print(line)
    return 0


def main(argv):
    if len(argv) < 2:
        die("usage: cluster_storm.py SUBCOMMAND ARGS...")
    fn = globals().get("cmd_" + argv[1].replace("-", "_"))
    if fn is None:
        die("unknown subcommand " + argv[1])
    return fn(*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
