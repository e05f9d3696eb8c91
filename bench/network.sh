#!/usr/bin/env bash
# Published-port throughput (issue 4), host -> container, next to the same transfer over
# the host's loopback, all in one run:
#  - loopback: a sink on 127.0.0.1 on the host itself (the baseline);
#  - user network: `-p PORT:5001` through QEMU's user-mode stack;
#  - bridge network (as root): `-p PORT:5001` through nftables DNAT and the tap device.
# The sink answers once it has read everything the sender sent, so the time covers
# delivery, not just the sender's buffers. Best of 3 transfers of SIZE MB.
# usage: bench/network.sh [SIZE_MB]   (default 64)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-64}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
export CABIN_DATA_DIR="$work/data"
cleanup() { "$cabin" rm -f $("$cabin" ps -aq) >/dev/null 2>&1 || true; kill %1 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sends MB megabytes to host:port, waits for the sink's byte count; prints MB/s (best of 3).
send() {
  python3 - "$1" "$2" "$MB" <<'EOF'
import socket, sys, time
host, port, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = b"\0" * (1 << 20)

def transfer():
    s = socket.create_connection((host, port), timeout=60)
    t0 = time.perf_counter()
    for _ in range(mb):
        s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = s.recv(64)
        if not d:
            break
        reply += d
    t = time.perf_counter() - t0
    s.close()
    if not reply:
        raise ConnectionResetError("no answer")
    # The loopback sink answers its byte count; the container's dd its record count
    # once it read to the end of the stream (TCP delivered every byte by then).
    if b"records" not in reply and int(reply.split()[0]) != mb << 20:
        sys.exit(f"the sink answered {reply!r}, expected {mb << 20} bytes")
    return mb / t

best = 0.0
deadline = time.time() + 60
done = 0
while done < 3:
    try:
        best = max(best, transfer())
        done += 1
    except OSError:
        # The sink is not listening yet (a forwarder may accept, then reset).
        if time.time() > deadline:
            raise
        time.sleep(0.2)
print(f"{best:.1f}")
EOF
}

# The baseline: a sink on the host's loopback, the same protocol.
port=$(free_port)
python3 - "$port" <<'EOF' &
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(4)
while True:
    c, _ = srv.accept(); n = 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        n += len(d)
    c.sendall(f"{n}\n".encode()); c.close()
EOF
loopback=$(send 127.0.0.1 "$port")

# In a container: busybox nc hands each connection to dd (1 MiB reads; busybox wc's
# small reads would measure wc, not the network), which answers once it has read to
# the end of the stream.
sink='while :; do nc -l -p 5001 -e sh -c "dd of=/dev/null bs=1048576 2>&1 | tail -n 1"; done'
port=$(free_port)
"$cabin" run -d --name sink-user -p "$port:5001" --rootfs "$work/rootfs" -- sh -c "$sink" >/dev/null
user=$(send 127.0.0.1 "$port")
"$cabin" rm -f sink-user >/dev/null
bridge="(not root)"
if [ "$(id -u)" = 0 ]; then
  port=$(free_port)
  "$cabin" run -d --name sink-bridge --network bridge -p "$port:5001" --rootfs "$work/rootfs" -- sh -c "$sink" >/dev/null
  bridge=$(send 127.0.0.1 "$port")
  "$cabin" rm -f sink-bridge >/dev/null
fi

echo "published TCP port throughput, host -> container, $MB MB per transfer, best of 3 (accelerator: $("$cabin" system info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])'))"
printf '%-46s %10s\n' "path" "MB/s"
printf '%-46s %10s\n' "host loopback (baseline)" "$loopback"
printf '%-46s %10s\n' "-p, user-mode network (QEMU slirp)" "$user"
printf '%-46s %10s\n' "-p, bridge network (nftables DNAT, tap)" "$bridge"
