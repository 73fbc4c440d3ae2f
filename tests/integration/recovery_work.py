#!/usr/bin/env python3
"""recovery_work.py: workloads with durability logs for the node-failure tests
(tests/integration/cluster_recovery.sh), and their oracle.

Every worker writes a log OUTSIDE the volume (a local file, fsync'd): before an operation an
intent line "I <name>", after the operation and its fsync a done line "D <name> <sha256|-> <seq>".
Whatever a done line records was fsync'd, so it must survive any node's death. A name whose last
line is an intent was in flight when its node died: its content may be old, new or torn, but the
file must still be readable (or absent if the operation was a create).

  durable ROOT TAG LOG STOPFILE MAXOPS SEED
      files in ROOT/TAG: create + write + fsync, overwrite + fsync, rename, unlink (metadata and
      data), until STOPFILE exists or MAXOPS operations were done. Data carries a per-write
      sequence stamp (TAG and seq in every 4 KiB block).
  mmapw PATH TAG LOG STOPFILE MAXOPS
      a 64 KiB file mapped MAP_SHARED: each round writes a stamp into one 4 KiB page through the
      mapping, msync(MS_SYNC) + fsync, then logs the whole file's digest.
  verify ROOT LOG... : every done state is present (exact content), for logs of nodes that
      finished cleanly and of the crashed one (the last in-flight name of a crashed node's log is
      excused). Prints a summary; exit 1 on any loss.
  stamps ROOT TAG AFTER [MMAP_AFTER] : fails if any file of ROOT/TAG holds a stamp with seq > AFTER (a write
      that landed after the node was fenced).
  digest ROOT TAG : 'name sha256' of every file of ROOT/TAG (and ROOT/TAG.mmap), sorted.
  batch DIR N MANIFEST : N files in DIR, one fsync of DIR, then MANIFEST of what must survive.
  manifest_check DIR MANIFEST : every file MANIFEST lists is in DIR, exact.
"""
import hashlib
import mmap
import os
import random
import sys


def log_line(f, line):
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())


def sha(data):
    return hashlib.sha256(data).hexdigest()


def stamped(tag, seq, size, rng):
    """size bytes; every 4 KiB block starts with 'STAMP <tag> <seq>\\n'."""
    out = bytearray()
    head = ("STAMP %s %d\n" % (tag, seq)).encode()
    while len(out) < size:
        block = head + rng.randbytes(4096 - len(head))
        out += block
    return bytes(out[:size])


