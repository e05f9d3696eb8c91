#!/usr/bin/env bash
# Makes a small root filesystem from Debian's busybox-static: one static binary, a link
# per applet, and the /etc files containers expect.   usage: make-busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
bb=/bin/busybox
[ -x "$bb" ] || { echo "make-busybox-rootfs: $bb is missing; install it with: apt-get install busybox-static" >&2; exit 1; }
if ! file -L "$bb" 2>/dev/null | grep -q 'statically linked' && ldd "$bb" >/dev/null 2>&1; then
  echo "make-busybox-rootfs: $bb is not static; install busybox-static" >&2; exit 1
fi
mkdir -p "$dir"/{bin,sbin,etc,root,tmp,var/tmp,home/user,usr/bin,usr/sbin}
chmod 1777 "$dir/tmp" "$dir/var/tmp"
cp "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list); do
  [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
done
cat > "$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:Demo User:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$dir/etc/group" <<'G'
root:x:0:
daemon:x:1:
tty:x:5:
wheel:x:10:root,user
users:x:100:user
user:x:1000:
nogroup:x:65534:
G
chown -R 1000:1000 "$dir/home/user" 2>/dev/null || true
echo "$dir"
