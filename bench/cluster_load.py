#!/usr/bin/env python3
"""Load generators of scripts/bench-cluster (ugfs2 on the local 3-node cluster).

  cluster_load.py meta PHASE --dir D [--dir D ...] --files N [--shared] [--timeout S] [MSGS]
      PHASE is create, stat or unlink. One child process per --dir (each dir is a path on one
      node's mount), all started at the same instant (a pipe barrier); child i works on the N
      files n<i>_<k> (k < N) of its dir: open(O_CREAT|O_EXCL|O_WRONLY)+close, stat (a regular
      empty file), or unlink. --shared: the dirs are one directory seen through several mounts.
      After the phase (untimed) every dir is listed through its mount: after create it must hold
      exactly the expected names (N, or N per dir with --shared), after unlink none.
  cluster_load.py pingpong --a PATH --b PATH --seconds S [--warmup K] [MSGS]
      PATH A and PATH B are one file seen through two nodes' mounts. One process writes 4 KiB
      (buffered: a write needs the inode glock EX; O_DIRECT writes would share it in DF on both
      nodes, as in gfs2) at offset 0, alternately through A and through B (strictly
      alternating: a write returns before the next starts; without a writeback cache each write
      reaches the daemon before it returns), for S seconds after K untimed warm-up writes; each
      write moves the file's inode glock EX to the other node, which revokes the other node's
      cached page. Then the last block is read back through both mounts (their page caches) and
      must be the last write.
  cluster_load.py msgs [MSGS]
      prints the counter sum (below), or n/a.
MSGS: --tool PATH --counter NAME --mnt M [--mnt M ...]: the sum over the mounts of counter NAME
of `PATH counters M` (ugfs2-tool), read just before and just after the timed part; without
--tool the counters are null.
Each subcommand prints one JSON object on stdout, problems on stderr, and exits 1 on any problem.
"""
import argparse
import json
import mmap
import os
import select
import signal
import stat
import subprocess
import sys
import time

PROG = "cluster_load"
BLOCK = 4096


def die(msg):
    print(PROG + ": " + msg, file=sys.stderr)
    sys.exit(1)


def read_counter(args):
    """Sum of counter args.counter over args.mnt, or None without --tool. Dies on a bad read."""
    if not args.tool:
        return None
    total = 0
    for m in args.mnt:
        try:
            p = subprocess.run([args.tool, "counters", m], capture_output=True, text=True,
                               timeout=30)
        except subprocess.TimeoutExpired:
            die("%s counters %s: no answer in 30 s" % (args.tool, m))
        if p.returncode != 0:
            die("%s counters %s failed: %s" % (args.tool, m, p.stderr.strip()))
        vals = [ln.split()[1] for ln in p.stdout.splitlines()
                if len(ln.split()) == 2 and ln.split()[0] == args.counter]
        if len(vals) != 1 or not vals[0].isdigit():
            die("%s counters %s: no '%s N' line in: %s" % (args.tool, m, args.counter,
                                                           p.stdout.strip()[:300]))
        total += int(vals[0])
    return total


# ------------------------------------------------------------------------------------------------
# meta


