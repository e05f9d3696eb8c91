#!/usr/bin/env bash
# The Docker API's cost, all figures from one run on this machine, the same docker CLI
# (v28) for every series:
#  (a) `docker run --rm local/bb true` through `cabin serve --docker-socket` (a VM per
#      container, resumed from its boot snapshot);
#  (b) `cabin run --rm local/bb true`: the same container without the API (a - b is
#      what the API costs);
#  (c) `docker run --rm --network none bb true` against Debian's dockerd with runc (no
#      VM at all), started here on a private socket;
#  (d) `docker ps -a` with 20 containers, through cabin and through dockerd;
#  (e) `docker exec C true` round trip into a running container, both.
# usage: bench/docker.sh [N]   (N >= 10 runs per series; default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
docker=${DOCKER:-docker}
command -v dockerd >/dev/null || { echo "dockerd is missing: scripts/setup.sh installs docker.io" >&2; exit 1; }
work=$(mktemp -d /tmp/cabin-bench-docker.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export CABIN_DATA_DIR="$work/data"
accel=$(host_accel "$cabin")
export CABIN_ACCEL=$accel
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
"$cabin" image import "$work/rootfs" local/bb >/dev/null
"$cabin" system prepare >/dev/null

"$cabin" serve --port 0 --docker-socket "$work/cabin.sock" >"$work/serve.log" 2>&1 &
pids+=($!)
start_private_dockerd "$work"
pids+=("$dockerd_pid")
for s in cabin dockerd; do
  for _ in $(seq 100); do [ -S "$work/$s.sock" ] && DOCKER_HOST="unix://$work/$s.sock" "$docker" version >/dev/null 2>&1 && break; sleep 0.1; done
done
tar -C "$work/rootfs" -c . | DOCKER_HOST="unix://$work/dockerd.sock" "$docker" import - bb >/dev/null

via() { DOCKER_HOST="unix://$work/$1.sock" "$docker" "${@:2}"; }
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m/1e6}'; }
series() { # $1 = label, rest = command; prints the median in ms
  local t0 out=()
  "${@:2}" >/dev/null 2>&1 # warm
  for _ in $(seq "$N"); do
    t0=$(now); "${@:2}" >/dev/null; out+=($(( $(now) - t0 )))
  done
  printf '%s\n' "${out[@]}" | median
}

a=$(series a via cabin run --rm local/bb true)
b=$(series b "$cabin" run --rm local/bb true)
c=$(series c via dockerd run --rm --network none bb true)

for i in $(seq 20); do
  via cabin create --name "idle$i" local/bb true >/dev/null
  via dockerd create --network none --name "idle$i" bb true >/dev/null
done
d_cabin=$(series d via cabin ps -a)
d_docker=$(series d via dockerd ps -a)

via cabin run -d --name busy local/bb sleep 100000 >/dev/null
via dockerd run -d --network none --name busy bb sleep 100000 >/dev/null
e_cabin=$(series e via cabin exec busy true)
e_docker=$(series e via dockerd exec busy true)
via cabin rm -f busy >/dev/null
via dockerd rm -f busy >/dev/null

echo "accelerator: $accel; medians of $N runs (ms)"
printf '%-58s %8s %10s\n' measure cabin baseline
printf '%-58s %8s %10s\n' "(a) docker run --rm true via cabin vs (b) cabin run --rm" "$a" "$b"
printf '%-58s %8s %10s\n' "(a) docker run --rm true via cabin vs (c) dockerd + runc" "$a" "$c"
printf '%-58s %8s %10s\n' "(d) docker ps -a, 20 containers: cabin vs dockerd" "$d_cabin" "$d_docker"
printf '%-58s %8s %10s\n' "(e) docker exec true: cabin vs dockerd" "$e_cabin" "$e_docker"
