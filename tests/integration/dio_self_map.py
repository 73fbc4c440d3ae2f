#!/usr/bin/env python3
"""O_DIRECT I/O between a file and a private mapping of the same O_DIRECT open (the shapes of
generic/647 and 729). Each of ITERATIONS rounds runs four steps; each step first creates FILE
again with page 0 a hole and page 1 written (through an O_DIRECT open that is then closed),
opens it O_RDWR|O_DIRECT and maps its first two pages MAP_PRIVATE from that open:
  1. O_DIRECT pread of page 1 into the mapping's page 0;
  2. O_DIRECT pwrite of the mapping's page 1 to page 0 of the file;
  3. O_DIRECT pread of the hole (page 0) into the mapping's page 0;
  4. O_DIRECT pwrite of the mapping's page 1 onto page 1 itself;
then fsync and close. Every result is checked byte for byte. The faults these take are READs
that fill pages yet carry the open's O_DIRECT flag. FILE is unlinked at the end.

Run it with another node reading FILE in a loop: the faults then find this node holding the inode
glock SH. Usage: dio_self_map.py FILE ITERATIONS. Exit 0 when every check passed, else 1 with a
message."""
import mmap
import os
import sys

PAGE = mmap.PAGESIZE


def pattern(tag):
    return bytes((tag * 31 + i * 7) & 0xFF for i in range(PAGE))


def fail(it, step, what):
    sys.exit("dio_self_map: round %d step %d: %s" % (it, step, what))


def prepare(path, buf, tag):
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_DIRECT, 0o644)
    buf[:PAGE] = pattern(tag)
    if os.pwritev(fd, [memoryview(buf)[:PAGE]], PAGE) != PAGE:
        sys.exit("dio_self_map: short O_DIRECT pwrite of page 1")
    os.close(fd)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    return fd, mmap.mmap(fd, 2 * PAGE, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)


def finish(fd, m):
    os.fsync(fd)
    m.close()
    os.close(fd)


def main():
    path, iterations = sys.argv[1], int(sys.argv[2])
    buf = mmap.mmap(-1, PAGE)  # page aligned, for O_DIRECT
    for it in range(iterations):
        tag = it % 200 + 1
        want = pattern(tag)
        fd, m = prepare(path, buf, tag)
        n = os.preadv(fd, [memoryview(m)[:PAGE]], PAGE)
        if n != PAGE or m[:PAGE] != want:
            fail(it, 1, "pread of page 1 into the mapping: %d bytes, %s" %
                 (n, "right" if m[:PAGE] == want else "wrong content"))
        finish(fd, m)

        fd, m = prepare(path, buf, tag)
        n = os.pwritev(fd, [memoryview(m)[PAGE:]], 0)
        if n != PAGE:
            fail(it, 2, "pwrite of the mapping's page 1 to page 0: %d bytes" % n)
        n = os.preadv(fd, [buf], 0)
        if n != PAGE or buf[:] != want:
            fail(it, 2, "page 0 reads back %d bytes, %s" %
                 (n, "right" if buf[:] == want else "wrong content"))
        finish(fd, m)

        fd, m = prepare(path, buf, tag)
        n = os.preadv(fd, [memoryview(m)[:PAGE]], 0)
        if n != PAGE or m[:PAGE] != bytes(PAGE):
            fail(it, 3, "pread of the hole into the mapping: %d bytes, %s" %
                 (n, "zeros" if m[:PAGE] == bytes(PAGE) else "not zeros"))
        finish(fd, m)

        fd, m = prepare(path, buf, tag)
        n = os.pwritev(fd, [memoryview(m)[PAGE:]], PAGE)
        if n != PAGE:
            fail(it, 4, "pwrite of the mapping's page 1 onto itself: %d bytes" % n)
        n = os.preadv(fd, [buf], PAGE)
        if n != PAGE or buf[:] != want:
            fail(it, 4, "page 1 reads back %d bytes, %s" %
                 (n, "right" if buf[:] == want else "wrong content"))
        finish(fd, m)
    os.unlink(path)
    print("dio_self_map: %d rounds ok" % iterations)


if __name__ == "__main__":
    main()
