# shellcheck shell=bash
# kernel_lib.sh: the Linux kernel's own gfs2, booted under qemu, as an interop oracle (sourced by
# kernel_*.sh after tests/integration/fs_lib.sh, whose log/fail/skip/cleanup it uses).
#
# kernel_setup builds, in $T, a busybox initramfs from Debian packages (busybox-static, the gfs2
# module of linux-image-amd64 and its dependencies, tests/kernel/guest_init.sh as /init); nothing
# of it is committed. kernel_run boots it on a gfs2 image (virtio disk vda), the guest mounts it
# with lock_nolock, runs a command script (a small cpio appended to the initramfs), unmounts,
# writes /out as a tar archive to a results disk (vdb) and powers off. The host extracts the
# archive into $T/<name>.out/. The guest has busybox, /bin/manifest (guest_manifest.sh) and
# /bin/tree.sh. The guest's serial console goes to $T/<name>.serial.log; every
# line the guest itself prints starts with "UGFS2G ".
#
# Environment:
#   UGFS2_KERNEL_VERSION  kernel to boot (default: newest with /boot/vmlinuz-V and a gfs2 module)
#   UGFS2_KERNEL_ACCEL    tcg (default: software emulation) or kvm (falls back to tcg when KVM
#                         cannot start; a KVM that starts but does not run hangs until the timeout)
#   UGFS2_KERNEL_TIMEOUT  seconds one boot may take before qemu is killed (default 300)

KERNEL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KERNEL_TIMEOUT=${UGFS2_KERNEL_TIMEOUT:-300}
KERNEL_VER=""
KERNEL_IMAGE=""
KERNEL_ACCEL=""
QEMU_PID=""
QEMU_NAME=""

# The modules the guest loads (insmod order is resolved from modinfo's dependencies).
KERNEL_MODULES=(virtio_pci virtio_blk crc32c_generic gfs2)

kernel_pick_version() {
  local v best=""
  if [ -n "${UGFS2_KERNEL_VERSION:-}" ]; then
    echo "$UGFS2_KERNEL_VERSION"
    return
  fi
  for v in $(ls /lib/modules 2>/dev/null | sort -V); do
    [ -r "/boot/vmlinuz-$v" ] || continue
    ls /lib/modules/"$v"/kernel/fs/gfs2/gfs2.ko* >/dev/null 2>&1 || continue
    best=$v
  done
  echo "$best"
}

# kernel_add_module NAME DESTDIR LISTFILE: NAME and (first) its dependencies, once each.
declare -A KERNEL_MOD_SEEN=()
kernel_add_module() {
  local name=$1 dest=$2 list=$3 dep file base
  name=${name//-/_}
  [ -n "${KERNEL_MOD_SEEN[$name]:-}" ] && return 0
  KERNEL_MOD_SEEN[$name]=1
  file=$(modinfo -k "$KERNEL_VER" -n "$name" 2>/dev/null | head -1)
  case "$file" in
    "" ) fail "kernel module $name not found for $KERNEL_VER (modinfo -k $KERNEL_VER -n $name)" ;;
    "(builtin)" | builtin ) return 0 ;;
  esac
  for dep in $(modinfo -k "$KERNEL_VER" -F depends "$name" | tr ',' ' '); do
    kernel_add_module "$dep" "$dest" "$list"
  done
  base=$(basename "$file")
  case "$file" in
    *.ko.xz ) xz -dc "$file" >"$dest/${base%.xz}" || fail "xz -d $file" ;;
    *.ko.zst ) zstd -qdc "$file" >"$dest/${base%.zst}" || fail "zstd -d $file" ;;
    *.ko.gz ) gzip -dc "$file" >"$dest/${base%.gz}" || fail "gzip -d $file" ;;
    *.ko ) cp "$file" "$dest/$base" || fail "cp $file" ;;
    * ) fail "unexpected module file $file" ;;
  esac
  base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
  echo "$base" >>"$list"
}

