#!/usr/bin/env bash
# Full VMs (issue 5): `cabin vm clone` of a 50 GB sparse disk with 1 GB written, next to
# GNU cp (--reflink=auto --sparse=always) of the same disk in the same run; and the
# same on the data directory's file system, whatever it is (reflinks are instant on
# btrfs/xfs, a sparse data-only copy elsewhere).
# usage: bench/vm.sh [RUNS]   (default 3; median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
export CABIN_DATA_DIR="$work/data"
trap 'rm -rf "$work"' EXIT
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

"$cabin" vm create src --disk-size 50GB --memory 1GB --cpu 1 >/dev/null
disk="$CABIN_DATA_DIR/vms/src/disk.img"
# 1 GB of data in 64 MiB pieces spread over the disk, as an installed system would be.
for i in $(seq 0 15); do
  dd if=/dev/urandom of="$disk" bs=1M count=64 seek=$(( i * 3000 )) conv=notrunc status=none
done
sync
fs=$(stat -f -c %T "$CABIN_DATA_DIR")
alloc=$(du -k "$disk" | cut -f1)

clone_ms=$(for r in $(seq "$RUNS"); do
  t0=$(now); "$cabin" vm clone src "c$r" >/dev/null; t1=$(now)
  echo $(( (t1 - t0) / 1000000 ))
done | median)
cp_ms=$(for r in $(seq "$RUNS"); do
  t0=$(now); cp --reflink=auto --sparse=always "$disk" "$work/cp$r.img"; t1=$(now)
  echo $(( (t1 - t0) / 1000000 ))
done | median)
clone_alloc=$(du -k "$CABIN_DATA_DIR/vms/c1/disk.img" | cut -f1)

echo "vm clone: 50 GB sparse disk, $(( alloc / 1024 )) MiB allocated, data directory on $fs, median of $RUNS"
printf '%-52s %10s\n' "measure" "value"
printf '%-52s %10d\n' "cabin vm clone (ms)" "$clone_ms"
printf '%-52s %10d\n' "cp --reflink=auto --sparse=always, disk only (ms)" "$cp_ms"
printf '%-52s %10d\n' "clone's disk allocated (MiB)" "$(( clone_alloc / 1024 ))"
