#!/usr/bin/env python3
"""Verified concurrent load for fs_glock_demote.sh (glock demotes while data moves).

  fs_glock_load.py run MNT SECONDS STATE    # writers, readers and directory churn for SECONDS
  fs_glock_load.py verify MNT STATE         # every file against what the writers acknowledged

Files on MNT: A gets buffered writes + fsync, B O_DIRECT writes each read back with O_DIRECT,
C stores through a MAP_SHARED mapping + msync (each read back through the mapping). Each file is
a ring of SLOTS slots of SLOT bytes; write k goes to slot k % SLOTS as pass k // SLOTS, and every
4 KiB page describes itself (magic, file, slot, pass, page, and a body derived from those), so
any page read anywhere says what it is. A writer publishes how many writes completed (the
acknowledged ones) after each. Readers check every page against that: once a slot has an
acknowledged write, its pages must hold that pass or a later one, in the right place, intact.
A read racing a write of the same page may see it half copied (the kernel copies cached pages
without the page lock; an mmap store can stop halfway for a page fault), so a bad slot is
re-read for up to RETRY_SECS before it counts; stale data (an older pass than acknowledged, or
zeros) and misplaced pages fail at once. dir/ gets creates, writes, hard links, renames,
unlinks and mkdir/rmdir, each file's content checked when read back.

STATE is a directory outside MNT; `run` writes STATE/run.json (acknowledged writes, the
directory's expected names and contents, counters), which `verify` uses. Exit status: 0 good,
1 verification failure, 2 a worker did not finish (a deadlock?).
"""
import ctypes
import hashlib
import json
import mmap
import multiprocessing as mp
import os
import random
import signal
import struct
import sys
import time
import traceback

PAGE = 4096
SLOT = 4 * PAGE
SLOTS = 256
SIZE = SLOT * SLOTS
MAGIC = b"UGFS2GLK"
HDR = struct.Struct("<8sIIII")  # magic, file id, slot, pass, page
FILES = {"A": 1, "B": 2, "C": 3}
# A slot being rewritten can read torn for as long as its writer is held up in the middle (an
# mmap store waiting for a page fault while a demote unmapped the page); stale data stays.
RETRY_SECS = 10


