#!/usr/bin/env bash
# Crash consistency, by force: runs cabin's commands that change its store and kills
# them with SIGKILL at a random moment (uniformly within the time the command took
# unkilled), then runs the same command again and `cabin system check`. Every retry must
# succeed (a create whose object the killed run already finished may say it exists, if
# that object is whole) and every check must find the store consistent.
#   scripts/torture.sh [--rounds N] [--seconds S] [--ops OP,OP...]
#     --rounds N   kills per operation (default 20)
#     --seconds S  stop starting rounds after S seconds (default 1800)
#     --ops        a subset of: pull import run run-d rm volume vm-create vm-clone
#                  vm-push vm-pull (default all)
# Uses CABIN (default target/debug/cabin, built by scripts/setup.sh), a data directory
# of its own (removed at the end) and Debian's docker-registry on a free loopback port.
# Needs root (container VMs with cabin's kernel), as the test suite does.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=20 seconds=1800 ops="pull,import,run,run-d,rm,volume,vm-create,vm-clone,vm-push,vm-pull"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --ops) ops=$2; shift 2 ;;
    *) echo "torture.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
CABIN=$(realpath "${CABIN:-target/debug/cabin}")
[ -x "$CABIN" ] || { echo "torture.sh: no cabin binary at $CABIN: run scripts/setup.sh" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/cabin-torture.XXXX")
export CABIN_DATA_DIR=$work/data
registry_pid=
cleanup() {
  # Whatever the rounds left running: detached containers' supervisors and VMs.
  "$CABIN" rm -f $("$CABIN" ps -aq 2>/dev/null) >/dev/null 2>&1
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
cabin() { "$CABIN" "$@"; }

# --- set-up: a registry, an image in it, a VM with data on its disk, pushed --------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
mkdir -p "$work/registry"
cat > "$work/registry/config.yml" <<C
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: $reg}
C
docker-registry serve "$work/registry/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://$reg/v2/" >/dev/null || { echo "torture.sh: docker-registry did not start" >&2; exit 2; }
say "set-up: data in $work, registry on $reg"
scripts/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
cabin image import "$work/rootfs" torture >/dev/null || exit 2
cabin image push torture "$reg/torture/busybox" >/dev/null || exit 2
cabin vm create base --disk-size 10GB >/dev/null || exit 2
for off in 0 1000 5000 9000; do
  head -c $((3 << 20)) /dev/urandom | dd of="$CABIN_DATA_DIR/vms/base/disk.img" bs=1M seek="$off" conv=notrunc status=none
done
cabin vm push base torture-vm:base --registry "$reg" --organization torture >/dev/null || exit 2

# --- one operation: prepare, the command, what a retry may answer -----------------
n=0
prepare() {  # $1 op: makes what the op works on, prints the command's arguments
  case $1 in
    pull) cabin image rm "$reg/torture/busybox" >/dev/null 2>&1; cabin image prune >/dev/null 2>&1
          echo "image pull $reg/torture/busybox" ;;
    import) cabin image rm imported >/dev/null 2>&1; echo "image import $work/rootfs imported" ;;
    run) echo "run --rm torture true" ;;
    run-d) echo "run -d torture sleep 600" ;;
    rm) local id; id=$(cabin run -d torture sleep 600) || return 1; echo "rm -f $id" ;;
    volume) echo "volume create vol$n" ;;
    vm-create) echo "vm create vm$n --disk-size 10GB" ;;
    vm-clone) echo "vm clone base clone$n" ;;
    vm-push) echo "vm push base torture-vm:t$n --registry $reg --organization torture" ;;
    vm-pull) cabin vm delete pulled --force >/dev/null 2>&1
             echo "vm pull torture-vm:base pulled --registry $reg --organization torture" ;;
  esac
}
# Whether a retry's failure is the killed run's success (the object it made exists and
# is whole).
finished_before() {  # $1 op, $2 retry output
  case $1 in
    vm-create) grep -qi "already exists" <<<"$2" && cabin vm get "vm$n" -f json >/dev/null ;;
    vm-clone) grep -qi "already exists" <<<"$2" && cabin vm get "clone$n" -f json >/dev/null ;;
    vm-pull) grep -qi "already exists" <<<"$2" && cabin vm get pulled -f json >/dev/null ;;
    rm) grep -qi "no such container" <<<"$2" ;;
    *) return 1 ;;
  esac
}
# Keeps the data directory small between rounds.
tidy() {
  local ids; ids=$(cabin ps -aq 2>/dev/null)
  [ -z "$ids" ] || cabin rm -f $ids >/dev/null 2>&1
  for v in $(cabin vm ls -f json 2>/dev/null | python3 -c 'import json,sys; print(" ".join(v["name"] for v in json.load(sys.stdin)))'); do
    [ "$v" = base ] || cabin vm delete "$v" --force >/dev/null 2>&1
  done
  cabin volume prune >/dev/null 2>&1 || true
}

