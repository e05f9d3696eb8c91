#!/usr/bin/env bash
# How much guest code a container's start makes TCG translate: under TCG a VM resumed
# from a boot snapshot starts with no translated code, and translating it is most of
# the CPU time its start costs (perf on QEMU: about two thirds). Unlike a timing, the
# count hardly varies with the load of a shared host, so it shows what a change to the
# start's path is worth. Per run, the guest instructions QEMU translated from the resume
# to the end (QEMU's `-d in_asm`, through a wrapper given as CABIN_QEMU), split into the
# guest kernel's, cabin-init's and the container's (the rest of user space); the
# median of N runs of `cabin run --rm` on a busybox tree.
# usage: bench/translated.sh [N] [-- CMD...]   (default: 5 runs of `true`)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
runs_and_command 5 "$@"
cabin=$(cabin_binary)
qemu=$(command -v qemu-system-x86_64)
work=$(mktemp -d /tmp/cabin-translated.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CABIN_DATA_DIR="$work/data" CABIN_ACCEL=tcg
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
# As root, each VM's QEMU runs as a user of its own: it must reach the wrapper, and the
# logs go to a sticky directory.
chmod 711 "$work"
mkdir -m 1777 "$work/logs"
cat > "$work/qemu" <<SH
#!/bin/sh
case "\$*" in
  *-incoming*) exec "$qemu" "\$@" -d in_asm -D "$work/logs/\$\$.log" ;;
esac
exec "$qemu" "\$@"
SH
chmod 755 "$work/qemu"
export CABIN_QEMU="$work/qemu"
# the root filesystem image and the boot snapshot (for this wrapper: it is in the key)
CABIN_SNAPSHOTS=off "$cabin" run --rm --rootfs "$work/rootfs" true >/dev/null 2>&1
"$cabin" system prepare >/dev/null 2>&1
rm -f "$work"/logs/*
for _ in $(seq "$N"); do
  "$cabin" run --rm --rootfs "$work/rootfs" "${CMD[@]}" >/dev/null 2>&1 || true
done
python3 - "$work/logs" "$N" <<'PY'
import os, re, statistics, sys
logs, n = sys.argv[1], int(sys.argv[2])
rows = []
for name in sorted(os.listdir(logs)):
    kernel = init = other = 0
    with open(os.path.join(logs, name), errors="replace") as f:
        for line in f:
            m = re.match(r"0x([0-9a-f]+):", line)
            if not m:
                continue
            a = int(m.group(1), 16)
            if a >= 0xffff800000000000:
                kernel += 1
            elif a >= 0x7f0000000000:
                # cabin-init is a static PIE: the kernel maps it high; busybox and most
                # container binaries are not, and a dynamic one's libraries count here
                init += 1
            else:
                other += 1
    rows.append((kernel, init, other))
if len(rows) != n:
    sys.exit(f"expected {n} logs of resumed VMs, found {len(rows)}: did the runs resume?")
med = lambda i: statistics.median(r[i] for r in rows)
print(f"guest instructions TCG translated per `cabin run --rm` resumed from a boot snapshot (median of {n})")
print(f"{'guest kernel':<28}{med(0):>10.0f}")
print(f"{'cabin-init (and mapped high)':<28}{med(1):>10.0f}")
print(f"{'the container (low)':<28}{med(2):>10.0f}")
print(f"{'total':<28}{statistics.median(sum(r) for r in rows):>10.0f}")
PY
