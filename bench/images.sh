#!/usr/bin/env bash
# Image benchmark, one run on this machine, figures side by side:
#  - pull of a multi-layer Debian image (tens of MB) from a local registry: cabin image
#    pull vs skopeo copy into an OCI layout (same registry, same image, fresh targets);
#  - building the image's ext4 disk from its layers (cabin, first run) vs mkfs.ext4 -d on
#    the same tree already unpacked;
#  - the second cabin run of the image: its root-filesystem phase (no unpacking).
# usage: bench/images.sh [RUNS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench-img.XXXXXX)
reg_pid=""
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
rootfs=$(scripts/make-debian-rootfs.sh)
export CABIN_ACCEL=${CABIN_ACCEL:-$("$cabin" system info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])')}

# A registry on a free port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/registry"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$work/registry" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 & reg_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# A three-layer OCI layout of the Debian tree (usr / var+etc / the rest), pushed by skopeo.
python3 - "$rootfs" "$work/layout" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
root, out = sys.argv[1], sys.argv[2]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
groups = [["usr"], ["var", "etc"], [n for n in sorted(os.listdir(root)) if n not in ("usr", "var", "etc")]]
layers, diff_ids = [], []
for g in groups:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for n in g:
            t.add(os.path.join(root, n), arcname=n)
    raw = raw.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    d, size = blob(gzip.compress(raw, compresslevel=6, mtime=0))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": size})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["bash"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cs = blob(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers}).encode()
md, ms = blob(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
           "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
print(f"layers: {len(layers)}, compressed {sum(l['size'] for l in layers)/1e6:.1f} MB", file=sys.stderr)
PY
ref="127.0.0.1:$port/bench/debian:1"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:bench" "docker://$ref"

now() { date +%s%N; }
declare -a CP SK
for i in $(seq "$RUNS"); do
  rm -rf "$work/data" "$work/sk"
  t0=$(now); CABIN_DATA_DIR="$work/data" "$cabin" image pull "$ref" >/dev/null 2>&1; t1=$(now)
  CP+=($(( (t1 - t0) / 1000000 )))
  t0=$(now); skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$work/sk:x"; t1=$(now)
  SK+=($(( (t1 - t0) / 1000000 )))
done

# Disk build: cabin's first run (unpack + mkfs) vs mkfs.ext4 -d of the tree as it is.
CABIN_DATA_DIR="$work/data" "$cabin" run --rm --timings "$ref" true 2> "$work/first" >/dev/null
CABIN_DATA_DIR="$work/data" "$cabin" run --rm --timings "$ref" true 2> "$work/second" >/dev/null
unpack_ms=$(awk '/^root filesystem image/ {print $5}' "$work/first")
second_ms=$(awk '/^root filesystem image/ {print $5}' "$work/second")
second_note=$(grep '^root filesystem image' "$work/second" | sed 's/.*  image/image/')
size=$(( $(du -sb "$rootfs" | cut -f1) * 2 + (2 << 30) ))
truncate -s "$size" "$work/plain.ext4"
t0=$(now); mkfs.ext4 -q -F -O ^has_journal -E lazy_itable_init=1,nodiscard -d "$rootfs" "$work/plain.ext4"; t1=$(now)
mkfs_ms=$(( (t1 - t0) / 1000000 ))

python3 - "${CP[*]}" "${SK[*]}" "$unpack_ms" "$mkfs_ms" "$second_ms" "$second_note" <<'PY'
import statistics, sys
cp, sk = [list(map(int, a.split())) for a in sys.argv[1:3]]
unpack, mkfs, second, note = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
print(f"{'measure':<52} {'cabin':>10} {'baseline':>10}")
print(f"{'pull, 3 layers, median of %d (ms) vs skopeo copy' % len(cp):<52} {statistics.median(cp):>10.0f} {statistics.median(sk):>10.0f}")
print(f"{'disk from layers, first run (ms) vs mkfs.ext4 -d':<52} {unpack:>10.0f} {mkfs:>10.0f}")
print(f"{'root filesystem phase, second run (ms)':<52} {second:>10.1f} {'-':>10}   ({note})")
PY