def die_with_parent():
    """Workers die with the run process (kill -9 of the test included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def page_bytes(fid, slot, pas, page):
    hdr = HDR.pack(MAGIC, fid, slot, pas, page)
    body = hashlib.blake2b(hdr, digest_size=64).digest()
    return (hdr + body * (PAGE // 64))[:PAGE]


def slot_bytes(fid, slot, pas):
    return b"".join(page_bytes(fid, slot, pas, p) for p in range(SLOT // PAGE))


def acked_pass(acked, slot):
    """The pass of the last acknowledged write of `slot` after `acked` writes (None: none)."""
    if acked <= slot:
        return None
    return (acked - 1 - slot) // SLOTS


def expected_file(fid, acked):
    out = bytearray(SIZE)
    for s in range(SLOTS):
        p = acked_pass(acked, s)
        if p is not None:
            out[s * SLOT:(s + 1) * SLOT] = slot_bytes(fid, s, p)
    return bytes(out)


def mid_store(pg, fid, slot, page, min_pass):
    """Whether `pg` is page `page` of `slot` caught in the middle of a store into a mapping: each
    8-byte word is the word of the acknowledged version (zeros if none) or of a later pass. A
    large memcpy (glibc's vector copy) stores its first and last vectors after the loop, so the
    header is the last part of a page to change."""
    first = 0 if min_pass is None else min_pass
    versions = [page_bytes(fid, slot, q, page) for q in range(first, first + 3)]
    if min_pass is None:
        versions.append(bytes(PAGE))
    for off in range(0, PAGE, 8):
        word = pg[off:off + 8]
        if not any(v[off:off + 8] == word for v in versions):
            return False
    return True


def check_slot(fid, slot, data, min_pass):
    """(torn, why): why is None if `data` (one slot) is valid for a slot acknowledged at
    `min_pass`; torn says whether what is wrong can be a read racing a rewrite of the slot (a
    page whose header and body disagree) rather than lost, stale or misplaced data."""
    torn = None
    for p in range(SLOT // PAGE):
        pg = bytes(data[p * PAGE:(p + 1) * PAGE])
        if len(pg) < PAGE:
            return False, "page %d short (%d bytes)" % (p, len(pg))
        if pg.count(0) == PAGE:
            if min_pass is not None:
                return False, "page %d reads zeros; pass %d was acknowledged" % (p, min_pass)
            continue
        magic, f, s, pas, pno = HDR.unpack_from(pg)
        if (magic != MAGIC or (f, s, pno) != (fid, slot, p)) and mid_store(pg, fid, slot, p,
                                                                         min_pass):
            torn = torn or "page %d: a store in progress (header not yet written)" % p
            continue
        if magic != MAGIC or (f, s, pno) != (fid, slot, p):
            return False, "page %d is not ours or misplaced (magic %r file %d slot %d page %d)" % (
                p, magic, f, s, pno)
        if min_pass is not None and pas < min_pass:
            return False, "page %d holds pass %d; pass %d was acknowledged (stale data)" % (
                p, pas, min_pass)
        if pg != page_bytes(fid, slot, pas, p):
            torn = torn or "page %d of pass %d: header and body disagree" % (p, pas)
    return torn is not None, torn


class Shared:
    def __init__(self):
        self.acked = {k: mp.Value("q", 0) for k in FILES}
        self.counts = {k: mp.Value("q", 0) for k in
                       ("reads_A", "reads_B", "reads_B_direct", "reads_C", "retries", "dir_ops")}
        self.stop = mp.Event()
        self.errors = mp.Queue()


def bump(sh, key, n=1):
    with sh.counts[key].get_lock():
        sh.counts[key].value += n


def fail(sh, what):
    sh.errors.put(what)
    sh.stop.set()


def aligned(n):
    return mmap.mmap(-1, n)  # anonymous mappings are page aligned (O_DIRECT buffers)


def writer_a(sh, path):
    die_with_parent()
    fd = os.open(path, os.O_RDWR)
    k = 0
    while not sh.stop.is_set():
        s, p = k % SLOTS, k // SLOTS
        os.pwrite(fd, slot_bytes(FILES["A"], s, p), s * SLOT)
        os.fsync(fd)
        k += 1
        sh.acked["A"].value = k
    os.close(fd)


def writer_b(sh, path):
    die_with_parent()
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    wbuf, rbuf = aligned(SLOT), aligned(SLOT)
    k = 0
    while not sh.stop.is_set():
        s, p = k % SLOTS, k // SLOTS
        data = slot_bytes(FILES["B"], s, p)
        wbuf[:] = data
        n = os.pwrite(fd, wbuf, s * SLOT)
        if n != SLOT:
            return fail(sh, "B: O_DIRECT write of slot %d returned %d" % (s, n))
        k += 1
        sh.acked["B"].value = k
        n = os.preadv(fd, [rbuf], s * SLOT)
        if n != SLOT or rbuf[:] != data:
            return fail(sh, "B: O_DIRECT read-back of slot %d pass %d differs (%d bytes)" % (s, p, n))
    os.close(fd)


def writer_c(sh, path):
    die_with_parent()
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    k = 0
    while not sh.stop.is_set():
        s, p = k % SLOTS, k // SLOTS
        data = slot_bytes(FILES["C"], s, p)
        m[s * SLOT:(s + 1) * SLOT] = data
        m.flush(s * SLOT, SLOT)  # msync(MS_SYNC)
        k += 1
        sh.acked["C"].value = k
        if m[s * SLOT:(s + 1) * SLOT] != data:
            return fail(sh, "C: the mapping does not read back slot %d pass %d" % (s, p))
    m.close()
    os.close(fd)


def read_and_check(sh, name, fd, direct):
    """One pass over the file; returns an error text or None. A torn slot is re-read (each time
    against the writes acknowledged before that read) until it is good or RETRY_SECS passed;
    anything else wrong fails at once."""
    fid = FILES[name]
    buf = aligned(SLOT) if direct else None
    for s in range(SLOTS):
        give_up = None
        while True:
            acked = sh.acked[name].value  # writes acknowledged before this read
            if direct:
                n = os.preadv(fd, [buf], s * SLOT)
                data = buf[:n]
            else:
                data = os.pread(fd, SLOT, s * SLOT)
            torn, why = check_slot(fid, s, data, acked_pass(acked, s))
            if why is None:
                break
            if not torn:
                return "%s%s slot %d (%d writes acknowledged): %s" % (
                    name, " (O_DIRECT read)" if direct else "", s, acked, why)
            bump(sh, "retries")
            now = time.monotonic()
            give_up = give_up or now + RETRY_SECS
            if now >= give_up:
                return "%s%s slot %d (%d writes acknowledged), for %d s: %s" % (
                    name, " (O_DIRECT read)" if direct else "", s, acked, RETRY_SECS, why)
            time.sleep(0.001)
    return None


def reader(sh, mnt, names):
    die_with_parent()
    fds = {n: os.open(os.path.join(mnt, n), os.O_RDONLY) for n in names}
    dfd = os.open(os.path.join(mnt, "B"), os.O_RDONLY | os.O_DIRECT) if "B" in names else None
    while not sh.stop.is_set():
        for n in names:
            why = read_and_check(sh, n, fds[n], False)
            if why:
                return fail(sh, "reader: " + why)
            bump(sh, "reads_" + n)
        if dfd is not None:
            why = read_and_check(sh, "B", dfd, True)
            if why:
                return fail(sh, "reader: " + why)
            bump(sh, "reads_B_direct")


def dir_churn(sh, mnt, out_path):
    die_with_parent()
    d = os.path.join(mnt, "dir")
    rnd = random.Random(4711)
    files = {}  # name -> content
    i = 0

    def content(n):
        return ("%s\n" % n) * (1 + n % 50)

    def check(name):
        with open(os.path.join(d, name)) as f:
            got = f.read()
        if got != files[name]:
            raise RuntimeError("dir/%s reads %r, expected %r" % (name, got[:40], files[name][:40]))

    try:
        while not sh.stop.is_set():
            i += 1
            name = "f%d" % i
            with open(os.path.join(d, name), "w") as f:
                f.write(content(i))
            files[name] = content(i)
            if i % 7 == 0:
                os.link(os.path.join(d, name), os.path.join(d, "h%d" % i))
                files["h%d" % i] = files[name]
            if i % 3 == 0:
                os.rename(os.path.join(d, name), os.path.join(d, "r%d" % i))
                files["r%d" % i] = files.pop(name)
            if i % 2 == 0 and len(files) > 20:
                victim = rnd.choice(sorted(files))
                os.unlink(os.path.join(d, victim))
                del files[victim]
            if i % 10 == 0:
                sub = os.path.join(d, "d%d" % i)
                os.mkdir(sub)
                with open(os.path.join(sub, "x"), "w") as f:
                    f.write("x")
                os.unlink(os.path.join(sub, "x"))
                os.rmdir(sub)
            check(rnd.choice(sorted(files)))
            if i % 25 == 0:
                listed = sorted(os.listdir(d))
                if listed != sorted(files):
                    raise RuntimeError("dir/ lists %d names, expected %d (first difference: %s)" % (
                        len(listed), len(files),
                        sorted(set(listed) ^ set(files))[:5]))
            sh.counts["dir_ops"].value = i
    except Exception as e:  # noqa: BLE001 - any failure is the test's failure
        fail(sh, "dir churn at step %d: %s" % (i, e))
    with open(out_path, "w") as f:
        json.dump(files, f)


def cmd_run(mnt, seconds, state):
    seconds = float(seconds)
    os.makedirs(state, exist_ok=True)
    for n in FILES:
        fd = os.open(os.path.join(mnt, n), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fd, SIZE)
        os.close(fd)
    os.mkdir(os.path.join(mnt, "dir"))
    sh = Shared()
    dir_out = os.path.join(state, "dir.json")
    workers = {
        "writer A (buffered + fsync)": mp.Process(target=writer_a, args=(sh, os.path.join(mnt, "A"))),
        "writer B (O_DIRECT)": mp.Process(target=writer_b, args=(sh, os.path.join(mnt, "B"))),
        "writer C (mmap + msync)": mp.Process(target=writer_c, args=(sh, os.path.join(mnt, "C"))),
        "reader A B C": mp.Process(target=reader, args=(sh, mnt, ["A", "B", "C"])),
        "reader C A": mp.Process(target=reader, args=(sh, mnt, ["C", "A"])),
        "dir churn": mp.Process(target=dir_churn, args=(sh, mnt, dir_out)),
    }
    for w in workers.values():
        w.start()
    sh.stop.wait(seconds)
    sh.stop.set()
    stuck = []
    deadline = time.monotonic() + 120  # one blocked request is a deadlock, not slowness
    for name, w in workers.items():
        w.join(max(0.0, deadline - time.monotonic()))
        if w.is_alive():
            stuck.append("%s (pid %d)" % (name, w.pid))
        elif w.exitcode != 0:
            sh.errors.put("%s exited with %d" % (name, w.exitcode))
    errors = []
    while not sh.errors.empty():
        errors.append(sh.errors.get())
    counts = {k: v.value for k, v in sh.counts.items()}
    acked = {k: v.value for k, v in sh.acked.items()}
    result = {"acked": acked, "counts": counts}
    if os.path.exists(dir_out):
        with open(dir_out) as f:
            result["dir"] = json.load(f)
    with open(os.path.join(state, "run.json"), "w") as f:
        json.dump(result, f)
    print("load: acknowledged writes %s; %s" % (
        " ".join("%s=%d" % kv for kv in sorted(acked.items())),
        " ".join("%s=%d" % kv for kv in sorted(counts.items()))))
    for e in errors:
        print("load: FAILED: " + e)
    if stuck:
        print("load: STUCK (not finished 120 s after the end): " + ", ".join(stuck))
        for w in workers.values():
            if w.is_alive():
                w.kill()
        sys.exit(2)
    if errors:
        sys.exit(1)
    idle = [k for k in ("reads_A", "reads_B", "reads_C", "dir_ops") if counts[k] == 0]
    idle += ["writes %s" % k for k, v in acked.items() if v == 0]
    if idle:
        print("load: FAILED: no progress at all: " + ", ".join(idle))
        sys.exit(1)


def cmd_verify(mnt, state):
    with open(os.path.join(state, "run.json")) as f:
        run = json.load(f)
    bad = []
    for name, fid in sorted(FILES.items()):
        acked = run["acked"][name]
        want = hashlib.sha256(expected_file(fid, acked)).hexdigest()
        path = os.path.join(mnt, name)
        with open(path, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != want:
            bad.append("%s: sha256 %s, expected %s (%d writes acknowledged)" % (name, got, want, acked))
        if name == "B":
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            buf = aligned(SIZE)
            n = os.preadv(fd, [buf], 0)
            os.close(fd)
            got = hashlib.sha256(buf[:n]).hexdigest()
            if got != want:
                bad.append("B (O_DIRECT read): sha256 %s, expected %s" % (got, want))
        print("verify: %s %d writes acknowledged, sha256 %s" % (name, acked, want[:16]))
    files = run.get("dir")
    if files is None:
        bad.append("dir: the churn recorded no final state")
    else:
        d = os.path.join(mnt, "dir")
        listed = sorted(os.listdir(d))
        if listed != sorted(files):
            bad.append("dir: %d names, expected %d (differences: %s)" % (
                len(listed), len(files), sorted(set(listed) ^ set(files))[:5]))
        for name, content in files.items():
            try:
                with open(os.path.join(d, name)) as f:
                    if f.read() != content:
                        bad.append("dir/%s: wrong content" % name)
            except OSError as e:
                bad.append("dir/%s: %s" % (name, e))
        print("verify: dir %d names" % len(files))
    for b in bad:
        print("verify: FAILED: " + b)
    sys.exit(1 if bad else 0)


def main():
    cmds = {"run": (cmd_run, 3), "verify": (cmd_verify, 2)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds or len(sys.argv) != 2 + cmds[sys.argv[1]][1]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        cmds[sys.argv[1]][0](*sys.argv[2:])
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
