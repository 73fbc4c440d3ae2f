#!/usr/bin/env python3
"""Small helpers for the fs_*.sh integration tests: things that need many syscalls from one
process (100k creates), or syscalls the shell has no tool for (renameat2, O_DIRECT with aligned
buffers, MAP_SHARED writes, SEEK_DATA/SEEK_HOLE). Each subcommand exits non-zero with a message on
failure."""
import ctypes
import errno
import hashlib
import mmap
import multiprocessing
import os
import random
import signal
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def die(msg):
    print("fs_helper: " + msg, file=sys.stderr)
    sys.exit(1)


def pattern(seed, size):
    """Deterministic pseudo-random bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def renameat2(old, new, flags):
    rc = libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags)
    return 0 if rc == 0 else ctypes.get_errno()


def cmd_create(d, n, size="0"):
    n, size = int(n), int(size)
    data = b"x" * size
    for i in range(n):
        fd = os.open(os.path.join(d, "f%06d" % i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        if size:
            os.write(fd, data)
        os.close(fd)


def cmd_count(d):
    print(sum(1 for _ in os.scandir(d)))


def cmd_stat_some(d, n, step):
    for i in range(0, int(n), int(step)):
        st = os.stat(os.path.join(d, "f%06d" % i))
        if not (st.st_mode & 0o100000):
            die("f%06d is not a regular file" % i)


def cmd_delete(d, n):
    for i in range(int(n)):
        os.unlink(os.path.join(d, "f%06d" % i))


def cmd_renameat2(old, new, flag):
    flags = {"noreplace": RENAME_NOREPLACE, "exchange": RENAME_EXCHANGE, "none": 0}[flag]
    print(errno.errorcode.get(renameat2(old, new, flags), "OK") if True else "")


def storm_worker(args):
    root, ndirs, nfiles, iters, seed = args
    rnd = random.Random(seed)
    stats = {"ok": 0, "enoent": 0, "eexist": 0}
    for _ in range(iters):
        a = os.path.join(root, "d%d" % rnd.randrange(ndirs), "f%d" % rnd.randrange(nfiles))
        b = os.path.join(root, "d%d" % rnd.randrange(ndirs), "f%d" % rnd.randrange(nfiles))
        if a == b:
            continue
        kind = rnd.randrange(3)
        if kind == 0:
            e = renameat2(a, b, RENAME_NOREPLACE)
        elif kind == 1:
            e = renameat2(a, b, RENAME_EXCHANGE)
        else:
            # Plain rename (no flags) into a name only this worker uses (it never exists at this
            # point), then back with NOREPLACE to any free name: files are never destroyed.
            tmp = os.path.join(root, "d%d" % rnd.randrange(ndirs), "t%d" % seed)
            e = renameat2(a, tmp, 0)
            if e == 0:
                for _attempt in range(10000):
                    c = os.path.join(root, "d%d" % rnd.randrange(ndirs), "f%d" % rnd.randrange(nfiles))
                    e2 = renameat2(tmp, c, RENAME_NOREPLACE)
                    if e2 == 0:
                        break
                    if e2 != errno.EEXIST:
                        return "rename back %s -> %s: %s" % (tmp, c, os.strerror(e2))
                else:
                    return "no free name to move %s back to" % tmp
        if e == 0:
            stats["ok"] += 1
        elif e == errno.ENOENT:
            stats["enoent"] += 1
        elif e == errno.EEXIST:
            stats["eexist"] += 1
        else:
            return "rename %s -> %s kind %d: %s" % (a, b, kind, os.strerror(e))
    return stats


def cmd_rename_storm(root, ndirs, nfiles, nproc, iters):
    ndirs, nfiles, nproc, iters = int(ndirs), int(nfiles), int(nproc), int(iters)
    # Each file holds its own identity, so the final check sees every file exactly once.
    for d in range(ndirs):
        os.makedirs(os.path.join(root, "d%d" % d), exist_ok=True)
    total = 0
    for d in range(ndirs):
        for f in range(nfiles):
            if (d + f) % 2 == 0:  # half the names exist, so NOREPLACE both fails and succeeds
                with open(os.path.join(root, "d%d" % d, "f%d" % f), "w") as fh:
                    fh.write("id-%d-%d\n" % (d, f))
                total += 1
    with multiprocessing.Pool(nproc) as pool:
        results = pool.map(storm_worker, [(root, ndirs, nfiles, iters, s) for s in range(nproc)])
    agg = {"ok": 0, "enoent": 0, "eexist": 0}
    for r in results:
        if isinstance(r, str):
            die(r)
        for k in agg:
            agg[k] += r[k]
    ids = []
    for d in range(ndirs):
        for name in os.listdir(os.path.join(root, "d%d" % d)):
            with open(os.path.join(root, "d%d" % d, name)) as fh:
                ids.append(fh.read())
    if len(ids) != total or len(set(ids)) != total:
        die("after the storm: %d files, %d distinct ids, expected %d" % (len(ids), len(set(ids)), total))
    print("renames ok=%d enoent=%d eexist=%d files=%d" % (agg["ok"], agg["enoent"], agg["eexist"], total))


SPARSE_OFFSETS = [0, 4096 * 3, 1 << 20, (5 << 20) + 123, 100 << 20, (512 << 20) + 7, 1 << 30,
                  (1536 << 20) + 4095, (2 << 30) - 65536]


def cmd_sparse_write(path):
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    for i, off in enumerate(SPARSE_OFFSETS):
        os.pwrite(fd, pattern(i, 65536 if i % 2 else 5000), off)
    os.ftruncate(fd, 2 << 30)
    os.close(fd)


def cmd_sparse_verify(path):
    fd = os.open(path, os.O_RDONLY)
    if os.fstat(fd).st_size != 2 << 30:
        die("size %d" % os.fstat(fd).st_size)
    for i, off in enumerate(SPARSE_OFFSETS):
        want = pattern(i, 65536 if i % 2 else 5000)
        got = os.pread(fd, len(want), off)
        if got != want:
            die("data mismatch at offset %d" % off)
        # Bytes just past each extent (if not overwritten by the next one) are a hole: zeros.
        gap = os.pread(fd, 512, off + len(want))
        nxt = [o for o in SPARSE_OFFSETS if o > off]
        if (not nxt or nxt[0] > off + len(want) + 512) and off + len(want) + 512 <= 2 << 30:
            if gap != b"\0" * len(gap):
                die("hole after offset %d is not zero" % off)
    # A hole in the middle.
    if os.pread(fd, 4096, 300 << 20) != b"\0" * 4096:
        die("hole at 300 MiB not zero")
    os.close(fd)


def cmd_odirect(path, nblocks):
    nblocks = int(nblocks)
    bs = 1 << 20
    buf = mmap.mmap(-1, bs)  # page-aligned
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    for i in range(nblocks):
        buf.seek(0)
        buf.write(pattern(100 + i, bs))
        if os.pwritev(fd, [buf], i * bs) != bs:
            die("short O_DIRECT write")
    # 4 KiB unaligned-length O_DIRECT read must work as a normal short read at EOF.
    for i in reversed(range(nblocks)):
        rb = mmap.mmap(-1, bs)
        if os.preadv(fd, [rb], i * bs) != bs:
            die("short O_DIRECT read")
        if rb[:] != pattern(100 + i, bs):
            die("O_DIRECT read mismatch block %d" % i)
    # MAP_SHARED on an O_DIRECT (FOPEN_DIRECT_IO) file works as on kernel filesystems.
    try:
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
        m.close()
        print("odirect-mmap-shared: allowed")
    except OSError as e:
        print("odirect-mmap-shared: %s" % errno.errorcode.get(e.errno))
    os.close(fd)
    # Buffered read of what O_DIRECT wrote.
    with open(path, "rb") as fh:
        for i in range(nblocks):
            if fh.read(bs) != pattern(100 + i, bs):
                die("buffered read after O_DIRECT write mismatch block %d" % i)


def cmd_odirect_verify(path, nblocks):
    with open(path, "rb") as fh:
        for i in range(int(nblocks)):
            if fh.read(1 << 20) != pattern(100 + i, 1 << 20):
                die("O_DIRECT data mismatch after remount block %d" % i)


def cmd_mmap_write(path, size):
    size = int(size)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    data = pattern(7, size)
    m[:] = data
    m.flush()
    m.close()
    os.close(fd)
    # Read back through read(2) and through a fresh read-only mapping.
    with open(path, "rb") as fh:
        if fh.read() != data:
            die("read after MAP_SHARED write mismatch")
        m = mmap.mmap(fh.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ)
        if m[:] != data:
            die("mmap read mismatch")
        m.close()


def cmd_mmap_verify(path, size):
    size = int(size)
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), size, mmap.MAP_PRIVATE, mmap.PROT_READ)
        if m[:] != pattern(7, size):
            die("MAP_SHARED data mismatch after remount")


def cmd_seek(path, bs):
    """fallocate + SEEK_DATA/SEEK_HOLE on a file with data at [0,bs) and [16bs, 17bs)."""
    bs = int(bs)
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    os.pwrite(fd, b"a" * bs, 0)
    os.pwrite(fd, b"b" * bs, 16 * bs)
    os.ftruncate(fd, 32 * bs)
    d = os.lseek(fd, 0, os.SEEK_DATA)
    h = os.lseek(fd, 0, os.SEEK_HOLE)
    d2 = os.lseek(fd, bs, os.SEEK_DATA)
    h2 = os.lseek(fd, 16 * bs, os.SEEK_HOLE)
    try:
        os.lseek(fd, 17 * bs, os.SEEK_DATA)
        die("SEEK_DATA past the last data did not fail")
    except OSError as e:
        if e.errno != errno.ENXIO:
            die("SEEK_DATA past the end: %s" % e)
    print("seek data=%d hole=%d data2=%d hole2=%d" % (d, h, d2 // bs, h2 // bs))
    if (d, h, d2, h2) != (0, bs, 16 * bs, 17 * bs):
        die("unexpected SEEK_DATA/SEEK_HOLE results")
    # fallocate [4bs, 8bs) keep-size: allocated but reads as zeros; KEEP_SIZE past EOF.
    os.posix_fallocate(fd, 4 * bs, 4 * bs)
    if os.pread(fd, 4 * bs, 4 * bs) != b"\0" * (4 * bs):
        die("fallocated range does not read as zeros")
    st = os.fstat(fd)
    if st.st_size != 32 * bs:
        die("fallocate inside the file changed its size")
    os.posix_fallocate(fd, 40 * bs, 2 * bs)
    if os.fstat(fd).st_size != 42 * bs:
        die("fallocate past EOF did not extend: %d" % os.fstat(fd).st_size)
    os.close(fd)


def cmd_copy_range(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        n = os.fstat(a.fileno()).st_size
        done = 0
        while done < n:
            c = os.copy_file_range(a.fileno(), b.fileno(), n - done, done, done)
            if c <= 0:
                die("copy_file_range returned %d" % c)
            done += c
    print("copied %d" % done)


def cmd_holdopen(path, mode):
    """Opens path, optionally unlinks it, prints READY, then waits for SIGUSR1 and verifies the
    data is still readable; then waits for SIGTERM before closing."""
    fd = os.open(path, os.O_RDWR)
    want = os.pread(fd, 1 << 20, 0)
    if mode == "unlink":
        os.unlink(path)
    print("READY", flush=True)
    got = []
    signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    signal.signal(signal.SIGTERM, lambda *_: got.append(2))
    while 2 not in got:
        if 1 in got:
            got.remove(1)
            if os.pread(fd, 1 << 20, 0) != want:
                print("MISMATCH", flush=True)
            else:
                print("STILL-READABLE", flush=True)
        time.sleep(0.05)
    os.close(fd)


def cmd_fill(path, chunk_kb):
    """Writes until ENOSPC; prints the bytes written and the error name."""
    chunk = b"z" * (int(chunk_kb) * 1024)
    total = 0
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        while True:
            total += os.write(fd, chunk)
    except OSError as e:
        print("wrote %d error %s" % (total, errno.errorcode.get(e.errno)))
    finally:
        try:
            os.close(fd)
        except OSError as e:
            print("close error %s" % errno.errorcode.get(e.errno))


def cmd_dio_mmap(path):
    """MAP_SHARED of an O_DIRECT file works; a direct write drops pages a buffered reader and the
    mapping cached; a store through the mapping is seen by a direct read after msync."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    buf = mmap.mmap(-1, 8192)
    buf.write(b"A" * 8192)
    os.pwrite(fd, buf, 0)
    try:
        m = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
    except OSError as e:
        die("mmap(MAP_SHARED) of an O_DIRECT file: %s" % e)
    bfd = os.open(path, os.O_RDONLY)
    if os.pread(bfd, 4, 0) != b"AAAA" or m[:4] != b"AAAA":
        die("initial contents")
    buf.seek(0)
    buf.write(b"B" * 8192)
    os.pwrite(fd, buf, 0)
    got_b, got_m = os.pread(bfd, 4, 4096), m[4096:4100]
    if got_b != b"BBBB" or got_m != b"BBBB":
        die("stale after a direct write: buffered %r, mapping %r" % (got_b, got_m))
    m[0:1] = b"C"
    m.flush()
    rb = mmap.mmap(-1, 4096)
    os.preadv(fd, [rb], 0)
    if rb[:2] != b"CB":
        die("direct read after msync: %r" % rb[:2])
    m.close()
    os.close(bfd)
    os.close(fd)


