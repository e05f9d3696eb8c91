#!/usr/bin/env bash
# Containers that live on (issue 4), all figures from one run:
#  - `cabin exec NAME true` round trip next to `cabin run --rm true` (median of 10 each);
#  - N detached containers started together on this machine, next to one started alone;
#    all must come up. Reports the wall time until every one runs and the host memory
#    (PSS) per container: its QEMU plus its supervisor.
# usage: bench/containers.sh [N]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
export CABIN_DATA_DIR="$work/data"
cleanup() { "$cabin" rm -f $("$cabin" ps -aq) >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
CABIN_SNAPSHOTS=off "$cabin" run --rm --rootfs "$work/rootfs" true 2>/dev/null
"$cabin" system prepare >/dev/null 2>&1
now() { date +%s%N; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
t0=$(now)
"$cabin" run -d --name alone --rootfs "$work/rootfs" -- sleep 600 >/dev/null 2>&1
t1=$(now)
alone_ms=$(( (t1 - t0) / 1000000 ))
exec_ms=$(for _ in $(seq 10); do t0=$(now); "$cabin" exec alone true; t1=$(now); echo $(( (t1 - t0) / 1000 )); done | median)
run_ms=$(for _ in $(seq 10); do t0=$(now); "$cabin" run --rm --rootfs "$work/rootfs" true 2>/dev/null; t1=$(now); echo $(( (t1 - t0) / 1000 )); done | median)
"$cabin" rm -f alone >/dev/null

t0=$(now)
pids=()
for i in $(seq "$N"); do
  "$cabin" run -d --name "c$i" --rootfs "$work/rootfs" -- sleep 600 >/dev/null 2>"$work/err$i" &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    failed=$((failed + 1))
    echo "start $((i + 1)) failed: $(cat "$work/err$((i + 1))")" >&2
  fi
done
t1=$(now)
all_ms=$(( (t1 - t0) / 1000000 ))
running=$("$cabin" ps -q | wc -l)

pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
total=0
for i in $(seq "$N"); do
  sup=$("$cabin" inspect "c$i" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("supervisor_pid", 0))')
  [ "$sup" != 0 ] || continue
  qemu=$(ps -o pid= --ppid "$sup" | head -1 | tr -d ' ')
  total=$(( total + $(pss_kib "$sup") + $(pss_kib "$qemu") ))
done

echo "containers: exec next to run; $N started at once on $(nproc) cores (accelerator: $("$cabin" system info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])'))"
printf '%-52s %10s\n' "measure" "value"
printf '%-52s %10.1f\n' "cabin exec NAME true, median of 10 (ms)" "$(echo "$exec_ms / 1000" | bc -l)"
printf '%-52s %10.1f\n' "cabin run --rm true, median of 10 (ms)" "$(echo "$run_ms / 1000" | bc -l)"
printf '%-52s %10d\n' "one container alone, cabin run -d to running (ms)" "$alone_ms"
printf '%-52s %10d\n' "$N at once, until every cabin run -d returned (ms)" "$all_ms"
printf '%-52s %10d\n' "failed starts" "$failed"
printf '%-52s %10d\n' "running afterwards" "$running"
printf '%-52s %10.1f\n' "host memory per container, QEMU + supervisor (MiB)" "$(echo "$total / $N / 1024" | bc -l)"