def meta_child(phase, d, idx, n, ready_w, go_r, res_w):
    """Runs in a forked child: waits for the go byte, does the phase, writes a JSON result."""
    out = {"dir": d, "ops": 0}
    try:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        names = ["n%d_%d" % (idx, k) for k in range(n)]
        os.write(ready_w, b"r")
        if os.read(go_r, 1) != b"g":
            raise RuntimeError("no go byte from the parent")
        t0 = time.monotonic()
        if phase == "create":
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
            for nm in names:
                os.close(os.open(nm, flags, 0o644, dir_fd=dfd))
                out["ops"] += 1
        elif phase == "stat":
            for nm in names:
                st = os.stat(nm, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
                    raise RuntimeError("%s/%s: mode %o size %d, expected an empty regular file"
                                       % (d, nm, st.st_mode, st.st_size))
                out["ops"] += 1
        else:
            for nm in names:
                os.unlink(nm, dir_fd=dfd)
                out["ops"] += 1
        t1 = time.monotonic()
        os.close(dfd)
        out.update(t0=t0, t1=t1)
    except Exception as e:  # reported to the parent, which fails the run
        out["error"] = "%s: %s" % (type(e).__name__, e)
    os.write(res_w, json.dumps(out).encode() + b"\n")
    os.close(res_w)


def count_names(d, idxs, n):
    """(expected names present, other entries) in d for children idxs with n files each."""
    want = {"n%d_%d" % (i, k) for i in idxs for k in range(n)}
    got = set(os.listdir(d))
    return len(got & want), len(got - want)


def cmd_meta(args):
    n = args.files
    dirs = args.dir
    if n < 1 or not dirs:
        die("meta: needs --files >= 1 and at least one --dir")
    kids = []
    for idx, d in enumerate(dirs, start=1):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (ready_r, go_w, res_r):
                    os.close(fd)
                meta_child(args.phase, d, idx, n, ready_w, go_r, res_w)
            finally:
                os._exit(0)
        for fd in (ready_w, go_r, res_w):
            os.close(fd)
        kids.append({"pid": pid, "ready": ready_r, "go": go_w, "res": res_r, "buf": b""})

    def fail(msg):
        for k in kids:
            try:
                os.kill(k["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        die(msg)

    deadline = time.monotonic() + 60
    for k in kids:
        r, _, _ = select.select([k["ready"]], [], [], max(0.0, deadline - time.monotonic()))
        if not r or os.read(k["ready"], 1) != b"r":
            fail("meta %s: a child did not get ready (opening its dir)" % args.phase)
    before = read_counter(args)
    for k in kids:  # the barrier: every child is waiting in read() for this byte
        os.write(k["go"], b"g")
    results = {}
    deadline = time.monotonic() + args.timeout
    open_fds = {k["res"]: k for k in kids}
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("meta %s: not done after %d s (stuck daemon?)" % (args.phase, args.timeout))
        r, _, _ = select.select(list(open_fds), [], [], left)
        for fd in r:
            chunk = os.read(fd, 65536)
            if chunk:
                open_fds[fd]["buf"] += chunk
            else:
                k = open_fds.pop(fd)
                results[k["pid"]] = k["buf"]
    after = read_counter(args)
    for k in kids:
        os.waitpid(k["pid"], 0)
    per = []
    for k in kids:
        try:
            per.append(json.loads(results[k["pid"]].decode()))
        except (ValueError, KeyError):
            die("meta %s: a child died without a result" % args.phase)
    errs = [p["error"] for p in per if "error" in p]
    if errs:
        die("meta %s: %s" % (args.phase, "; ".join(errs)))
    for p in per:
        if p["ops"] != n:
            die("meta %s: %s did %d operations, expected %d" % (args.phase, p["dir"], p["ops"], n))

    # Untimed check through every mount (names made on another node: poll a little).
    idxs = list(range(1, len(dirs) + 1))
    for idx, d in enumerate(dirs, start=1):
        mine = idxs if args.shared else [idx]
        want = 0 if args.phase == "unlink" else n * len(mine)
        t_end = time.monotonic() + 5
        while True:
            have, other = count_names(d, mine, n)
            if have == want and other == 0:
                break
            if time.monotonic() > t_end:
                die("meta %s: %s lists %d of the expected %d names and %d others"
                    % (args.phase, d, have, want, other))
            time.sleep(0.1)

    t0 = min(p["t0"] for p in per)
    t1 = max(p["t1"] for p in per)
    total = sum(p["ops"] for p in per)
    print(json.dumps({
        "phase": args.phase, "ops": total, "elapsed_s": t1 - t0,
        "ops_per_s": total / (t1 - t0) if t1 > t0 else None,
        "start_skew_s": max(p["t0"] for p in per) - t0,
        "per_node": [{"dir": p["dir"], "ops": p["ops"], "elapsed_s": p["t1"] - p["t0"],
                      "ops_per_s": p["ops"] / (p["t1"] - p["t0"]) if p["t1"] > p["t0"] else None}
                     for p in per],
        "msgs_before": before, "msgs_after": after,
    }))


# ------------------------------------------------------------------------------------------------
# pingpong


def pingpong_open(path, create=False):
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    return os.open(path, flags, 0o644)


def block_for(seq, side):
    head = b"ugfs2 bench-cluster pingpong seq %012d side %s\n" % (seq, side.encode())
    return head + b"." * (BLOCK - len(head))


def cmd_pingpong(args):
    buf = mmap.mmap(-1, BLOCK)

    def write(fd, seq, side):
        buf.seek(0)
        buf.write(block_for(seq, side))
        got = os.pwrite(fd, buf, 0)
        if got != BLOCK:
            die("pingpong: write %d through %s returned %d" % (seq, side, got))

    def read_back(fd):
        got = os.preadv(fd, [buf], 0)
        if got != BLOCK:
            die("pingpong: read back returned %d bytes" % got)
        return bytes(buf[:BLOCK])

    fa = pingpong_open(args.a, create=True)
    write(fa, 0, "A")
    os.fsync(fa)
    t_end = time.monotonic() + 5
    while True:  # the name, made on A's node, through B's mount
        try:
            fb = pingpong_open(args.b)
            break
        except FileNotFoundError:
            if time.monotonic() > t_end:
                die("pingpong: %s does not appear through the other mount" % args.b)
            time.sleep(0.05)
    fds = (fa, fb)
    sides = ("A", "B")
    seq = 0
    for _ in range(args.warmup):
        seq += 1
        write(fds[seq % 2], seq, sides[seq % 2])
    before = read_counter(args)
    first = seq
    t0 = time.monotonic()
    stop = t0 + args.seconds
    while True:
        seq += 1
        write(fds[seq % 2], seq, sides[seq % 2])
        if seq % 2 == 0 and time.monotonic() >= stop:  # end on B: an even number of transfers
            break
    t1 = time.monotonic()
    after = read_counter(args)
    want = block_for(seq, sides[seq % 2])
    for fd, side in ((fa, "A"), (fb, "B")):
        got = read_back(fd)
        if got != want:
            die("pingpong: through %s the block reads %r, expected the last write %r"
                % (side, got[:60], want[:60]))
    os.close(fa)
    os.close(fb)
    transfers = seq - first
    print(json.dumps({
        "transfers": transfers, "elapsed_s": t1 - t0,
        "transfers_per_s": transfers / (t1 - t0) if t1 > t0 else None,
        "msgs_before": before, "msgs_after": after,
    }))


def cmd_msgs(args):
    v = read_counter(args)
    print("n/a" if v is None else v)


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def msgs_opts(p):
        p.add_argument("--tool", default="")
        p.add_argument("--counter", default="dlm_msgs_sent")
        p.add_argument("--mnt", action="append", default=[])

    p = sub.add_parser("meta")
    p.add_argument("phase", choices=["create", "stat", "unlink"])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--files", type=int, required=True)
    p.add_argument("--shared", action="store_true")
    p.add_argument("--timeout", type=int, default=900)
    msgs_opts(p)
    p = sub.add_parser("pingpong")
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=int, default=20)
    msgs_opts(p)
    p = sub.add_parser("msgs")
    msgs_opts(p)
    args = ap.parse_args()
    if getattr(args, "tool", "") and not args.mnt:
        die("--tool needs at least one --mnt")
    {"meta": cmd_meta, "pingpong": cmd_pingpong, "msgs": cmd_msgs}[args.cmd](args)


if __name__ == "__main__":
    main()