def cmd_seek_negative(path):
    fd = os.open(path, os.O_RDONLY)
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        try:
            os.lseek(fd, -1, whence)
            die("lseek(-1, %d) succeeded" % whence)
        except OSError as e:
            if e.errno != errno.ENXIO:
                die("lseek(-1, %d): %s, expected ENXIO" % (whence, e))
    os.close(fd)


def _handle_calls():
    libc = ctypes.CDLL(None, use_errno=True)

    class FileHandle(ctypes.Structure):
        _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                    ("f_handle", ctypes.c_ubyte * 128)]
    return ctypes, libc, FileHandle


def cmd_handles(mnt):
    """open_by_handle_at: a live file opens after the kernel dropped its inode; a deleted one
    (and a reused dinode) answers ESTALE."""
    ctypes, libc, FileHandle = _handle_calls()
    path = os.path.join(mnt, "handle-file")
    with open(path, "w") as f:
        f.write("handle")
    fh, mount_id = FileHandle(), ctypes.c_int()
    fh.handle_bytes = 128
    if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0):
        die("name_to_handle_at: %s" % os.strerror(ctypes.get_errno()))

    def open_handle():
        mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        r = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
        e = ctypes.get_errno()
        os.close(mfd)
        return r, e

    def drop_caches():
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")

    drop_caches()
    r, e = open_handle()
    if r < 0:
        die("open_by_handle_at of a live file: %s" % os.strerror(e))
    if os.read(r, 6) != b"handle":
        die("open_by_handle_at read the wrong data")
    os.close(r)
    os.unlink(path)
    drop_caches()
    r, e = open_handle()
    if r >= 0 or e != errno.ESTALE:
        die("open_by_handle_at of a deleted file: %s" % ("opened" if r >= 0 else os.strerror(e)))
    for i in range(8):  # the freed dinode block is likely reused by one of these
        with open(os.path.join(mnt, "reuse-%d" % i), "w") as f:
            f.write("x")
    drop_caches()
    r, e = open_handle()
    if r >= 0 or e != errno.ESTALE:
        die("open_by_handle_at after reuse: %s" % ("opened" if r >= 0 else os.strerror(e)))


