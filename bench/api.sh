#!/usr/bin/env bash
# cabin serve (issue 5): latency of Lume's `GET /lume/vms` with N VMs defined, next to
# baselines measured in the same run against the same server: `GET /health` (the
# server's floor: HTTP, routing, logging, no VM work) and `GET /lume/vms/NAME` (one
# VM's details). One keep-alive connection, requests one after another, after a
# warm-up; p50, p99 and mean of R requests each.
# usage: bench/api.sh [N] [R]   (default 20 VMs, 2000 requests per route)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
R=${2:-2000}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
export CABIN_DATA_DIR="$work/data"
server=
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for i in $(seq -w 1 "$N"); do
  "$cabin" vm create "vm$i" --cpu 1 --memory 512MB --disk-size 10GB >/dev/null
done
"$cabin" serve --port 0 >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q 'Server started' "$work/serve.log" && break; sleep 0.05; done
port=$(sed -n 's/.*Server started port=\([0-9]*\).*/\1/p' "$work/serve.log")
[ -n "$port" ] || { cat "$work/serve.log"; exit 1; }

python3 - "$port" "$N" "$R" <<'PY'
import http.client, json, sys, time
port, n, reps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)

def get(path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status, body)
    return body

vms = json.loads(get("/lume/vms"))
assert len(vms) == n
first = vms[0]["name"]

def measure(path):
    for _ in range(200):
        get(path)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        get(path)
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1e6
    return pick(0.50), pick(0.99), sum(times) / len(times) / 1e6

print(f"cabin serve: GET latency, {n} VMs defined (stopped), {reps} requests per route, one keep-alive connection")
print(f"{'route':<34} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
for label, path in [("GET /health (baseline)", "/health"),
                    (f"GET /lume/vms/{first} (one VM)", f"/lume/vms/{first}"),
                    (f"GET /lume/vms ({n} VMs)", "/lume/vms")]:
    p50, p99, mean = measure(path)
    print(f"{label:<34} {p50:8.3f} {p99:8.3f} {mean:8.3f}")
PY
