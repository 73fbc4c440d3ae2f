#!/usr/bin/env bash
# Permissions like a kernel filesystem (default_permissions + allow_other), exercised as
# unprivileged users via setpriv: mode bits, sticky directories, setgid-directory inheritance,
# suid/sgid cleared on write by a non-owner and on chown, chmod of sgid by a non-member.
source "$(dirname "$0")/fs_lib.sh"
fs_init
command -v setpriv >/dev/null || skip "setpriv missing"

U1=65534   # nobody
U2=4000
as() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --clear-groups -- "$@"; }
as_in() { local u=$1 g=$2; shift 2; setpriv --reuid="$u" --regid="$u" --groups="$g" -- "$@"; }

img=$T/perms.img
mnt=$T/m
make_image "$img" 128M 4096
mount_fs "$img" "$mnt" allow_other
chmod 755 "$mnt"

# Mode bits.
echo secret >"$mnt/private"; chmod 600 "$mnt/private"
echo public >"$mnt/public"; chmod 644 "$mnt/public"
as $U1 cat "$mnt/private" >/dev/null 2>&1 && fail "nobody read a 0600 root file"
expect_eq "world-readable" "$(as $U1 cat "$mnt/public")" "public"
as $U1 sh -c "echo x >>'$mnt/public'" 2>/dev/null && fail "nobody wrote a 0644 root file"
as $U1 touch "$mnt/newfile" 2>/dev/null && fail "nobody created a file in a 0755 root dir"
as $U1 chmod 777 "$mnt/public" 2>/dev/null && fail "nobody chmodded a root file"
as $U1 chown $U1 "$mnt/public" 2>/dev/null && fail "nobody chowned a root file"

# Sticky directory.
mkdir "$mnt/tmp"; chmod 1777 "$mnt/tmp"
as $U1 sh -c "echo mine >'$mnt/tmp/u1file'" || fail "create in sticky dir"
expect_eq "owner of created file" "$(stat -c %u:%g "$mnt/tmp/u1file")" "$U1:$U1"
as $U2 rm -f "$mnt/tmp/u1file" 2>/dev/null
[ -e "$mnt/tmp/u1file" ] || fail "another user deleted a file in a sticky dir"
as $U2 mv "$mnt/tmp/u1file" "$mnt/tmp/stolen" 2>/dev/null
[ -e "$mnt/tmp/u1file" ] || fail "another user renamed a file in a sticky dir"
as $U1 rm "$mnt/tmp/u1file" || fail "owner could not delete in sticky dir"
mkdir "$mnt/open"; chmod 0777 "$mnt/open"
as $U1 touch "$mnt/open/f"
as $U2 rm -f "$mnt/open/f" || fail "delete in a non-sticky 0777 dir"

# setgid directory: new files get the directory's group, new subdirs also keep the bit.
mkdir "$mnt/sg"; chgrp 4242 "$mnt/sg"; chmod 2777 "$mnt/sg"
as $U1 touch "$mnt/sg/file" || fail "create in setgid dir"
as $U1 mkdir "$mnt/sg/sub" || fail "mkdir in setgid dir"
expect_eq "file group in setgid dir" "$(stat -c %g "$mnt/sg/file")" "4242"
expect_eq "subdir group" "$(stat -c %g "$mnt/sg/sub")" "4242"
expect_eq "subdir keeps setgid" "$(( 0$(stat -c %a "$mnt/sg/sub") & 02000 ))" "1024"
expect_eq "file owner" "$(stat -c %u "$mnt/sg/file")" "$U1"

# suid/sgid cleared when a non-owner writes.
echo x >"$mnt/suid"; chmod 6777 "$mnt/suid"
expect_eq "mode before" "$(stat -c %a "$mnt/suid")" "6777"
as $U1 sh -c "echo more >>'$mnt/suid'" || fail "non-owner write to a 0777 file"
expect_eq "suid/sgid after non-owner write" "$(stat -c %a "$mnt/suid")" "777"
# ... and when a non-owner truncates.
chmod 6777 "$mnt/suid"
as $U1 truncate -s 1 "$mnt/suid" || fail "non-owner truncate"
expect_eq "suid/sgid after non-owner truncate" "$(stat -c %a "$mnt/suid")" "777"
# ... and on chown (by root too) of a non-directory.
chmod 6755 "$mnt/suid"
chown 1234 "$mnt/suid"
expect_eq "suid/sgid after chown" "$(stat -c %a "$mnt/suid")" "755"
# sgid without group-exec survives a write by a member of the file's group, but not by a writer
# outside it (the VFS rule gfs2 follows; FUSE's own kernel code applies only the older g+x rule,
# so the daemon drops it). U1 is not in the file's group.
chmod 2666 "$mnt/suid"
as $U1 sh -c "echo m >>'$mnt/suid'"
expect_eq "sgid without g+x after a write from outside the group" "$(stat -c %a "$mnt/suid")" "666"
# Root writing keeps the bits (CAP_FSETID).
chmod 6777 "$mnt/suid"
echo r >>"$mnt/suid"
expect_eq "root write keeps suid" "$(stat -c %a "$mnt/suid")" "6777"

# chmod g+s by an owner who is not in the file's group: the kernel strips S_ISGID.
as $U1 touch "$mnt/open/own"
chgrp 4242 "$mnt/open/own"
as $U1 chmod 2755 "$mnt/open/own" || fail "owner chmod"
expect_eq "sgid stripped for non-member" "$(stat -c %a "$mnt/open/own")" "755"
as_in $U1 4242 chmod 2755 "$mnt/open/own" || fail "owner chmod as group member"
expect_eq "sgid kept for member" "$(stat -c %a "$mnt/open/own")" "2755"

# The owner may chmod and utime, a stranger may not.
as $U1 touch -d '2001-01-01' "$mnt/open/own" || fail "owner utime"
as $U2 touch -d '2002-01-01' "$mnt/open/own" 2>/dev/null && fail "stranger utime"
as $U2 chmod 777 "$mnt/open/own" 2>/dev/null && fail "stranger chmod"

unmount_fs "$mnt"
check_clean "$img"
mount_fs "$img" "$mnt" allow_other
expect_eq "modes after remount" "$(stat -c %a:%g "$mnt/sg/sub" "$mnt/tmp" | tr '\n' ' ')" \
  "2755:4242 1777:0 "
unmount_fs "$mnt"
check_clean "$img"
