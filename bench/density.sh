#!/usr/bin/env bash
# Density: how many idle busybox containers (`sleep` as the process) fit in a fixed
# memory budget, and the host memory per container at 10, 50 and that maximum.
# Everything cabin starts (the cabin commands, supervisors, QEMUs, the memory holder)
# runs inside a memory cgroup of this script's own capped at BUDGET MiB (the machine
# is shared and has no swap), and at most MAX containers are started. Starting stops
# at the first refusal; cabin refuses a VM the cgroup could not hold, so the reason
# printed is cabin's own. Under TCG, idle VMs still cost CPU (guest timers, translated
# code), so on a small machine starts slow down long before memory runs out: starting
# also stops once one `cabin run -d` takes more than SLOW seconds, and says so.
# Needs root (it makes the cgroup).
# usage: bench/density.sh [BUDGET_MIB] [MAX] [SLOW]   (defaults: 8192, 150, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
budget=${1:-8192} max=${2:-150} slow=${3:-20}
cabin=$(realpath "${CABIN_BIN:-target/release/cabin}")
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
[ "$(id -u)" = 0 ] || { echo "bench/density.sh makes a memory cgroup: run it as root" >&2; exit 1; }
work=$(mktemp -d /tmp/cabin-bench-density.XXXXXX)
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cg=/sys/fs/cgroup/cabin-density-$$; mkdir "$cg"
  echo $((budget << 20)) > "$cg/memory.max"; echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
  usage() { cat "$cg/memory.current"; }
else
  cg=/sys/fs/cgroup/memory/cabin-density-$$; mkdir "$cg"
  echo $((budget << 20)) > "$cg/memory.limit_in_bytes"
  usage() { cat "$cg/memory.usage_in_bytes"; }
fi
export CABIN_DATA_DIR="$work/data"
accel=$(host_accel "$cabin")
export CABIN_ACCEL=$accel
cleanup() {
  "$cabin" rm -f $("$cabin" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  rm -rf "$work"
  sleep 3 # the memory holder leaves once its data directory is gone
  # Whatever is still in the cgroup goes with it.
  for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do [ "$p" = $$ ] || kill -9 "$p" 2>/dev/null || true; done
  echo $$ > "$(dirname "$cg")/cgroup.procs" 2>/dev/null || true
  sleep 1; rmdir "$cg" 2>/dev/null || true
}
trap cleanup EXIT
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
"$cabin" system prepare >/dev/null
echo $$ > "$cg/cgroup.procs"
base=$(usage)

pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# Host memory per container now: PSS of every QEMU and supervisor (and the holder),
# and the cgroup's own count (page cache of the images included) above what it held
# before the first container.
measure() {
  local n=$1 total=0 p
  for p in $(cat "$cg/cgroup.procs"); do
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in
      qemu*|cabin) [ "$p" = $$ ] || total=$((total + $(pss_kib "$p"))) ;;
    esac
  done
  printf '%8d %14.1f %18.1f\n' "$n" "$(echo "$total / $n / 1024" | bc -l)" "$(echo "($(usage) - $base) / $n / 1048576" | bc -l)"
}
echo "density: idle busybox containers in a ${budget} MiB memory cgroup (accelerator: $accel, $(nproc) cores)"
printf '%8s %14s %18s %12s\n' containers "PSS/ctr MiB" "cgroup/ctr MiB" "last start s"
why="the count cap ($max)"
n=0 took=0
for i in $(seq "$max"); do
  t0=$(date +%s%N)
  if ! "$cabin" run -d --name "d$i" --rootfs "$work/rootfs" -- sleep 100000 >/dev/null 2>"$work/err"; then
    why="cabin refused container $i: $(head -1 "$work/err")"
    break
  fi
  took=$(echo "($(date +%s%N) - $t0) / 1000000000" | bc -l)
  n=$i
  if [ "$n" = 10 ] || [ "$n" = 50 ]; then sleep 3; printf '%s %12.1f\n' "$(measure "$n")" "$took"; fi
  if [ "$(echo "$took > $slow" | bc)" = 1 ]; then
    why="a start that took $(printf '%.0f' "$took") s (the CPU, not the memory budget, is what ran out)"
    break
  fi
done
sleep 3
[ "$n" = 10 ] || [ "$n" = 50 ] || [ "$n" = 0 ] || printf '%s %12.1f\n' "$(measure "$n")" "$took"
echo "started $n, running $("$cabin" ps -q | wc -l); stopped by $why"
