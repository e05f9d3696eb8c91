#!/usr/bin/env bash
# Boot benchmark, all figures from one run on this machine:
#  (a) floor: raw `qemu-system-x86_64 -M microvm` booting cabin's kernel with a trivial
#      static init that reboots at once (QEMU exits), same accelerator and devices class;
#  (b) `cabin run --rm --rootfs <busybox> true`, warm caches (root filesystem image and
#      boot snapshot), end to end;
#  (c) from `cabin run` starting to the container's process running (host-observed,
#      the "process started" mark of --timings);
#  (d), (e): (b) and (c) with CABIN_SNAPSHOTS=off, booting the kernel every time;
#  (f) `docker run --rm --network none bb true` against Debian's dockerd with runc (no VM
#      at all; private dockerd without bridge or iptables), when dockerd is installed;
#  (g) (b) with `cabin serve --pool 2` running: the container on a VM resumed and warmed
#      up ahead (the run waits until the pool is full again, so its refill is not timed),
#      and a waiting VM's memory;
#  and the host memory of idle containers: IDLE (default 6) detached busybox containers
#  sleeping, the PSS of each one's QEMU (median), how much of it is TCG's translated
#  code (none under KVM) and the pages shared with the other VMs through the snapshot
#  template's memory, next to raw QEMU idling on the same kernel with a trivial init.
# usage: bench/boot.sh [N] [IDLE]   (N >= 10 runs per series; default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
IDLE=${2:-6}
source bench/lib.sh
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
kernel=${CABIN_KERNEL:-$HOME/.cache/cabin/kernel/current/vmlinux}
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
dockerd_pid=
cleanup() {
  "$cabin" rm -f $("$cabin" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  [ -z "$dockerd_pid" ] || { kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
export CABIN_DATA_DIR="$work/data"
accel=$(host_accel "$cabin")
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
    -kernel "$kernel" -initrd "$1" -append "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init tsc=reliable"
    -serial "file:$work/raw-console.log" -device virtio-rng-device)
}
raw_qemu() { raw_qemu_cmd "$1"; "${cmd[@]}"; }
now() { date +%s%N; }

# warm caches: rootfs image, initramfs, boot snapshot, page cache
CABIN_SNAPSHOTS=off "$cabin" run --rm --rootfs "$work/rootfs" true
"$cabin" system prepare >/dev/null
raw_qemu "$work/reboot.cpio"

declare -a A B C D E F
docker_run=()
if command -v dockerd >/dev/null && start_private_dockerd "$work"; then
  tar -C "$work/rootfs" -c . | DOCKER_HOST="unix://$work/dockerd.sock" docker import - bb >/dev/null
  docker_run=(env DOCKER_HOST="unix://$work/dockerd.sock" docker run --rm --network none bb true)
  "${docker_run[@]}"
fi
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
  if [ ${#docker_run[@]} -gt 0 ]; then
    t0=$(now); "${docker_run[@]}"; t1=$(now); F+=($(( (t1 - t0) / 1000 )))
  fi
done

pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# (g) the warm pool: `cabin serve --pool 2` keeps VMs resumed and warmed up; each run
# takes one once the pool is full again (its refill is not what is measured), and must
# say it did (the server's log). Then the memory of a VM waiting in the pool.
: > "$work/serve.log"
"$cabin" serve --port 0 --pool 2 >> "$work/serve.log" 2>&1 & serve_pid=$!
ready() { grep -c "pool: VM ready" "$work/serve.log" || true; }
until [ "$(ready)" -ge 2 ]; do sleep 0.2; kill -0 "$serve_pid" || { cat "$work/serve.log" >&2; exit 1; }; done
declare -a G
for i in $(seq "$N"); do
  until [ "$(ready)" -ge $((i + 1)) ]; do sleep 0.2; done
  sleep 1
  t0=$(now); "$cabin" run --rm --rootfs "$work/rootfs" true; t1=$(now)
  G+=($(( (t1 - t0) / 1000 )))
  [ "$(grep -c 'took a warm VM' "$work/serve.log")" -eq "$i" ] || { echo "run $i did not take a VM from the pool" >&2; exit 1; }
done
until [ "$(ready)" -ge $((N + 2)) ]; do sleep 0.2; done
sleep 3
pooled=()
for d in "$CABIN_DATA_DIR"/run/*/; do
  if [ -e "$d/warm-up.raw" ]; then pooled+=("$(pss_kib "$(cat "$d/vmm.pid" 2>/dev/null)")"); fi
done
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
sleep 2

# Memory: IDLE idle containers, each its QEMU's PSS and parts of it, vs raw QEMU idling.
for i in $(seq "$IDLE"); do "$cabin" run -d --name "idle$i" --rootfs "$work/rootfs" -- sleep 100000 >/dev/null; done
sleep 5
mem=()
for d in "$CABIN_DATA_DIR"/run/*/; do
  # Only the idle containers' VMs: a pool member still on its way out has none left.
  qemu_pid=$(cat "$d/vmm.pid" 2>/dev/null) && [ -r "/proc/$qemu_pid/smaps" ] || continue
  # PSS; TCG's code buffer (the anonymous rwx mapping); the template memory's pages
  # shared with other VMs (Shared_*), and those of its own (Private_*).
  mem+=("$(awk -v pss="$(pss_kib "$qemu_pid")" '
    /^[0-9a-f]+-[0-9a-f]+ / { tcg = ($2 == "rwxp" && NF == 5); tpl = ($0 ~ /cabin-template-memory/) }
    tcg && /^Rss:/ { code += $2 }
    tpl && /^Shared_(Clean|Dirty):/ { shared += $2 }
    tpl && /^Private_(Clean|Dirty):/ { own += $2 }
    END { printf "%d,%d,%d,%d", pss, code, shared, own }' "/proc/$qemu_pid/smaps")")
done
sup=$("$cabin" inspect idle1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("supervisor_pid", 0))')
sup_pss=$(pss_kib "$sup" 2>/dev/null || echo 0)
"$cabin" rm -f $("$cabin" ps -q) >/dev/null
raw_qemu_cmd "$work/idle.cpio"; "${cmd[@]}" 2>/dev/null & raw_pid=$!
sleep 4
raw_pss=$(pss_kib "$raw_pid"); kill "$raw_pid"; wait "$raw_pid" 2>/dev/null || true

python3 - "$accel" "$N" "${A[*]}" "${B[*]}" "${C[*]}" "${D[*]}" "${E[*]}" "${F[*]:-}" "$raw_pss" "$sup_pss" "${mem[*]}" "${G[*]}" "${pooled[*]}" <<'PY'
import statistics, sys
accel, n = sys.argv[1], sys.argv[2]
series = [list(map(int, s.split())) for s in sys.argv[3:9]] + [list(map(int, sys.argv[12].split()))]
raw_pss, sup_pss = int(sys.argv[9]), int(sys.argv[10])
mem = [list(map(int, m.split(","))) for m in sys.argv[11].split()]
pooled = [int(p) for p in sys.argv[13].split()]
names = ["(a) raw QEMU microvm boot to exit (floor)", "(b) cabin run --rm true, end to end",
         "(c) cabin run start to process running", "(d) (b) booting, no snapshot",
         "(e) (c) booting, no snapshot", "(f) docker run --rm true, dockerd + runc",
         "(g) (b) from cabin serve --pool 2"]
print(f"accelerator: {accel}, runs per series: {n}")
print(f"{'series':<44} {'min ms':>8} {'median ms':>10} {'max ms':>8}")
for name, s in zip(names, series):
    if s:
        print(f"{name:<44} {min(s)/1e3:>8.1f} {statistics.median(s)/1e3:>10.1f} {max(s)/1e3:>8.1f}")
med = [statistics.median(s) if s else None for s in series]
print(f"(b)/(a) median ratio: {med[1]/med[0]:.2f} (issue 16's target for a restore per request: <= 0.2)")
print(f"(d)/(a) median ratio: {med[3]/med[0]:.2f} (the first run of a VM shape, before its snapshot exists)")
print(f"(g)/(a) median ratio: {med[6]/med[0]:.2f} (issue 16's target for the warm pool: <= 0.05)")
if med[5]:
    print(f"(b)/(f) median ratio: {med[1]/med[5]:.2f} (below 1: cabin's VM starts faster than runc's container)")
    print(f"(g)/(f) median ratio: {med[6]/med[5]:.2f}")
if pooled:
    print(f"a VM waiting in the pool: QEMU PSS {statistics.median(pooled)/1024:.1f} MiB (median of {len(pooled)})")
m = lambda i: statistics.median(v[i] for v in mem) / 1024
print(f"{len(mem)} idle containers, per VM (median MiB): QEMU PSS {m(0):.1f}, of which TCG's translated code "
      f"{m(1):.1f} (none under KVM); template memory shared with the others {m(2):.1f} (RSS), its own {m(3):.1f}")
print(f"  QEMU PSS without TCG's code: {m(0) - m(1):.1f} MiB; a detached container's supervisor adds {sup_pss/1024:.1f} MiB;"
      f" raw QEMU idling on a trivial init: {raw_pss/1024:.1f} MiB")
PY