def cmd_nodeid_reuse(mnt):
    """Node ids carry the dinode generation: a dinode freed while the kernel still references it
    (an O_PATH fd: no open in the daemon, so unlink frees it at once) and reused by a new file
    gives the new file another node id (its file handle differs), the new file behaves, and the
    old reference answers ESTALE instead of showing the new file."""
    ctypes, libc, FileHandle = _handle_calls()

    def handle_of(path):
        fh, mount_id = FileHandle(), ctypes.c_int()
        fh.handle_bytes = 128
        if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0):
            die("name_to_handle_at %s: %s" % (path, os.strerror(ctypes.get_errno())))
        words = [int.from_bytes(bytes(fh.f_handle[i:i + 4]), sys.byteorder) for i in (0, 4, 8)]
        return (words[0] << 32) | words[1], words[2]  # fuse_encode_fh: nodeid, generation

    d = os.path.join(mnt, "reuse-dir")
    os.mkdir(d)
    old = os.path.join(d, "old")
    with open(old, "w") as f:
        f.write("old data")
    ino = os.stat(old).st_ino
    nodeid, gen = handle_of(old)
    if nodeid & ((1 << 48) - 1) != ino or nodeid >> 48 != gen & 0xffff:
        die("node id %#x of dinode %#x (generation %#x) does not carry the generation"
            % (nodeid, ino, gen))
    ref = os.open(old, os.O_PATH)
    os.unlink(old)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    new = None
    for i in range(256):  # the freed block is normally the next dinode allocated
        # A freed block is reused only once the log has its transaction (fsync flushes it; the
        # daemon may free the dinode only at a RELEASE of the writer that arrives later).
        os.fsync(dfd)
        p = os.path.join(d, "new-%d" % i)
        with open(p, "w") as f:
            f.write("new data %d" % i)
        if os.stat(p).st_ino == ino:
            new = p
            break
    os.close(dfd)
    if new is None:
        die("dinode %#x was not reused by 256 new files in its directory" % ino)
    new_nodeid, new_gen = handle_of(new)
    if new_gen == gen or new_nodeid == nodeid:
        die("reused dinode %#x: same node id %#x / generation %#x as the old file"
            % (ino, nodeid, gen))
    with open(new) as f:
        if not f.read().startswith("new data"):
            die("the new file at the reused dinode reads wrong data")
    if os.stat(new).st_ino != ino:
        die("st_ino of the new file is not its dinode address")
    try:
        st = os.fstat(ref)
        die("fstat of the deleted file's reference succeeded (size %d, ino %#x): it aliases the "
            "new file" % (st.st_size, st.st_ino))
    except OSError as e:
        if e.errno != errno.ESTALE:
            die("fstat of the deleted file's reference: %s, expected ESTALE" % e)
    os.close(ref)
    os.unlink(new)
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)
    print("nodeid-reuse: dinode %#x reused: node id %#x -> %#x, old reference ESTALE"
          % (ino, nodeid, new_nodeid))