def fsync_path(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_durable(root, tag, logpath, stop, maxops, seed, keep_going="0"):
    """KEEP_GOING=1: an operation that fails (EIO once the node is fenced) is logged as
    'E <seq> <errno>' and the worker goes on (the link-cut test counts what it tried)."""
    maxops, seed, keep_going = int(maxops), int(seed), keep_going == "1"
    errors = 0
    rng = random.Random(seed)
    d = os.path.join(root, tag)
    os.makedirs(d, exist_ok=True)
    fsync_path(root)
    live = []  # names that exist (per our log)
    seq = 0
    with open(logpath, "a") as lg:
        for i in range(maxops):
            if os.path.exists(stop):
                break
            seq += 1
            try:
                one_op(lg, rng, d, tag, seq, live)
            except OSError as e:
                if not keep_going:
                    raise
                errors += 1
                log_line(lg, "E %d %d" % (seq, e.errno or 0))
    print("durable %s: %d operations, %d files, %d failed" % (tag, seq, len(live), errors))
    return 0


def one_op(lg, rng, d, tag, seq, live):
    """One random operation of cmd_durable, logged (intent, then done)."""
    op = rng.choice(("create", "create", "overwrite", "overwrite", "rename", "unlink"))
    if op in ("overwrite", "rename", "unlink") and not live:
        op = "create"
    if op == "create":
        name = "f%d" % seq
        p = os.path.join(d, name)
        data = stamped(tag, seq, rng.randrange(1, 48 * 1024), rng)
        log_line(lg, "I %s %d" % (name, seq))
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fsync_path(d)
        live.append(name)
        log_line(lg, "D %s %s %d" % (name, sha(data), seq))
    elif op == "overwrite":
        name = rng.choice(live)
        p = os.path.join(d, name)
        data = stamped(tag, seq, rng.randrange(1, 48 * 1024), rng)
        log_line(lg, "I %s %d" % (name, seq))
        fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        log_line(lg, "D %s %s %d" % (name, sha(data), seq))
    elif op == "rename":
        name = rng.choice(live)
        new = "r%d" % seq
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        log_line(lg, "I %s %d" % (name, seq))
        log_line(lg, "I %s %d" % (new, seq))
        os.rename(os.path.join(d, name), os.path.join(d, new))
        fsync_path(d)
        live.remove(name)
        live.append(new)
        log_line(lg, "D %s - %d" % (name, seq))
        log_line(lg, "D %s %s %d" % (new, sha(data), seq))
    else:
        name = rng.choice(live)
        log_line(lg, "I %s %d" % (name, seq))
        os.unlink(os.path.join(d, name))
        fsync_path(d)
        live.remove(name)
        log_line(lg, "D %s - %d" % (name, seq))


def cmd_mmapw(path, tag, logpath, stop, maxops):
    maxops = int(maxops)
    size = 64 * 1024
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.ftruncate(fd, size)
    os.fsync(fd)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    name = os.path.basename(path)
    seq = 0
    with open(logpath, "a") as lg:
        for i in range(maxops):
            if os.path.exists(stop):
                break
            seq += 1
            page = (seq * 7) % (size // 4096)
            stamp = ("STAMP %s %d\n" % (tag, seq)).encode()
            log_line(lg, "I %s %d" % (name, seq))
            m[page * 4096:page * 4096 + len(stamp)] = stamp
            m.flush()
            os.fsync(fd)
            log_line(lg, "D %s %s %d" % (name, sha(m[:]), seq))
    m.close()
    os.close(fd)
    print("mmapw %s: %d rounds" % (tag, seq))
    return 0


def parse_log(path):
    """name -> (last done sha or '-' for absent or None, in_flight)"""
    state = {}
    with open(path) as f:
        lines = f.read().split("\n")
    for line in lines:
        if not line:
            continue
        parts = line.split()
        if parts[0] == "I" and len(parts) in (2, 3):
            prev = state.get(parts[1], (None, False))[0]
            state[parts[1]] = (prev, True)
        elif parts[0] == "D" and len(parts) == 4:
            state[parts[1]] = (parts[2], False)
        # A torn last line (the node died while logging) is ignored: its operation is in flight.
    return state


def cmd_verify(root, *logs):
    bad = 0
    checked = 0
    excused = 0
    for lp in logs:
        # LOG files are named <tag>.log (durable, in ROOT/<tag>) or <tag>.mmap.log (ROOT/<tag>.mmap)
        base = os.path.basename(lp)
        if base.endswith(".mmap.log"):
            d = root
        else:
            d = os.path.join(root, base[:-len(".log")])
        for name, (want, in_flight) in sorted(parse_log(lp).items()):
            p = os.path.join(d, name)
            if in_flight:
                excused += 1
                if os.path.exists(p):
                    with open(p, "rb") as f:
                        f.read()  # must be readable
                continue
            checked += 1
            if want == "-":
                if os.path.exists(p):
                    print("LOST UNLINK/RENAME: %s still exists (log %s)" % (p, lp))
                    bad += 1
                continue
            try:
                with open(p, "rb") as f:
                    got = sha(f.read())
            except OSError as e:
                print("LOST: %s: %s (log %s)" % (p, e, lp))
                bad += 1
                continue
            if got != want:
                print("WRONG: %s has sha %s, fsync'd %s (log %s)" % (p, got[:12], want[:12], lp))
                bad += 1
    print("verify: %d fsync'd states checked, %d in flight excused, %d lost or wrong" %
          (checked, excused, bad))
    return 1 if bad else 0


def cmd_stamps(root, tag, after, mmap_after=None):
    """MMAP_AFTER: the bound for ROOT/TAG.mmap (the mmap writer numbers its rounds itself)."""
    after = int(after)
    mmap_after = after if mmap_after is None else int(mmap_after)
    d = os.path.join(root, tag)
    late = 0
    prefix = ("STAMP %s " % tag).encode()
    paths = [os.path.join(d, n) for n in os.listdir(d)] if os.path.isdir(d) else []
    mm = os.path.join(root, tag + ".mmap")
    if os.path.exists(mm):
        paths.append(mm)
    for p in paths:
        bound = mmap_after if p == mm else after
        with open(p, "rb") as f:
            data = f.read()
        for off in range(0, len(data), 4096):
            blk = data[off:off + 64]
            if blk.startswith(prefix):
                seq = int(blk[len(prefix):blk.index(b"\n")])
                if seq > bound:
                    print("LATE WRITE: %s offset %d has %s seq %d > %d" % (p, off, tag, seq, bound))
                    late += 1
    print("stamps %s: %d late writes (after seq %d)" % (tag, late, after))
    return 1 if late else 0


def cmd_digest(root, tag):
    """'name sha256' of every file of ROOT/TAG and of ROOT/TAG.mmap, sorted."""
    d = os.path.join(root, tag)
    paths = sorted(os.path.join(d, n) for n in os.listdir(d)) if os.path.isdir(d) else []
    mm = os.path.join(root, tag + ".mmap")
    if os.path.exists(mm):
        paths.append(mm)
    for p in paths:
        with open(p, "rb") as f:
            print("%s %s" % (os.path.relpath(p, root), sha(f.read())))
    return 0


def cmd_batch(d, n, manifest):
    """N files in D, then one fsync of D; MANIFEST ('name sha256' lines) is written once the sync
    returned: everything it lists must survive."""
    n = int(n)
    os.makedirs(d)
    out = []
    for i in range(n):
        data = (("%s/f%d " % (d, i)) * 200).encode()[:1000 + (i * 37) % 3000]
        with open(os.path.join(d, "f%d" % i), "wb") as f:
            f.write(data)
        out.append("f%d %s" % (i, sha(data)))
    # fsync of the directory commits the log (sync(2) does not reach a FUSE daemon: the kernel
    # sends FUSE_SYNCFS to virtiofs only).
    fsync_path(d)
    with open(manifest, "w") as f:
        f.write("\n".join(out) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print("batch: %d files synced" % n)
    return 0


def cmd_manifest_check(d, manifest):
    bad = 0
    words = open(manifest).read().split()
    for name, want in zip(words[0::2], words[1::2]):
        try:
            with open(os.path.join(d, name), "rb") as f:
                got = sha(f.read())
        except OSError as e:
            print("LOST %s: %s" % (name, e))
            bad += 1
            continue
        if got != want:
            print("WRONG %s" % name)
            bad += 1
    print("%d synced files checked, %d lost or wrong" % (len(words) // 2, bad))
    return 1 if bad or not words else 0


def main(argv):
    cmds = {"durable": cmd_durable, "mmapw": cmd_mmapw, "verify": cmd_verify,
            "stamps": cmd_stamps, "digest": cmd_digest, "batch": cmd_batch,
            "manifest_check": cmd_manifest_check}
    if len(argv) < 2 or argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    return cmds[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
