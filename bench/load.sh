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
source bench/lib.sh
seconds=${1:-60} starts=${2:-5}
command -v dockerd >/dev/null || { echo "dockerd is missing: scripts/setup.sh installs docker.io" >&2; exit 1; }
work=$(mktemp -d /tmp/cabin-bench-load.XXXXXX)
dockerd_pid=
cleanup() { [ -z "$dockerd_pid" ] || kill "$dockerd_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
start_private_dockerd "$work"
CABIN_LOAD_SECONDS=$seconds CABIN_LOAD_STARTS=$starts CABIN_LOAD_BASELINE_SOCKET=$work/dockerd.sock \
  cargo test --release --locked -q -p cabin-cli --test load -- --nocapture 2>&1 \
  | grep -vE '^(running|test result|$)'