# kernel_setup: checks qemu and the kernel, builds $T/initramfs.cpio, picks the accelerator.
# Skips (77) when no qemu or no Debian kernel with gfs2 is installed.
kernel_setup() {
  command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 missing (scripts/install-deps installs qemu-system-x86)"
  command -v cpio >/dev/null || skip "cpio missing (scripts/install-deps installs it)"
  local ldd_out
  ldd_out=$(LC_ALL=C ldd /bin/busybox 2>&1)
  [ -x /bin/busybox ] && [[ "$ldd_out" == *"not a dynamic executable"* ]] ||
    skip "no static /bin/busybox (scripts/install-deps installs busybox-static)"
  KERNEL_VER=$(kernel_pick_version)
  [ -n "$KERNEL_VER" ] || skip "no kernel with /boot/vmlinuz-V and a gfs2 module (scripts/install-deps installs linux-image-amd64)"
  KERNEL_IMAGE=/boot/vmlinuz-$KERNEL_VER
  [ -r "$KERNEL_IMAGE" ] || skip "$KERNEL_IMAGE not readable"

  local root=$T/initramfs
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,proc,sys,dev,mnt,tmp,out,lib/modules} || fail "mkdir initramfs"
  cp /bin/busybox "$root/bin/busybox" || fail "cp busybox"
  cp "$KERNEL_DIR/guest_init.sh" "$root/init" || fail "cp guest_init.sh"
  cp "$KERNEL_DIR/guest_manifest.sh" "$root/bin/manifest" || fail "cp guest_manifest.sh"
  cp "$KERNEL_DIR/tree.sh" "$root/bin/tree.sh" || fail "cp tree.sh"
  chmod 755 "$root/init" "$root/bin/manifest" "$root/bin/tree.sh"
  : >"$root/modules.list"
  KERNEL_MOD_SEEN=()
  local m
  for m in "${KERNEL_MODULES[@]}"; do kernel_add_module "$m" "$root/lib/modules" "$root/modules.list"; done
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$T/initramfs.cpio" ||
    fail "cpio initramfs"

  # TCG unless asked for KVM: a /dev/kvm that opens is no proof that it works (nested under
  # another hypervisor, a guest on it may spin without ever reaching its first instruction).
  KERNEL_ACCEL=${UGFS2_KERNEL_ACCEL:-tcg}
  log "kernel $KERNEL_VER, modules: $(tr '\n' ' ' <"$root/modules.list"), accel $KERNEL_ACCEL," \
      "initramfs $(($(stat -c %s "$T/initramfs.cpio") / 1024)) KiB"
  FS_CLEANUP+=("kernel_kill_qemu")
}

kernel_kill_qemu() {
  if [ -n "$QEMU_PID" ]; then
    kill -9 "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
    QEMU_PID=""
  fi
}

# kernel_start NAME IMG CMDSCRIPT: boots the guest in the background (one qemu at a time).
# The guest runs CMDSCRIPT (a busybox sh script; $MNT is the gfs2 mount, $OUT a directory whose
# files come back to the host) after mounting IMG.
kernel_start() {
  local name=$1 img=$2 cmd=$3
  [ -z "$QEMU_PID" ] || fail "kernel_start $name: qemu $QEMU_PID still running"
  QEMU_NAME=$name
  local extra=$T/$name.cmd
  rm -rf "$extra" "$T/$name.out" "$T/$name.results.img"
  mkdir -p "$extra" || fail "mkdir $extra"
  cp "$cmd" "$extra/cmd.sh" || fail "cp $cmd"
  (cd "$extra" && echo cmd.sh | cpio -o -H newc --quiet) >"$T/$name.cmd.cpio" || fail "cpio cmd"
  cat "$T/initramfs.cpio" "$T/$name.cmd.cpio" >"$T/$name.initrd" || fail "initrd"
  truncate -s 256M "$T/$name.results.img" || fail "truncate results disk"
  local accel=(-accel tcg)
  [ "$KERNEL_ACCEL" = kvm ] && accel=(-accel kvm -accel tcg)
  : >"$T/$name.serial.log"
  qemu-system-x86_64 "${accel[@]}" -m 1024 -smp 1 -nodefaults -display none -no-reboot \
    -serial "file:$T/$name.serial.log" -monitor none \
    -kernel "$KERNEL_IMAGE" -initrd "$T/$name.initrd" \
    -append "console=ttyS0 panic=-1 loglevel=4 rdinit=/init" \
    -drive "file=$img,format=raw,if=virtio,cache=none" \
    -drive "file=$T/$name.results.img,format=raw,if=virtio,cache=none" \
    >"$T/$name.qemu.log" 2>&1 &
  QEMU_PID=$!
  KERNEL_T0=$SECONDS
}

# kernel_wait [SECONDS]: until qemu exits, or kills it after SECONDS (default
# $UGFS2_KERNEL_TIMEOUT); then extracts the results. Returns 0 when the guest reported DONE,
# 1 when qemu exited without it, 2 when it had to be killed.
kernel_wait() {
  local secs=${1:-$KERNEL_TIMEOUT} name=$QEMU_NAME
  local deadline=$((KERNEL_T0 + secs))
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
      kernel_kill_qemu
      log "guest $name: qemu did not power off within ${secs}s: killed it"
      kernel_results "$name"
      return 2
    fi
    sleep 0.2
  done
  wait "$QEMU_PID"
  local rc=$?
  QEMU_PID=""
  log "guest $name: qemu exited $rc after $((SECONDS - KERNEL_T0))s"
  kernel_results "$name"
  grep -q "^UGFS2G DONE" "$T/$name.serial.log"
}

