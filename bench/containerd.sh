#!/usr/bin/env bash
# containerd benchmark, all figures from one run on this machine, one private
# containerd (Debian's 1.6: its own socket, root and state) and one image (busybox):
#  (a) `ctr run --rm --runtime io.containerd.cabin.v2 busybox true`: a task in a VM of
#      cabin's, through containerd-shim-cabin-v2, end to end;
#  (b) `ctr run --rm busybox true` with runc (io.containerd.runc.v2), no VM at all;
#  (c) `cabin run --rm busybox true` on the same machine, cabin's own front end;
#  and what one idle task costs the host (a pod's RuntimeClass `overhead`): the PSS of
#  its shim, its supervisor and its VM's QEMU, with the VM's memory size;
#  then a pod of two containers (CRI's annotations given by `ctr run --annotation`):
#  its sandbox and both containers running, with cabin (one VM for the pod) and with
#  runc (the containers joining the sandbox's network namespace), and the cabin pod's
#  host memory next to three tasks of a VM each.
# usage: bench/containerd.sh [N]   (N runs per series; default 10; pods: N/2, at least 3)
# Boot snapshots are on (cabin's default): (a) and (c) resume their VMs.
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


# Pods: a sandbox and two containers, all running (`ctr run -d` returns once a task
# has started).
CRI=io.kubernetes.cri
kill_tasks() {
  for t in "$@"; do "${ctr[@]}" task kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  for t in "$@"; do
    for _ in $(seq 100); do "${ctr[@]}" task delete "$t" >/dev/null 2>&1 && break; sleep 0.1; done
    "${ctr[@]}" container delete "$t" >/dev/null 2>&1 || true
  done
}
declare -a P R
rounds=$(( N / 2 > 3 ? N / 2 : 3 ))
pod_pss=0
# Round 0 warms up: the sandbox's VM shape (it has the pod's share) gets its boot
# snapshot.
for i in $(seq 0 "$rounds"); do
  t0=$(now)
  "${ctr[@]}" run -d --runtime io.containerd.cabin.v2 --annotation "$CRI.container-type=sandbox" \
    --annotation "$CRI.sandbox-id=pod$i" busybox:demo "pod$i" sleep 600 >/dev/null
  for m in a b; do
    "${ctr[@]}" run -d --runtime io.containerd.cabin.v2 --annotation "$CRI.container-type=container" \
      --annotation "$CRI.sandbox-id=pod$i" busybox:demo "pod$i-$m" sleep 600 >/dev/null
  done
  t1=$(now)
  [ "$i" = 0 ] || P+=($(( (t1 - t0) / 1000000 )))
  if [ "$i" = 1 ]; then
    sleep 5
    qemus=$(ls "$CABIN_DATA_DIR"/run/*/vmm.pid | wc -l)
    [ "$qemus" = 2 ] || { echo "expected the idle task's VM and one for the pod, found $qemus" >&2; exit 1; }
    pod_shim=$(pgrep -f "containerd-shim-cabin-v2.*-id pod$i .*$work" | head -1)
    pod_qemu=$(grep -L "^$qemu_pid\$" "$CABIN_DATA_DIR"/run/*/vmm.pid | xargs cat | head -1)
    pod_pss=$(( $(pss_kib "$pod_shim") + $(pss_kib "$pod_qemu") ))
    for sup in $(pgrep -f "cabin container supervise"); do
      [ "$sup" = "$sup_pid" ] || pod_pss=$(( pod_pss + $(pss_kib "$sup") ))
    done
  fi
  kill_tasks "pod$i-a" "pod$i-b" "pod$i"

  t0=$(now)
  "${ctr[@]}" run -d busybox:demo "rpod$i" sleep 600 >/dev/null
  pause_pid=$("${ctr[@]}" task ls | awk -v t="rpod$i" '$1 == t {print $2}')
  for m in a b; do
    "${ctr[@]}" run -d --with-ns "network:/proc/$pause_pid/ns/net" busybox:demo "rpod$i-$m" sleep 600 >/dev/null
  done
  t1=$(now)
  [ "$i" = 0 ] || R+=($(( (t1 - t0) / 1000000 )))
  kill_tasks "rpod$i-a" "rpod$i-b" "rpod$i"
done

python3 - "$accel" "$N" "${A[*]}" "${B[*]}" "${C[*]}" "$shim_pss" "$sup_pss" "$qemu_pss" "$vm_mib" \
  "${P[*]}" "${R[*]}" "$pod_pss" <<'PY'
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
pods, runc_pods = (list(map(int, s.split())) for s in sys.argv[10:12])
pod_pss = int(sys.argv[12])
mp, mr = statistics.median(pods), statistics.median(runc_pods)
print(f"a pod (sandbox + 2 containers) to all running, {len(pods)} pods, medians (min-max)")
print(f"  {'cabin: one VM for the pod':44s} {mp:6.0f} ms ({min(pods)}-{max(pods)})   {mp / mr:.2f}x runc")
print(f"  {'runc: containers in the sandbox netns':44s} {mr:6.0f} ms ({min(runc_pods)}-{max(runc_pods)})")
print(f"the idle pod on the host (PSS, shim + 3 supervisors + 1 QEMU): {pod_pss // 1024} MiB,"
      f" against {3 * total // 1024} MiB for three tasks of a VM each")
PY
