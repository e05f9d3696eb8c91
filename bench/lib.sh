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

# host_accel CABIN: the accelerator cabin (the binary CABIN) picks on this host.
host_accel() {
  "$1" system info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])'
}