def cmd_dio_write(path):
    """One O_DIRECT 4 KiB write at offset 0 (run as an unprivileged owner)."""
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    buf.write(b"D" * 4096)
    os.pwrite(fd, buf, 0)
    os.close(fd)


def cmd_dio_times(path):
    """An old mtime, one in-place O_DIRECT write, close: mtime and ctime must reach the time of
    the write (less the 100 ms granularity of direct writes' times) within 5 s (bounded poll),
    with no other access in between than stat."""
    os.utime(path, (1600000000, 1600000000))
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    buf.write(b"T" * 4096)
    started = time.time_ns()
    os.pwrite(fd, buf, 0)
    os.close(fd)
    floor = started - 200 * 1000000
    deadline = time.monotonic() + 5
    while True:
        st = os.stat(path)
        if st.st_mtime_ns >= floor and st.st_ctime_ns >= floor:
            print("dio-times: mtime %.3f s after the write started"
                  % ((st.st_mtime_ns - started) / 1e9))
            return
        if time.monotonic() >= deadline:
            die("dio-times: mtime still %.3f s older than the write 5 s later (ctime %.3f s)"
                % ((started - st.st_mtime_ns) / 1e9, (started - st.st_ctime_ns) / 1e9))
        time.sleep(0.05)  # bounded poll


def cmd_fallocate(path, mode):
    """fallocate(2) of the first 8 KiB with MODE (alloc | punch | zero)."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = {"alloc": 0, "punch": 0x01 | 0x02, "zero": 0x10}[mode]
    fd = os.open(path, os.O_RDWR)
    if libc.fallocate(fd, flags, ctypes.c_longlong(0), ctypes.c_longlong(8192)):
        die("fallocate %s: %s" % (mode, os.strerror(ctypes.get_errno())))
    os.close(fd)


def main():
    if len(sys.argv) < 2:
        die("usage: fs_helper.py CMD ARGS...")
    fn = globals().get("cmd_" + sys.argv[1].replace("-", "_"))
    if fn is None:
        die("unknown command " + sys.argv[1])
    fn(*sys.argv[2:])


if __name__ == "__main__":
    main()
