#!/bin/busybox sh
# /init of the kernel-interop initramfs (built by kernel_lib.sh; runs under busybox in qemu).
# Loads the modules of /modules.list, mounts the gfs2 volume on /dev/vda at /mnt (lock_nolock),
# runs /cmd.sh with MNT=/mnt OUT=/out (stdout and stderr on the serial console), unmounts, writes
# /out (plus the guest's dmesg) as a tar archive to /dev/vdb and powers off. Every line of its
# own starts with "UGFS2G "; the last one is "UGFS2G DONE mount=RC cmd=RC umount=RC".
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "UGFS2G INIT $(uname -r)"
for m in $(cat /modules.list); do
  insmod "/lib/modules/$m" || echo "UGFS2G insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
  i=$((i + 1))
  [ $i -gt 300 ] && break
  sleep 0.1
done
mrc=1
crc=-1
urc=-1
mount -t gfs2 -o lockproto=lock_nolock /dev/vda /mnt
mrc=$?
echo "UGFS2G MOUNT rc=$mrc at $(cut -d' ' -f1 /proc/uptime)s"
if [ $mrc -eq 0 ]; then
  MNT=/mnt OUT=/out sh /cmd.sh </dev/null
  crc=$?
  echo "UGFS2G CMD rc=$crc"
  umount /mnt
  urc=$?
fi
dmesg >/out/dmesg
tar -c -C /out . | dd of=/dev/vdb bs=65536 conv=fsync 2>/dev/null
sync
echo "UGFS2G DONE mount=$mrc cmd=$crc umount=$urc"
poweroff -f
