#!/usr/bin/env bash
# Full VM images (Lume's OCI format): `cabin vm push` and `cabin vm pull` of a VM whose
# 10 GiB sparse disk holds about 1 GiB of data (tar streams of /usr/lib, /usr/share and
# /usr/bin, partly compressible, plus some random data, at several places; the rest
# holes), to and from Debian's docker-registry on 127.0.0.1, in one run:
#  - push and pull time with cabin's defaults (512 MiB chunks, --parallel 4) next to a
#    single-stream baseline: the same chunks compressed and transferred one at a time
#    (--parallel 1), each push into a fresh registry so that nothing is skipped;
#  - bytes over the wire, measured outside cabin: for a push the blob bytes the registry
#    stored, for a pull the body bytes the registry logged for its GETs; both also as
#    the traffic on `lo` (both directions, every process of this network namespace),
#    with cabin's own report alongside;
#  - bytes allocated by the pulled disk.img next to the source's;
#  - peak extra disk space during a pull (the data directory and cabin's TMPDIR sampled
#    with du every ~50 ms): the peak growth minus what the pulled VM keeps at the end;
#    the same for a push (its compressed chunks wait on disk for their upload).
# Every pulled disk is compared with the source (cmp); a difference fails the script.
# usage: bench/vm-images.sh [RUNS]   (default 3; medians reported)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench-vmimg.XXXXXX)
declare -a PIDS=()
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export CABIN_DATA_DIR="$work/data"
export TMPDIR="$work/tmp"
mkdir -p "$TMPDIR"
now() { date +%s%N; }
. bench/lib.sh
MiB=$((1 << 20))

