#!/usr/bin/env bash
# Crash test on the real mount: kill -9 the daemon in the middle of fio plus a metadata storm,
# remount (journal replay), and check that fsck-oracle says CLEAN and that every file whose fsync
# returned before the kill has the checksum the workload logged for it. Three rounds with the
# kill at different points of the workload.
source "$(dirname "$0")/fs_lib.sh"
fs_init

img=$T/crash.img
mnt=$T/m
make_image "$img" 1G 4096

# The workload: creates, renames, unlinks and mkdirs; every file it fsyncs is logged as
# "<sha256> <path>" to a log outside the volume, after fsync returned.
cat >"$T/storm.py" <<'PY'
import hashlib, os, random, sys
root, logpath, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
log = open(logpath, "a", buffering=1)
os.makedirs(os.path.join(root, "storm"), exist_ok=True)
live = []
i = 0
while True:
    i += 1
    d = os.path.join(root, "storm", "d%d" % rnd.randrange(8))
    os.makedirs(d, exist_ok=True)
    op = rnd.randrange(10)
    if op < 5 or not live:
        p = os.path.join(d, "f%d" % i)
        data = rnd.randbytes(rnd.choice([100, 3000, 5000, 70000, 300000]))
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        live.append(p)
        log.write("%s %s\n" % (hashlib.sha256(data).hexdigest(), os.path.relpath(p, root)))
    elif op < 7:
        p = live.pop(rnd.randrange(len(live)))
        q = os.path.join(d, "r%d" % i)
        os.rename(p, q)          # not fsync'd: either name may survive; content is the same
        live.append(q)
        log.write("RENAME %s %s\n" % (os.path.relpath(p, root), os.path.relpath(q, root)))
    else:
        p = live.pop(rnd.randrange(len(live)))
        log.write("UNLINK %s\n" % os.path.relpath(p, root))
        os.unlink(p)
PY

# Verifies the checksum log against the remounted volume: each fsync'd file must exist under its
# last logged name (or the previous one if a later rename/unlink was not yet durable) with the
# logged checksum.
cat >"$T/verify.py" <<'PY'
import hashlib, os, sys
root, logpath = sys.argv[1], sys.argv[2]
state = {}     # current name -> sha
names = {}     # sha-key -> list of candidate names
bad = 0
checked = 0
entries = []
for line in open(logpath):
    parts = line.split()
    if not parts or (parts[0] not in ("RENAME", "UNLINK") and len(parts) != 2):
        continue  # a torn last line
    entries.append(parts)
cur = {}       # name -> sha
for e in entries:
    if e[0] == "RENAME":
        if e[1] in cur:
            cur[e[2]] = cur.pop(e[1])
            names[e[2]] = names.pop(e[1], []) + [e[1]]
    elif e[0] == "UNLINK":
        cur.pop(e[1], None)
        names.pop(e[1], None)
    else:
        cur[e[1]] = e[0]
        names[e[1]] = []
for name, sha in cur.items():
    cands = [name] + list(reversed(names.get(name, [])))
    found = None
    for c in cands:
        p = os.path.join(root, c)
        if os.path.exists(p):
            found = p
            break
    if found is None:
        print("MISSING fsync'd file %s (candidates %s)" % (name, cands)); bad += 1; continue
    got = hashlib.sha256(open(found, "rb").read()).hexdigest()
    checked += 1
    if got != sha:
        print("CORRUPT %s: %s != %s" % (found, got, sha)); bad += 1
print("verified %d fsync'd files, %d bad" % (checked, bad))
sys.exit(1 if bad else 0)
PY

wait_lines() {  # wait_lines FILE N SECONDS: until FILE has N lines (the workload made progress)
  local deadline=$((SECONDS + $3))
  while [ "$(wc -l <"$1" 2>/dev/null || echo 0)" -lt "$2" ]; do
    [ $SECONDS -ge $deadline ] && fail "workload made no progress in $3 s ($(wc -l <"$1") lines)"
    sleep 0.05
  done
}

for round in 1 2 3; do
  log "round $round: mount, fio + metadata storm, kill -9"
  mount_fs "$img" "$mnt" "commit=5"
  pid=${FS_PIDS[$mnt]}
  : >"$T/sums.$round"
  fio --name=crash$round --directory="$mnt" --rw=randwrite --bs=4k --size=64m --fsync=8 \
      --ioengine=psync --time_based --runtime=60 --numjobs=2 >"$T/fio.$round.log" 2>&1 &
  fio_pid=$!
  python3 "$T/storm.py" "$mnt" "$T/sums.$round" "$round" >"$T/storm.$round.log" 2>&1 &
  storm_pid=$!
  wait_lines "$T/sums.$round" $((round * 40)) 120
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  unset "FS_PIDS[$mnt]"
  # The workload now sees ENOTCONN; stop it and drop the dead mount.
  pkill -9 -P "$fio_pid" 2>/dev/null  # fio's job processes (numjobs=2), then fio itself
  kill -9 "$fio_pid" "$storm_pid" 2>/dev/null
  wait "$fio_pid" "$storm_pid" 2>/dev/null
  fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"
  out=$("$ORACLE" "$img" 2>&1)
  [ "$out" != "CLEAN" ] || log "(journal was clean at the kill)"
  log "round $round: remount (replay) and verify $(grep -vc -e RENAME -e UNLINK "$T/sums.$round") fsync'd files"
  mount_fs "$img" "$mnt"
  grep -q "replay" "$T/m.log" && log "$(grep replayed "$T/m.log" | tail -1)"
  python3 "$T/verify.py" "$mnt" "$T/sums.$round" || fail "fsync'd data lost or corrupted in round $round"
  rm -rf "$mnt/storm" "$mnt"/crash$round.*
  unmount_fs "$mnt"
  check_clean "$img"
done
