#!/usr/bin/env bash
# Thousands of containers: how `ps -a` (every record read and reconciled), `ps` (running
# only) and `inspect` of one container grow with the number of container records, for
# cabin (records made by `cabin create`, no VM started) and, as the baseline measured in
# the same run, the docker CLI against Debian's dockerd (runc; `docker create`, private
# socket). Medians of 5 runs, in ms.
# usage: bench/records.sh [COUNTS...]     (default: 100 1000 3000)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
counts=("$@"); [ ${#counts[@]} -gt 0 ] || counts=(100 1000 3000)
cabin=$(realpath "${CABIN_BIN:-target/release/cabin}")
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
command -v dockerd >/dev/null || { echo "dockerd is missing: scripts/setup.sh installs docker.io" >&2; exit 1; }
work=$(mktemp -d /tmp/cabin-bench-records.XXXXXX)
dockerd_pid=
cleanup() { [ -z "$dockerd_pid" ] || kill "$dockerd_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export CABIN_DATA_DIR=$work/data CABIN_ACCEL=tcg
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
"$cabin" image import "$work/rootfs" local/bb >/dev/null
start_private_dockerd "$work"
export DOCKER_HOST=unix://$work/dockerd.sock
for _ in $(seq 100); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
tar -C "$work/rootfs" -c . | docker import - bb >/dev/null
median() { sort -n | awk '{a[NR]=$1} END {printf "%.0f", a[int((NR+1)/2)]/1e6}'; }
series() { for _ in 1 2 3 4 5; do t0=$(date +%s%N); "$@" >/dev/null; echo $(( $(date +%s%N) - t0 )); done | median; }
printf '%8s | %10s %10s %12s | %10s %10s %12s\n' records "cabin ps-a" "cabin ps" "cabin insp." "docker ps-a" "docker ps" "docker insp."
made=0 first=
for n in "${counts[@]}"; do
  seq $((n - made)) | xargs -P 4 -I{} "$cabin" create local/bb true >/dev/null
  seq $((n - made)) | xargs -P 4 -I{} docker create --network none bb true >/dev/null
  made=$n
  [ -n "$first" ] || first=$("$cabin" ps -aq | tail -1)
  dfirst=$(docker ps -aq | tail -1)
  listed=$("$cabin" ps -aq | wc -l)
  [ "$listed" = "$n" ] || { echo "cabin ps -a listed $listed of $n" >&2; exit 1; }
  printf '%8s | %10s %10s %12s | %10s %10s %12s\n' "$n" \
    "$(series "$cabin" ps -a)" "$(series "$cabin" ps)" "$(series "$cabin" inspect "$first")" \
    "$(series docker ps -a)" "$(series docker ps)" "$(series docker inspect "$dfirst")"
done
