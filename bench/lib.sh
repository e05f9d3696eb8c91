# Shared by the bench scripts (sourced): Debian's dockerd with runc as a baseline,
# started privately (its own socket, data and exec roots; no bridge, no iptables).
# start_private_dockerd DIR: starts it under DIR, sets dockerd_pid, waits until it
# answers on DIR/dockerd.sock (up to 10 s).
start_private_dockerd() {
  local dir=$1
  dockerd --host "unix://$dir/dockerd.sock" --data-root "$dir/dockerd" --exec-root "$dir/dockerd-exec" \
    --pidfile "$dir/dockerd.pid" --iptables=false --ip6tables=false --bridge=none >"$dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do
    curl -fs --unix-socket "$dir/dockerd.sock" http://x/_ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "dockerd did not start: $(tail -3 "$dir/dockerd.log")" >&2
  return 1
}

# runs_and_command DEFAULT_N ARGS...: for scripts taking `[N] [-- CMD...]`: sets N (the
# first argument, else DEFAULT_N) and CMD (what follows `--`, else `true`).
runs_and_command() {
  N=${2:-$1}
  shift 2 || shift $#
  [ "${1:-}" = "--" ] && shift
  CMD=("${@:-true}")
}

# cabin_binary: the cabin to measure, CABIN_BIN or this checkout's release build (built
# if missing).
cabin_binary() {
  local c=${CABIN_BIN:-target/release/cabin}
  [ -x "$c" ] || cargo build --release --locked -p cabin-cli >/dev/null
  echo "$c"
}

# host_accel CABIN: the accelerator cabin (the binary CABIN) picks on this host.
host_accel() {
  "$1" system info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])'
}

# start_registry DIR: Debian's docker-registry on a free port of 127.0.0.1, its storage
# and log under DIR; sets REG_PORT and REG_PID (also added to PIDS, the caller's array
# of processes to end).
start_registry() {
  local dir=$1
  REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$dir/storage"
  printf 'version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$dir/storage" "$REG_PORT" > "$dir/registry.yml"
  docker-registry serve "$dir/registry.yml" > "$dir/log" 2>&1 & REG_PID=$!
  PIDS+=("$REG_PID")
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$REG_PORT) 2>/dev/null && return 0; sleep 0.1; done
  echo "registry in $dir did not start" >&2; cat "$dir/log" >&2; exit 1
}
stop_registry() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
