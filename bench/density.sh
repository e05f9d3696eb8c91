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
# The baseline, measured in the same run when dockerd is installed: the same idle
# containers (at 10, and at as many as cabin started up to 50) run by a private
# Debian dockerd with runc, no VM: their processes' PSS (container and shim) and their
# cgroups' memory.
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
cg= dockerd_pid=
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    docker rm -f $(docker ps -aq) >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true
  fi
  "$cabin" rm -f $("$cabin" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  rm -rf "$work"
  [ -n "$cg" ] || return 0
  sleep 3 # the memory holder leaves once its data directory is gone
  # Whatever is still in the cgroup goes with it.
  for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do [ "$p" = $$ ] || kill -9 "$p" 2>/dev/null || true; done
  echo $$ > "$(dirname "$cg")/cgroup.procs" 2>/dev/null || true
  for _ in $(seq 30); do rmdir "$cg" 2>/dev/null && return 0; sleep 1; done
  echo "bench/density.sh: could not remove the cgroup $cg (still populated)" >&2
}
trap cleanup EXIT
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

# The baseline: as many idle containers under runc (no VM), on a private dockerd.
if [ "$n" -ge 10 ] && command -v dockerd >/dev/null && start_private_dockerd "$work"; then
  export DOCKER_HOST="unix://$work/dockerd.sock"
  tar -C "$work/rootfs" -c . | docker import - bb >/dev/null
  # the memory charged to the cgroup of process $1 (cgroup v2, or v1's memory
  # hierarchy), in bytes
  memory_of_cgroup_of() {
    local path
    if path=$(sed -n 's/^0:://p' "/proc/$1/cgroup") && [ -f "/sys/fs/cgroup$path/memory.current" ]; then
      cat "/sys/fs/cgroup$path/memory.current"
    elif path=$(sed -n 's/^[0-9]*:memory://p' "/proc/$1/cgroup") && [ -n "$path" ]; then
      cat "/sys/fs/cgroup/memory$path/memory.usage_in_bytes" 2>/dev/null || echo 0
    else
      echo 0
    fi
  }
  runc_measure() {
    local k=$1 total=0 cgmem=0 id pid shim
    for id in $(docker ps -q --no-trunc); do
      pid=$(docker inspect -f '{{.State.Pid}}' "$id")
      shim=$(awk '{print $4}' "/proc/$pid/stat")
      total=$((total + $(pss_kib "$pid") + $(pss_kib "$shim")))
      cgmem=$((cgmem + $(memory_of_cgroup_of "$pid")))
    done
    printf '%8d %14.1f %18.1f   docker run -d, runc (baseline)\n' "$k" \
      "$(echo "$total / $k / 1024" | bc -l)" "$(echo "$cgmem / $k / 1048576" | bc -l)"
  }
  upto=$((n < 50 ? n : 50))
  for i in $(seq "$upto"); do
    docker run -d --network none --name "r$i" bb sleep 100000 >/dev/null
    if [ "$i" = 10 ] || [ "$i" = "$upto" ]; then sleep 2; runc_measure "$i"; fi
  done
fi
