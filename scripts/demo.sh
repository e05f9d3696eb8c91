#!/usr/bin/env bash
# The main job: set everything up, make a small busybox root filesystem, and run a
# container in its own VM, showing what happened and how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
scripts/setup.sh --release
cabin=target/release/cabin
rootfs="${XDG_CACHE_HOME:-$HOME/.cache}/cabin/demo/busybox-rootfs"
if [ ! -x "$rootfs/bin/busybox" ]; then
  printf '\033[1m==> making a busybox root filesystem in %s\033[0m\n' "$rootfs" >&2
  scripts/make-busybox-rootfs.sh "$rootfs" >/dev/null
fi
ready=$(date +%s.%N)

printf '\n\033[1m==> cabin system info\033[0m\n'
"$cabin" system info
printf '\n\033[1m==> cabin image import %s busybox:demo\033[0m\n' "$rootfs"
"$cabin" image import "$rootfs" busybox:demo
"$cabin" image ls
script='
  echo "Hello from a container in its own VM."
  echo "kernel:   $(uname -sr)"
  echo "hostname: $(hostname)"
  echo "user:     $(id)"
  echo "pid:      $$ (PID 1 of the container)"
  echo "root:     $(grep " / " /proc/mounts)"'
printf '\n\033[1m==> cabin run --rm --timings busybox:demo sh -c ... (booting the VM)\033[0m\n'
t0=$(date +%s.%N)
CABIN_SNAPSHOTS=off "$cabin" run --rm --timings busybox:demo sh -c "$script"
t1=$(date +%s.%N)
printf '\n\033[1m==> cabin system prepare (save a booted, idle VM to resume from)\033[0m\n'
"$cabin" system prepare
printf '\n\033[1m==> cabin run --rm --timings busybox:demo sh -c ... (resuming the saved VM)\033[0m\n'
t2=$(date +%s.%N)
"$cabin" run --rm --timings busybox:demo sh -c "$script"
t3=$(date +%s.%N)
printf '\n\033[1m==> done\033[0m: set-up %.1f s; container run, start to exit: %.2f s booting, %.2f s from the boot snapshot\n' \
  "$(echo "$ready - $start" | bc)" "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)"
