#!/usr/bin/env bash
# Makes a minimal Debian 12 root filesystem with debootstrap (from the Debian mirror),
# once: later calls reuse it.   usage: make-debian-rootfs.sh [--system] [DIR]
# --system: a bootable system for full VMs (`cabin vm create --image`): systemd as init
# with udev (device units: the serial login) and D-Bus (logind: the ACPI power button),
# an SSH server and iproute2 on top of the minimal base.
# Default DIR: ${XDG_CACHE_HOME:-~/.cache}/cabin/test-rootfs/debian-bookworm[-system]
set -euo pipefail
include=()
flavour=debian-bookworm
if [ "${1:-}" = --system ]; then
  include=(--include=systemd-sysv,udev,dbus,openssh-server,iproute2)
  flavour=debian-bookworm-system2   # bump the number when the package list changes
  shift
fi
dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/cabin/test-rootfs/$flavour}
if [ -f "$dir/.complete" ]; then echo "$dir"; exit 0; fi
command -v debootstrap >/dev/null || { echo "make-debian-rootfs: debootstrap is missing; apt-get install debootstrap" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "make-debian-rootfs: debootstrap needs root" >&2; exit 1; }
tmp="$dir.partial"
rm -rf "$tmp"
mkdir -p "$(dirname "$dir")"
echo "make-debian-rootfs: debootstrap --variant=minbase ${include[*]} bookworm (a few minutes)" >&2
debootstrap --variant=minbase "${include[@]}" bookworm "$tmp" http://deb.debian.org/debian >"$tmp.log" 2>&1 || {
  tail -n 20 "$tmp.log" >&2; echo "make-debian-rootfs: debootstrap failed (log above)" >&2; exit 1; }
# Nothing the image needs: package caches and logs.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/*.log
rm -rf "$dir" && mv "$tmp" "$dir" && rm -f "$tmp.log"
touch "$dir/.complete"
echo "$dir"