# kernel_results NAME: the results disk's tar archive, unpacked into $T/NAME.out.
kernel_results() {
  local name=$1
  mkdir -p "$T/$name.out"
  tar -x -f "$T/$name.results.img" -C "$T/$name.out" 2>"$T/$name.tar.err" || true
  rm -f "$T/$name.results.img"
}

# kernel_guest_fail NAME WHY: fail with the guest's serial log and dmesg.
kernel_guest_fail() {
  local name=$1
  shift
  {
    echo "--- serial console of guest $name (last 60 lines) ---"
    tail -60 "$T/$name.serial.log"
    [ -s "$T/$name.out/dmesg" ] && { echo "--- guest dmesg (last 40 lines) ---"; tail -40 "$T/$name.out/dmesg"; }
    [ -s "$T/$name.out/cmd.log" ] && { echo "--- guest cmd.log (last 40 lines) ---"; tail -40 "$T/$name.out/cmd.log"; }
    [ -s "$T/$name.qemu.log" ] && { echo "--- qemu stderr ---"; cat "$T/$name.qemu.log"; }
  } >&2
  fail "guest $name: $*"
}

# kernel_run NAME IMG CMDSCRIPT: boot, run, wait; fails unless the guest mounted IMG, ran the
# script with exit 0 and unmounted cleanly.
kernel_run() {
  local name=$1
  kernel_start "$@"
  local rc=0
  kernel_wait || rc=$?
  [ $rc -eq 2 ] && kernel_guest_fail "$name" "qemu did not power off within ${KERNEL_TIMEOUT}s (killed)"
  [ $rc -eq 0 ] || kernel_guest_fail "$name" "qemu exited without the guest's DONE line"
  local last
  last=$(grep "^UGFS2G DONE" "$T/$name.serial.log" | tail -1)
  [[ "$last" == *"mount=0 cmd=0 umount=0"* ]] || kernel_guest_fail "$name" "$last"
}

# kernel_smoke: one boot on a fresh image. Skips when qemu cannot run here at all (it exits at
# once, or never reaches the guest's /init); fails when the guest ran but gfs2 did not work.
# Also probes whether this kernel reads device numbers back from disk: sets KERNEL_RDEV_OK=0
# when a device node it made reads back otherwise after a remount (a bug of some kernels).
KERNEL_RDEV_OK=1
kernel_smoke() {
  local img=$T/smoke.img
  make_image "$img" 64M 4096
  cat >"$T/smoke.sh" <<'EOF'
echo smoke >"$MNT/smoke" && cat "$MNT/smoke" || exit 1
mknod "$MNT/probe-chr" c 250 70000 || exit 1
umount "$MNT" && mount -t gfs2 -o lockproto=lock_nolock /dev/vda "$MNT" || exit 1
echo "UGFS2G RDEV $(stat -c %t:%T "$MNT/probe-chr")"
EOF
  kernel_start smoke "$img" "$T/smoke.sh"
  local rc=0
  kernel_wait || rc=$?
  if [ $rc -ne 0 ]; then
    if ! grep -q "^UGFS2G INIT" "$T/smoke.serial.log"; then
      local why="qemu exited without starting the guest's /init"
      [ $rc -eq 2 ] && why="the guest did not reach its /init within ${KERNEL_TIMEOUT}s"
      skip "qemu cannot run a guest here (accel $KERNEL_ACCEL): $why;" \
           "qemu said '$(head -3 "$T/smoke.qemu.log" | tr '\n' ' ')'," \
           "serial console: '$(tail -3 "$T/smoke.serial.log" | tr '\n' ' ')'"
    fi
    kernel_guest_fail smoke "smoke boot did not finish"
  fi
  grep -q "^UGFS2G DONE mount=0 cmd=0 umount=0" "$T/smoke.serial.log" ||
    kernel_guest_fail smoke "smoke boot: $(grep '^UGFS2G' "$T/smoke.serial.log" | tr '\n' ' ')"
  local rdev
  rdev=$(sed -n 's/^UGFS2G RDEV \([0-9a-f:]*\).*/\1/p' "$T/smoke.serial.log")
  if [ "$rdev" != "fa:11170" ]; then
    KERNEL_RDEV_OK=0
    log "note: kernel $KERNEL_VER reads its own device node c 250:70000 back as '$rdev' after a" \
        "remount (a kernel bug): the guest's device numbers are not compared; the host checks" \
        "ugfs2's against the on-disk dinodes instead"
  fi
  check_clean "$img"
  rm -f "$img"
}

# kernel_mask_rdev FILE: the manifest, with the major:minor of device nodes blanked when this
# kernel cannot be trusted with them (see kernel_smoke).
kernel_mask_rdev() {
  if [ "$KERNEL_RDEV_OK" = 1 ]; then
    cat "$1"
  else
    awk -F'|' -v OFS='|' '$2 == "chr" || $2 == "blk" { $10 = "(rdev not compared)" } { print }' "$1"
  fi
}