# Bytes of the blobs a registry holds (chunks, NVRAM, config, manifest).
blob_bytes() { find "$1/storage/docker/registry/v2/blobs" -type f -name data -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
# Body bytes the registry sent for GETs logged from byte offset $2 of its log on.
get_bytes() {
  tail -c +"$(( $2 + 1 ))" "$1/log" | grep 'msg="response completed"' | grep 'http.request.method=GET' |
    sed -n 's/.*http\.response\.written=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}'
}
lo_bytes() { awk '$1 == "lo:" {print $2}' /proc/net/dev; }
used() { du -s --block-size=1 "$CABIN_DATA_DIR" "$TMPDIR" 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
alloc() { stat -c '%b %B' "$1" | awk '{print $1 * $2}'; }
# Samples used() every ~50 ms until stopped, keeping the peak in $1.
start_sampler() {
  local out=$1
  ( peak=0; while :; do v=$(used); [ "$v" -gt "$peak" ] && { peak=$v; echo "$peak" > "$out.tmp"; mv "$out.tmp" "$out"; }; sleep 0.05; done ) &
  sampler_pid=$!
}
stop_sampler() { kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""; }

# The source VM: 10 GiB disk, about 1 GiB written at several places.
"$cabin" vm create src --cpu 2 --memory 2GB --disk-size 10GB >/dev/null
disk="$CABIN_DATA_DIR/vms/src/disk.img"
put_tar() { # DIR MiB SEEK_MiB: the first MiB of a tar stream of /DIR at SEEK_MiB
  (tar -cf - -C / "$1" 2>/dev/null || true) |
    dd of="$disk" bs=1M count="$2" seek="$3" iflag=fullblock conv=notrunc status=none
}
dd if=/dev/urandom of="$disk" bs=1M count=64 seek=0 conv=notrunc status=none
put_tar usr/lib 384 1024
put_tar usr/share 384 4096
dd if=/dev/urandom of="$disk" bs=1M count=64 seek=7168 conv=notrunc status=none
(tar -cf - -C / usr/bin 2>/dev/null || true) | head -c $((128 * MiB)) > "$work/bin.tar" || true
for i in $(seq 0 15); do # 16 pieces of 8 MiB spread over the disk, as files would be
  dd if="$work/bin.tar" of="$disk" bs=1M count=8 skip=$(( i * 8 )) seek=$(( 200 + i * 640 )) conv=notrunc status=none
done
rm -f "$work/bin.tar"
sync
src_size=$(stat -c %s "$disk")
src_alloc=$(alloc "$disk")

declare -a PUSH_MS PUSH_BLOB PUSH_LO PUSH_REP PUSH_PEAK PULL_MS PULL_GET PULL_LO PULL_REP PULL_ALLOC PULL_GROW PULL_PEAK
digests=""
LAYERS=""
declare -a PUSH_REQS
# One push and one pull; $1 = variant index (0 default, 1 single stream), $2 = run.
measure() {
  local v=$1 r=$2 args=() reg="$work/reg-$1-$2" out="$work/out" t0 t1 lo0 lo1 before peak pname off
  [ "$v" = 1 ] && args=(--parallel 1)
  start_registry "$reg"
  local common=(--registry "127.0.0.1:$REG_PORT" --organization bench)

  before=$(used); echo "$before" > "$work/peak"; start_sampler "$work/peak"
  lo0=$(lo_bytes); t0=$(now)
  "$cabin" vm push src "vm:r$r" "${common[@]}" "${args[@]}" > "$out" 2>&1 || { cat "$out" >&2; exit 1; }
  t1=$(now); lo1=$(lo_bytes); stop_sampler
  PUSH_MS[$v]+="$(( (t1 - t0) / 1000000 )) "
  PUSH_LO[$v]+="$(( lo1 - lo0 )) "
  PUSH_BLOB[$v]+="$(blob_bytes "$reg") "
  PUSH_REP[$v]+="$(sed -n 's/.*Push complete.* uploaded=[0-9]* (\([0-9.]*\) MiB).*/\1/p' "$out") "
  PUSH_PEAK[$v]+="$(( $(cat "$work/peak") - before )) "
  digests+="$(sed -n 's/.*Push complete.* digest=\(sha256:[0-9a-f]*\).*/\1/p' "$out") "
  grep -q ' skipped=0 ' "$out" || { echo "push skipped blobs in a fresh registry:" >&2; cat "$out" >&2; exit 1; }
  # The registry's view of the push: requests, and those refused (a HEAD's 404 is the
  # "do you have it" answer, not a refusal); and the manifest's layer digests.
  PUSH_REQS[$v]+="$(grep -c 'msg="response completed"' "$reg/log")/$(grep 'msg="response completed"' "$reg/log" |
    grep -v 'http.request.method=HEAD' | grep -c 'http.response.status=[45]' || true) "
  LAYERS+="$(python3 -c 'import json,sys,urllib.request as u
r=u.Request(sys.argv[1],headers={"Accept":"application/vnd.oci.image.manifest.v1+json"})
print(",".join(l["digest"] for l in json.load(u.urlopen(r))["layers"]))' "http://127.0.0.1:$REG_PORT/v2/bench/vm/manifests/r$r" | sha256sum | cut -c1-12) "

  pname="p$v-$r"
  off=$(stat -c %s "$reg/log")
  before=$(used); echo "$before" > "$work/peak"; start_sampler "$work/peak"
  lo0=$(lo_bytes); t0=$(now)
  "$cabin" vm pull "vm:r$r" "$pname" "${common[@]}" "${args[@]}" > "$out" 2>&1 || { cat "$out" >&2; exit 1; }
  t1=$(now); lo1=$(lo_bytes); stop_sampler
  sync
  peak=$(cat "$work/peak")
  local after; after=$(used)
  local pdisk="$CABIN_DATA_DIR/vms/$pname/disk.img"
  PULL_MS[$v]+="$(( (t1 - t0) / 1000000 )) "
  PULL_LO[$v]+="$(( lo1 - lo0 )) "
  PULL_GET[$v]+="$(get_bytes "$reg" "$off") "
  PULL_REP[$v]+="$(sed -n 's/.*Pull complete.* fetched=\([0-9.]*\) MiB.*/\1/p' "$out") "
  PULL_ALLOC[$v]+="$(alloc "$pdisk") "
  PULL_GROW[$v]+="$(( after - before )) "
  [ "$after" -gt "$peak" ] && peak=$after
  PULL_PEAK[$v]+="$(( peak - before )) "
  [ "$(stat -c %s "$pdisk")" = "$src_size" ] || { echo "FAIL: $pname's disk has another size" >&2; exit 1; }
  cmp "$disk" "$pdisk" || { echo "FAIL: $pname's disk differs from the source" >&2; exit 1; }
  rm -rf "${CABIN_DATA_DIR:?}/vms/$pname"
  stop_registry "$REG_PID"
  rm -rf "$reg"
}

for r in $(seq "$RUNS"); do
  measure 0 "$r"
  measure 1 "$r"
done

echo "per run (default | parallel 1): push ms ${PUSH_MS[0]}| ${PUSH_MS[1]}; pull ms ${PULL_MS[0]}| ${PULL_MS[1]}"
echo "  lo bytes push ${PUSH_LO[0]}| ${PUSH_LO[1]}; pull ${PULL_LO[0]}| ${PULL_LO[1]}"
echo "  registry requests during push / refused: ${PUSH_REQS[0]}| ${PUSH_REQS[1]}"
python3 - "$RUNS" "$src_size" "$src_alloc" "$digests" \
  "${PUSH_MS[0]}" "${PUSH_MS[1]}" "${PUSH_BLOB[0]}" "${PUSH_BLOB[1]}" "${PUSH_REP[0]}" "${PUSH_REP[1]}" \
  "${PUSH_LO[0]}" "${PUSH_LO[1]}" "${PUSH_PEAK[0]}" "${PUSH_PEAK[1]}" \
  "${PULL_MS[0]}" "${PULL_MS[1]}" "${PULL_GET[0]}" "${PULL_GET[1]}" "${PULL_REP[0]}" "${PULL_REP[1]}" \
  "${PULL_LO[0]}" "${PULL_LO[1]}" "${PULL_ALLOC[0]}" "${PULL_ALLOC[1]}" "${PULL_GROW[0]}" "${PULL_GROW[1]}" \
  "${PULL_PEAK[0]}" "${PULL_PEAK[1]}" "$LAYERS" <<'PY'
import statistics, sys
a = sys.argv[1:]
runs, size, alloc, digests = int(a[0]), int(a[1]), int(a[2]), set(a[3].split())
v = [list(map(float, s.split())) for s in a[4:-1]]
med = [statistics.median(x) for x in v]
M = 1 << 20
def row(label, i, scale=M, fmt="{:>10.1f}"):
    print(f"{label:<58} {fmt.format(med[i] / scale)} {fmt.format(med[i + 1] / scale)}")
print(f"vm push/pull: {size / M:.0f} MiB disk, {alloc / M:.0f} MiB allocated, 512 MiB chunks, median of {runs}")
print(f"{'measure':<58} {'default':>10} {'parallel 1':>10}")
row("push (s)", 0, 1000, "{:>10.2f}")
row("push, blob bytes stored by the registry (MiB)", 2)
row("push, uploaded as cabin reports it (MiB)", 4, 1)
row("push, traffic on lo, both directions (MiB)", 6)
row("push, peak extra disk space (MiB)", 8)
row("pull (s)", 10, 1000, "{:>10.2f}")
row("pull, GET body bytes the registry logged (MiB)", 12)
row("pull, fetched as cabin reports it (MiB)", 14, 1)
row("pull, traffic on lo, both directions (MiB)", 16)
row(f"pulled disk.img allocated (MiB; source {alloc / M:.1f})", 18)
row("pull, data directory growth at the end (MiB)", 20)
row("pull, peak data directory growth during the pull (MiB)", 22)
print(f"{'pull, peak extra disk space: peak - final growth (MiB)':<58} {(med[22] - med[20]) / M:>10.1f} {(med[23] - med[21]) / M:>10.1f}")
layers = set(sys.argv[-1].split())
print(f"manifests: {len(digests)} distinct digests of {2 * runs} pushes (upload-time annotation); layer lists: {'all identical' if len(layers) == 1 else 'DIFFERENT ' + ' '.join(sorted(layers))}")
print("every pulled disk identical to the source (cmp)")
PY
