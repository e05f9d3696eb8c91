#!/usr/bin/env bash
# Servers under load: tests/load.rs in the release build, longer: 50 concurrent clients
# on cabin serve's Docker API (unix socket) and Lume's API (loopback), two rounds of
# SECONDS each with ROUNDS_STARTS container runs through the Docker API in each; then
# the same clients and Docker reads against Debian's dockerd (runc, private socket),
# the baseline, for SECONDS. Prints per-request answers, p50 and p99 side by side, the
# server's memory, descriptors and threads before and after, and the leak checks.
# usage: bench/load.sh [SECONDS] [STARTS]     (defaults: 60, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60} starts=${2:-5}
command -v dockerd >/dev/null || { echo "dockerd is missing: scripts/setup.sh installs docker.io" >&2; exit 1; }
work=$(mktemp -d /tmp/cabin-bench-load.XXXXXX)
dockerd_pid=
cleanup() { [ -z "$dockerd_pid" ] || kill "$dockerd_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
dockerd --host "unix://$work/dockerd.sock" --data-root "$work/dockerd" --exec-root "$work/dockerd-exec" \
  --pidfile "$work/dockerd.pid" --iptables=false --ip6tables=false --bridge=none >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 100); do curl -fs --unix-socket "$work/dockerd.sock" http://x/_ping >/dev/null 2>&1 && break; sleep 0.1; done
CABIN_LOAD_SECONDS=$seconds CABIN_LOAD_STARTS=$starts CABIN_LOAD_BASELINE_SOCKET=$work/dockerd.sock \
  cargo test --release --locked -q -p cabin-cli --test load -- --nocapture 2>&1 \
  | grep -vE '^(running|test result|$)'
