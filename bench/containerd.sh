#!/usr/bin/env bash
# containerd benchmark, all figures from one run on this machine, one private
# containerd (Debian's 1.6: its own socket, root and state) and one image (busybox):
#  (a) `ctr run --rm --runtime io.containerd.cabin.v2 busybox true`: a task in a VM of
#      cabin's, through containerd-shim-cabin-v2, end to end;
#  (b) `ctr run --rm busybox true` with runc (io.containerd.runc.v2), no VM at all;
#  (c) `cabin run --rm busybox true` on the same machine, cabin's own front end;
#  and what one idle task costs the host (a pod's RuntimeClass `overhead`): the PSS of
#  its shim, its supervisor and its VM's QEMU, with the VM's memory size.
# Boot snapshots are on (cabin's default): (a) and (c) resume their VMs.
# usage: bench/containerd.sh [N]   (N runs per series; default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10}
cabin=${CABIN_BIN:-target/release/cabin}
shim="$(dirname "$cabin")/containerd-shim-cabin-v2"
[ -x "$cabin" ] && [ -x "$shim" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench-ctrd.XXXXXX)
containerd_pid=
cleanup() {
  ctr -a "$work/containerd.sock" task kill -s SIGKILL idle >/dev/null 2>&1 || true
  sleep 1
  ctr -a "$work/containerd.sock" task delete idle >/dev/null 2>&1 || true
  [ -z "$containerd_pid" ] || { kill "$containerd_pid" 2>/dev/null; wait "$containerd_pid" 2>/dev/null || true; }
  pkill -9 -f "containerd-shim-cabin-v2.*$work" 2>/dev/null || true
  "$cabin" rm -f $("$cabin" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export CABIN_DATA_DIR="$work/data"
accel=$(host_accel "$cabin")
export CABIN_ACCEL=$accel
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
"$cabin" image import "$work/rootfs" busybox:demo >/dev/null
"$cabin" image save busybox:demo -o "$work/bb.tar" >/dev/null
"$cabin" system prepare >/dev/null

mkdir -p "$work/bin"
ln -s "$(readlink -f "$shim")" "$work/bin/containerd-shim-cabin-v2"
cat > "$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
EOF
PATH="$work/bin:$PATH" CABIN_BIN="$(readlink -f "$cabin")" containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
ctr=(ctr -a "$work/containerd.sock")
for _ in $(seq 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${ctr[@]}" image import "$work/bb.tar" >/dev/null

now() { date +%s%N; }
declare -a A B C
# warm: the disk built from the snapshot, page cache, runc's first start
"${ctr[@]}" run --rm --runtime io.containerd.cabin.v2 busybox:demo warm1 true
"${ctr[@]}" run --rm busybox:demo warm2 true
"$cabin" run --rm busybox:demo true
for i in $(seq "$N"); do
  t0=$(now); "${ctr[@]}" run --rm --runtime io.containerd.cabin.v2 busybox:demo "a$i" true; t1=$(now)
  A+=($(( (t1 - t0) / 1000000 )))
  t0=$(now); "${ctr[@]}" run --rm busybox:demo "b$i" true; t1=$(now)
  B+=($(( (t1 - t0) / 1000000 )))
  t0=$(now); "$cabin" run --rm busybox:demo true; t1=$(now)
  C+=($(( (t1 - t0) / 1000000 )))
done

# One idle task: its shim, supervisor and QEMU.
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
"${ctr[@]}" run -d --runtime io.containerd.cabin.v2 busybox:demo idle sleep 600 >/dev/null
sleep 5
shim_pid=$(pgrep -f "containerd-shim-cabin-v2.*-id idle.*$work" | head -1)
qemu_pid=$(cat "$CABIN_DATA_DIR"/run/*/vmm.pid | head -1)
sup_pid=$(pgrep -f "cabin container supervise" | head -1)
shim_pss=$(pss_kib "$shim_pid"); sup_pss=$(pss_kib "$sup_pid"); qemu_pss=$(pss_kib "$qemu_pid")
vm_mib=$(tr '\0' ' ' < "/proc/$qemu_pid/cmdline" | grep -o -- '-m [0-9]*[MG]*' | head -1 | awk '{print $2}')

python3 - "$accel" "$N" "${A[*]}" "${B[*]}" "${C[*]}" "$shim_pss" "$sup_pss" "$qemu_pss" "$vm_mib" <<'PY'
import statistics, sys
accel, n = sys.argv[1], sys.argv[2]
series = [list(map(int, s.split())) for s in sys.argv[3:6]]
shim, sup, qemu = (int(x) for x in sys.argv[6:9])
vm = sys.argv[9]
med = [statistics.median(s) for s in series]
print(f"accelerator: {accel}, {n} runs per series, busybox, medians (min-max)")
names = [
    "ctr run --rm, cabin's shim (a VM per task)",
    "ctr run --rm, runc (no VM)",
    "cabin run --rm",
]
for name, s, m in zip(names, series, med):
    print(f"  {name:44s} {m:6.0f} ms ({min(s)}-{max(s)})   {m / med[1]:.2f}x runc")
print(f"  cabin's shim over cabin run: {med[0] - med[2]:+.0f} ms")
total = shim + sup + qemu
print(f"one idle task on the host (PSS): shim {shim // 1024} MiB + supervisor {sup // 1024} MiB"
      f" + QEMU {qemu // 1024} MiB = {total // 1024} MiB (VM memory size {vm})")
PY
