#!/usr/bin/env bash
# Extended attributes and POSIX ACLs on a real mount: setfattr/getfattr (user, trusted, security;
# a 64 KiB value; hundreds of attributes), the kernel's ENODATA/ERANGE/E2BIG answers, ACLs
# enforced for another user, default-ACL inheritance, the umask without one, chmod rewriting the
# mask, -o noacl, and attributes surviving a kill -9 after fsync (journal replay). fsck CLEAN.
source "$(dirname "$0")/fs_lib.sh"
fs_init
command -v setfattr >/dev/null && command -v setfacl >/dev/null || skip "attr/acl tools missing"

img=$T/vol.img
mnt=$T/m
make_image "$img" 256M 4096
mount_fs "$img" "$mnt" allow_other
chmod 755 "$mnt"

log "user / trusted / security attributes"
touch "$mnt/f"
setfattr -n user.color -v blue "$mnt/f" || fail "setfattr user"
setfattr -n trusted.t -v 1 "$mnt/f" || fail "setfattr trusted"
setfattr -n security.s -v 2 "$mnt/f" || fail "setfattr security"
expect_eq "user.color" "$(getfattr --only-values -n user.color "$mnt/f")" blue
head -c 65536 /dev/urandom >"$T/big"
python3 -c "import os,sys; os.setxattr(sys.argv[1], 'user.big', open(sys.argv[2],'rb').read())" "$mnt/f" "$T/big" ||
  fail "64 KiB value"
python3 -c "
import os, sys, errno
f, big = sys.argv[1], open(sys.argv[2], 'rb').read()
assert os.getxattr(f, 'user.big') == big, '64 KiB value differs'
for name, err in (('user.none', errno.ENODATA),):
    try:
        os.getxattr(f, name); sys.exit('getxattr of a missing name succeeded')
    except OSError as e:
        assert e.errno == err, e
try:
    os.setxattr(f, 'user.huge', b'x' * 65537); sys.exit('a 65537-byte value was accepted')
except OSError as e:
    assert e.errno == errno.E2BIG, e
try:
    os.setxattr(f, 'user.' + 'n' * 256, b'x'); sys.exit('a 256-byte name was accepted')
except OSError as e:
    assert e.errno == errno.ERANGE, e
for i in range(300):
    os.setxattr(f, 'user.many-%d' % i, b'v' * (i % 50))
names = os.listxattr(f)
assert len([n for n in names if n.startswith('user.many-')]) == 300, len(names)
for i in range(0, 300, 2):
    os.removexattr(f, 'user.many-%d' % i)
assert len(os.listxattr(f)) == 150 + 4, os.listxattr(f)
" "$mnt/f" "$T/big" || fail "xattr semantics"
getfattr -d -m - "$mnt/f" >/dev/null || fail "getfattr -d"

log "ACLs are enforced for another user"
echo secret >"$mnt/acl-file"
chmod 644 "$mnt/acl-file"
setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$mnt/acl-file" >/dev/null ||
  fail "nobody cannot read a 644 file"
setfacl -m u:nobody:--- "$mnt/acl-file" || fail "setfacl"
setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$mnt/acl-file" >/dev/null 2>&1 &&
  fail "ACL u:nobody:--- not enforced"
getfacl -p "$mnt/acl-file" | grep -q "^user:nobody:---" || fail "getfacl: $(getfacl -p "$mnt/acl-file")"
chmod 600 "$mnt/acl-file"
getfacl -p "$mnt/acl-file" | grep -q "^mask::---" || fail "chmod did not rewrite the mask"
setfacl -b "$mnt/acl-file" || fail "setfacl -b"
getfattr -n system.posix_acl_access "$mnt/acl-file" >/dev/null 2>&1 && fail "ACL left after setfacl -b"

log "default ACL inheritance; the umask without one"
mkdir "$mnt/inherit"
setfacl -d -m u:nobody:rwx,g::r-x,o::--- "$mnt/inherit" || fail "setfacl -d"
(umask 077; touch "$mnt/inherit/child"; mkdir "$mnt/inherit/sub"; touch "$mnt/plain")
getfacl -p "$mnt/inherit/child" | grep -q "^user:nobody:rwx" || fail "child ACL: $(getfacl -p "$mnt/inherit/child")"
getfacl -p "$mnt/inherit/sub" | grep -q "^default:user:nobody:rwx" || fail "subdir default ACL"
expect_eq "mode without a default ACL (umask 077)" "$(stat -c %a "$mnt/plain")" 600
setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c "echo hi >>'$mnt/inherit/child'" ||
  fail "inherited ACL does not grant nobody write"

log "attributes survive kill -9 after fsync"
setfattr -n user.durable -v kept "$mnt/inherit/child"
sync "$mnt/inherit/child"
kill -9 "${FS_PIDS[$mnt]}"
wait "${FS_PIDS[$mnt]}" 2>/dev/null
unset "FS_PIDS[$mnt]"
umount -l "$mnt" 2>/dev/null
mount_fs "$img" "$mnt" allow_other
expect_eq "user.durable after replay" "$(getfattr --only-values -n user.durable "$mnt/inherit/child")" kept
getfacl -p "$mnt/inherit/child" | grep -q "^user:nobody:rwx" || fail "ACL lost in replay"
unmount_fs "$mnt"
check_clean "$img"

log "-o noacl: ACLs refused, user attributes still work"
mount_fs "$img" "$mnt" noacl
setfacl -m u:nobody:r "$mnt/f" 2>/dev/null && fail "setfacl worked with noacl"
setfattr -n user.more -v 1 "$mnt/f" || fail "user xattr with noacl"
unmount_fs "$mnt"
check_clean "$img"
