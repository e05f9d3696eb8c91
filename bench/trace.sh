#!/usr/bin/env bash
# Where a container start's time goes, host and guest side, median of N runs:
# `cabin run --timings` for the host's phases, and cabin-init's own trace marks (printed
# to the guest console when the kernel command line has `cabin.trace`) for the guest's.
# usage: bench/trace.sh [N] [-- CMD...]   (default: 8 runs of `true` in a busybox tree)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
runs_and_command 8 "$@"
cabin=$(cabin_binary)
work=$(mktemp -d /tmp/cabin-trace.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CABIN_DATA_DIR="$work/data"
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
# warm the caches: root filesystem image, and the boot snapshot for traced VMs (unless
# CABIN_SNAPSHOTS=off, to trace booting VMs)
args="${CABIN_KERNEL_ARGS:-} cabin.trace"
CABIN_SNAPSHOTS=off "$cabin" run --rm --rootfs "$work/rootfs" true 2>/dev/null
CABIN_KERNEL_ARGS="$args" "$cabin" system prepare >/dev/null 2>&1 || true

python3 - "$cabin" "$work" "$N" "${CMD[@]}" <<'PY'
import os, re, statistics, subprocess, sys
cabin, work, n, cmd = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:] or ["true"]
console = os.path.join(work, "console.log")
env = dict(os.environ, CABIN_KEEP_CONSOLE=console,
           CABIN_KERNEL_ARGS=(os.environ.get("CABIN_KERNEL_ARGS", "") + " cabin.trace").strip())
rows, order = {}, []
def add(key, value):
    if key not in rows:
        rows[key] = []
        order.append(key)
    rows[key].append(value)
for _ in range(n):
    r = subprocess.run([cabin, "run", "--rm", "--timings", "--rootfs", os.path.join(work, "rootfs")] + cmd,
                       env=env, capture_output=True, text=True)
    for line in r.stderr.splitlines():
        m = re.match(r"(\D+?)\s+([\d.]+)\s+([\d.]+)(.*)", line)
        if not m or line.startswith("cabin"):
            continue
        add("host: " + m.group(1).strip(), float(m.group(3)))
        b = re.search(r"booted in ([\d.]+) ms, init ready ([\d.]+)", line)
        if b:
            add("  guest: kernel boot (guest clock)", float(b.group(1)))
            add("  guest: init start to answering", float(b.group(2)))
    prev = None
    for line in open(console, errors="replace"):
        m = re.match(r"cabin-init: trace ([\d.]+) (.*)", line.strip())
        if m:
            t = float(m.group(1))
            if prev is not None:
                add("  guest: to " + m.group(2), t - prev)
            prev = t
print(f"median of {n} runs of {' '.join(cmd)!r} (ms)")
for k in order:
    print(f"{k:<48} {statistics.median(rows[k]):8.1f}")
PY