declare -A took killed early failures
failed=0
start=$SECONDS
IFS=, read -ra oplist <<<"$ops"
for op in "${oplist[@]}"; do
  n=$((n + 1))
  args=$(prepare "$op") || { echo "torture.sh: preparing $op failed" >&2; exit 1; }
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  out=$(cabin $args 2>&1) || { echo "torture.sh: $op failed before any kill: $out" >&2; exit 1; }
  took[$op]=$(( ($(date +%s%N) - t0) / 1000000 ))
  killed[$op]=0 early[$op]=0 failures[$op]=0
  say "$op: $args took ${took[$op]} ms unkilled"
done
tidy
for round in $(seq "$rounds"); do
  for op in "${oplist[@]}"; do
    [ $((SECONDS - start)) -lt "$seconds" ] || break 2
    n=$((n + 1))
    args=$(prepare "$op") || { echo "round $round $op: preparing failed" >&2; failed=1; continue; }
    delay_ms=$(( RANDOM * (took[$op] * 11 / 10 + 1) / 32768 ))
    # shellcheck disable=SC2086
    "$CABIN" $args >"$work/out" 2>&1 &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    if kill -KILL "$pid" 2>/dev/null; then
      killed[$op]=$((killed[$op] + 1))
    else
      # It ended first: later rounds aim earlier (resumed VMs and warm caches make the
      # command faster than its first, measured run).
      early[$op]=$((early[$op] + 1))
      took[$op]=$(( took[$op] * 3 / 4 > 20 ? took[$op] * 3 / 4 : 20 ))
    fi
    wait "$pid" 2>/dev/null
    # shellcheck disable=SC2086
    if ! retry=$(cabin $args 2>&1) && ! finished_before "$op" "$retry"; then
      echo "round $round $op (killed after ${delay_ms} ms): the retry failed: $retry" >&2
      failures[$op]=$((failures[$op] + 1)); failed=1
    fi
    if ! check=$(cabin system check 2>&1); then
      echo "round $round $op (killed after ${delay_ms} ms): system check: $check" >&2
      failures[$op]=$((failures[$op] + 1)); failed=1
      cabin system check --repair >/dev/null 2>&1
    fi
    [ $((round % 5)) -ne 0 ] || [ "$op" != "${oplist[-1]}" ] || tidy
  done
done
printf '%-10s %9s %7s %13s %9s\n' operation unkilled killed "done-before" failures
total=0
for op in "${oplist[@]}"; do
  printf '%-10s %7sms %7s %13s %9s\n' "$op" "${took[$op]}" "${killed[$op]}" "${early[$op]}" "${failures[$op]}"
  total=$((total + killed[$op]))
done
echo "$total kills in $((SECONDS - start)) s; $([ $failed = 0 ] && echo "every retry succeeded and every check passed" || echo FAILED)"
exit $failed
