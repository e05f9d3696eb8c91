#!/usr/bin/env bash
# Boot benchmark, all figures from one run on this machine:
#  (a) floor: raw `qemu-system-x86_64 -M microvm` booting cabin's kernel with a trivial
#      static init that reboots at once (QEMU exits), same accelerator and devices class;
#  (b) `cabin run --rm --rootfs <busybox> true`, warm caches (root filesystem image and
#      boot snapshot), end to end;
#  (c) from `cabin run` starting to the container's process running (host-observed,
#      the "process started" mark of --timings);
#  (d), (e): (b) and (c) with CABIN_SNAPSHOTS=off, booting the kernel every time;
#  and the host memory (PSS) of an idle container VM (QEMU + the cabin process) next to
#  raw QEMU idling on the same kernel with a trivial init.
# usage: bench/boot.sh [N]   (N >= 10 runs per series; default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
kernel=${CABIN_KERNEL:-$HOME/.cache/cabin/kernel/current/vmlinux}
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export CABIN_DATA_DIR="$work/data"
accel=$("$cabin" system info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])')
export CABIN_ACCEL=$accel
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null

# Trivial inits for the raw QEMU floor: one reboots at once, one idles.
cat > "$work/reboot.c" <<'C'
#include <sys/reboot.h>
int main(void) { reboot(RB_AUTOBOOT); return 0; }
C
cat > "$work/idle.c" <<'C'
#include <unistd.h>
int main(void) { for (;;) pause(); }
C
mkinitrd() { # $1 = C source, $2 = output cpio
  local d; d=$(mktemp -d "$work/initrd.XXXX")
  gcc -static -O2 -o "$d/init" "$1"
  (cd "$d" && mkdir dev && echo init | cpio -o -H newc --quiet > "$2")
}
mkinitrd "$work/reboot.c" "$work/reboot.cpio"
mkinitrd "$work/idle.c" "$work/idle.cpio"
if [ "$accel" = kvm ]; then accel_args=(-accel kvm -cpu host); else accel_args=(-accel tcg,thread=multi -cpu max); fi
raw_qemu_cmd() { # $1 = initrd: sets the array "cmd"
  cmd=(qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot
    -M microvm,acpi=off,x-option-roms=off,rtc=on "${accel_args[@]}" -smp 1 -m 512M
    -kernel "$kernel" -initrd "$1" -append "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init"
    -serial "file:$work/raw-console.log" -device virtio-rng-device)
}
raw_qemu() { raw_qemu_cmd "$1"; "${cmd[@]}"; }
now() { date +%s%N; }

# warm caches: rootfs image, initramfs, boot snapshot, page cache
CABIN_SNAPSHOTS=off "$cabin" run --rm --rootfs "$work/rootfs" true
"$cabin" system prepare >/dev/null
raw_qemu "$work/reboot.cpio"

declare -a A B C D E
timed_run() { # $1, $2 = names of the arrays for end-to-end and process-started times
  local t0 t1
  t0=$(now); "$cabin" run --rm --timings --rootfs "$work/rootfs" true 2> "$work/timings"; t1=$(now)
  eval "$1+=($(( (t1 - t0) / 1000 )))"
  eval "$2+=($(awk '/^process started/ {printf "%d", $3 * 1000}' "$work/timings"))"
}
for i in $(seq "$N"); do
  t0=$(now); raw_qemu "$work/reboot.cpio"; t1=$(now)
  A+=($(( (t1 - t0) / 1000 )))
  timed_run B C
  grep -q "resumed from boot snapshot" "$work/timings" || { echo "run $i did not resume from the snapshot" >&2; exit 1; }
  CABIN_SNAPSHOTS=off timed_run D E
done

# Memory: an idle container VM (QEMU + cabin run) vs raw QEMU idling.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
"$cabin" run --rm --rootfs "$work/rootfs" -- sh -c 'trap "exit 0" TERM; echo ready; while :; do sleep 1; done' > "$work/ready" &
cabin_pid=$!
for _ in $(seq 600); do grep -q ready "$work/ready" 2>/dev/null && break; sleep 0.1; done
sleep 2
qemu_pid=$(cat "$CABIN_DATA_DIR"/run/*/vmm.pid)
cabin_qemu_pss=$(pss_kib "$qemu_pid"); cabin_self_pss=$(pss_kib "$cabin_pid")
kill -TERM "$cabin_pid"; wait "$cabin_pid" || true
raw_qemu_cmd "$work/idle.cpio"; "${cmd[@]}" 2>/dev/null & raw_pid=$!
sleep 4
raw_pss=$(pss_kib "$raw_pid"); kill "$raw_pid"; wait "$raw_pid" 2>/dev/null || true

python3 - "$accel" "$N" "${A[*]}" "${B[*]}" "${C[*]}" "${D[*]}" "${E[*]}" "$cabin_qemu_pss" "$cabin_self_pss" "$raw_pss" <<'PY'
import statistics, sys
accel, n = sys.argv[1], sys.argv[2]
series = [list(map(int, s.split())) for s in sys.argv[3:8]]
qemu_pss, cabin_pss, raw_pss = map(int, sys.argv[8:11])
names = ["(a) raw QEMU microvm boot to exit (floor)", "(b) cabin run --rm true, end to end",
         "(c) cabin run start to process running", "(d) (b) booting, no snapshot",
         "(e) (c) booting, no snapshot"]
print(f"accelerator: {accel}, runs per series: {n}")
print(f"{'series':<44} {'min ms':>8} {'median ms':>10} {'max ms':>8}")
for name, s in zip(names, series):
    print(f"{name:<44} {min(s)/1e3:>8.1f} {statistics.median(s)/1e3:>10.1f} {max(s)/1e3:>8.1f}")
ratio = statistics.median(series[1]) / statistics.median(series[0])
print(f"(b)/(a) median ratio: {ratio:.2f} (target <= 1.30)")
cold = statistics.median(series[3]) / statistics.median(series[0])
print(f"(d)/(a) median ratio: {cold:.2f} (the first run of a VM shape, before its snapshot exists)")
print(f"idle memory (PSS): cabin VM QEMU {qemu_pss/1024:.1f} MiB + cabin run {cabin_pss/1024:.1f} MiB = {(qemu_pss+cabin_pss)/1024:.1f} MiB; raw QEMU {raw_pss/1024:.1f} MiB")
PY
