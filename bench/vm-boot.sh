#!/usr/bin/env bash
# Full VMs made from images (issue 5): the time from `cabin vm run --detach` of a VM made
# from a Debian 12 image (systemd, udev, dbus, sshd) to its login prompt on the serial
# console, next to raw QEMU booting the same kernel, command line and disk (a copy) on
# the same q35 machine with the same display adapter, in the same run. Then suspend and
# resume (issue 16): `vm run` of a booted VM and of a suspended one (suspended once its
# boot has finished), each until a command runs in the guest over SSH, and how long
# `vm suspend` takes. Then a VM image carrying its memory (issue 16): `vm push
# --with-memory` of the suspended VM to Debian's docker-registry on 127.0.0.1, and
# `vm pull` + `vm run` of it (resuming) next to `vm pull --without-memory` + `vm run`
# (what Lume's layers alone give: the disk boots on its own, UEFI and DHCP), each until
# a command runs in the guest over SSH.
# usage: bench/vm-boot.sh [RUNS]   (default 3; median reported; needs root: debootstrap
# and cabin's bridge)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cabin=${CABIN_BIN:-target/release/cabin}
[ -x "$cabin" ] || cargo build --release --locked -p cabin-cli >/dev/null
rootfs=$(scripts/make-debian-rootfs.sh --system)
work=$(mktemp -d /tmp/cabin-bench.XXXXXX)
export CABIN_DATA_DIR="$work/data"
qemu_pid=""
declare -a PIDS=()
. bench/lib.sh
cleanup() {
  for vm in deb $(seq -f 'mem%g' "$RUNS") $(seq -f 'boot%g' "$RUNS"); do
    "$cabin" vm stop "$vm" >/dev/null 2>&1 || true
  done
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
# Waits for a login prompt in FILE; prints the milliseconds since T0.
until_login() {
  local file=$1 t0=$2
  for _ in $(seq 6000); do
    if grep -aq "login:" "$file" 2>/dev/null; then echo $(( ($(now) - t0) / 1000000 )); return; fi
    sleep 0.02
  done
  echo "no login prompt in $file" >&2; return 1
}

"$cabin" image import "$rootfs" debian-system:12 >/dev/null 2>&1
t0=$(now)
"$cabin" vm create deb --image debian-system:12 --disk-size 20GB --memory 1GB --cpu 2 >/dev/null
create_ms=$(( ($(now) - t0) / 1000000 ))
vmdir="$CABIN_DATA_DIR/vms/deb"
cp --sparse=always "$vmdir/disk.img" "$work/raw.img"
# The raw baseline uses the accelerator cabin picks on this host.
accel=$("$cabin" system info --format json | sed -n 's/.*"accelerator":"\([a-z]*\)".*/\1/p')
case "$accel" in
  kvm) cpu=host ;;
  *) accel=tcg,thread=multi cpu=max ;;
esac

cabin_ms=$(for r in $(seq "$RUNS"); do
  t0=$(now)
  "$cabin" vm run deb --detach >/dev/null
  until_login "$vmdir/console.log" "$t0"
  "$cabin" vm stop deb >/dev/null
done | median)

cmdline="root=/dev/vda2 rootfstype=ext4 ro console=tty0 console=ttyS0 net.ifnames=0 ip=10.0.2.15::10.0.2.2:255.255.255.0:raw:eth0:off:10.0.2.3 systemd.hostname=raw"
raw_ms=$(for r in $(seq "$RUNS"); do
  log="$work/raw-$r.log"
  t0=$(now)
  qemu-system-x86_64 -nodefaults -no-user-config -machine q35 -accel "$accel" -cpu "$cpu" -smp 2 -m 1G \
    -kernel "$vmdir/vmlinuz" -append "$cmdline" \
    -drive if=none,id=d0,format=raw,file="$work/raw.img" -device virtio-blk-pci,drive=d0 \
    -device virtio-vga -display none -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -serial file:"$log" >/dev/null 2>&1 &
  qemu_pid=$!
  # (a subshell: the exit trap does not see qemu_pid)
  until_login "$log" "$t0" || { kill "$qemu_pid"; exit 1; }
  kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=""
done | median)

# Until a command runs in the guest (VM NAME, default deb) over SSH; prints the
# milliseconds since T0.
until_ssh() {
  local t0=$1 vm=${2:-deb}
  for _ in $(seq 3000); do
    if "$cabin" vm ssh "$vm" -t 5 -- true >/dev/null 2>&1; then echo $(( ($(now) - t0) / 1000000 )); return; fi
    sleep 0.05
  done
  echo "$vm's SSH server never answered" >&2; exit 1
}
# Until the guest's SSH server greets (a TCP connection to port 22 reads "SSH-"): the
# guest's network and sshd answer, without the SSH handshake's cryptography, which
# under TCG costs about a second either way. Prints the milliseconds since T0.
until_greets() {
  local t0=$1 vm=${2:-deb} ip
  for _ in $(seq 6000); do
    ip=$("$cabin" vm get "$vm" -f json | sed -n 's/.*"ipAddress" : "\([0-9.]*\)".*/\1/p')
    if [ -n "$ip" ] && timeout 1 bash -c "exec 3<>/dev/tcp/$ip/22 && head -c 4 <&3" 2>/dev/null | grep -q SSH-; then
      echo $(( ($(now) - t0) / 1000000 )); return
    fi
    sleep 0.02
  done
  echo "$vm's SSH server never greeted" >&2; return 1
}
: >"$work/boot-greet.ms"
boot_ssh_ms=$(for r in $(seq "$RUNS"); do
  t0=$(now)
  "$cabin" vm run deb --detach >/dev/null
  until_greets "$t0" >>"$work/boot-greet.ms"
  until_ssh "$t0"
  "$cabin" vm stop deb >/dev/null
done | median)
boot_greet_ms=$(median <"$work/boot-greet.ms")
"$cabin" vm run deb --detach >/dev/null
until_ssh "$(now)" >/dev/null
resume_ms=$(for r in $(seq "$RUNS"); do
  # Suspended once the guest has finished starting up (as one suspends an idle VM).
  "$cabin" vm ssh deb -- systemctl is-system-running --wait >/dev/null 2>&1 || true
  t0=$(now)
  "$cabin" vm suspend deb >/dev/null
  echo $(( ($(now) - t0) / 1000000 )) >>"$work/suspend.ms"
  stat -c %s "$vmdir/suspended.state" >>"$work/state.bytes"
  t0=$(now)
  "$cabin" vm run deb --detach >/dev/null
  until_greets "$t0" >>"$work/resume-greet.ms"
  until_ssh "$t0"
done | median)
resume_greet_ms=$(median <"$work/resume-greet.ms")

# The suspended VM pushed with its memory, then pulled as new VMs (the original deleted,
# as on another host: a copy does not resume while a VM of this host has its MAC
# address): resumed, and booted from Lume's layers alone.
"$cabin" vm ssh deb -- systemctl is-system-running --wait >/dev/null 2>&1 || true
"$cabin" vm suspend deb >/dev/null
start_registry "$work/reg"
at=(--registry "127.0.0.1:$REG_PORT" --organization bench)
"$cabin" vm push deb deb-mem:1 --with-memory "${at[@]}" >/dev/null 2>&1
"$cabin" vm delete --force deb >/dev/null
for r in $(seq "$RUNS"); do
  t0=$(now)
  "$cabin" vm pull deb-mem:1 "mem$r" "${at[@]}" >/dev/null 2>&1
  echo $(( ($(now) - t0) / 1000000 )) >>"$work/pull-mem.ms"
  "$cabin" vm run "mem$r" --detach >/dev/null
  until_greets "$t0" "mem$r" >>"$work/pull-resume-greet.ms"
  until_ssh "$t0" "mem$r" >>"$work/pull-resume.ms"
  grep -aq "saved state" "$CABIN_DATA_DIR/vms/mem$r/console.log" \
    && { echo "mem$r did not resume: $(grep -a 'saved state' "$CABIN_DATA_DIR/vms/mem$r/console.log")" >&2; exit 1; }
  "$cabin" vm stop "mem$r" >/dev/null
  "$cabin" vm delete --force "mem$r" >/dev/null
  t0=$(now)
  "$cabin" vm pull deb-mem:1 "boot$r" --without-memory "${at[@]}" >/dev/null 2>&1
  echo $(( ($(now) - t0) / 1000000 )) >>"$work/pull-boot.ms"
  "$cabin" vm run "boot$r" --detach >/dev/null
  until_greets "$t0" "boot$r" >>"$work/pull-boot-greet.ms"
  until_ssh "$t0" "boot$r" >>"$work/pull-boot-ssh.ms"
  "$cabin" vm stop "boot$r" >/dev/null
  "$cabin" vm delete --force "boot$r" >/dev/null
done
state_pushed_mb=$(du -sm --apparent-size "$work/reg/storage" | cut -f1)
suspend_ms=$(median <"$work/suspend.ms")
state_mb=$(median <"$work/state.bytes" | awk '{printf "%.0f", $1 / 1048576}')

echo "VM from a Debian 12 image (systemd) to its serial login prompt, $accel, 2 vCPUs, 1 GiB, median of $RUNS"
printf '%-58s %10s\n' "measure" "ms"
printf '%-58s %10d\n' "cabin vm create --image (20 GB disk, once)" "$create_ms"
printf '%-58s %10d\n' "cabin vm run --detach -> login prompt" "$cabin_ms"
printf '%-58s %10d\n' "raw qemu-system-x86_64, same kernel/disk -> login prompt" "$raw_ms"
awk -v c="$cabin_ms" -v r="$raw_ms" 'BEGIN { printf "%-58s %9.2fx\n", "cabin / raw", c / r }'
echo
echo "Suspend and resume, the same VM: vm run until a command runs in the guest over SSH"
printf '%-58s %10s\n' "measure" "ms"
printf '%-58s %10d\n' "cabin vm run --detach, booting -> sshd greets" "$boot_greet_ms"
printf '%-58s %10d\n' "cabin vm run --detach, booting -> SSH command ran" "$boot_ssh_ms"
printf '%-58s %10d\n' "cabin vm suspend (state of ${state_mb} MiB written)" "$suspend_ms"
printf '%-58s %10d\n' "cabin vm run --detach, resuming -> sshd greets" "$resume_greet_ms"
printf '%-58s %10d\n' "cabin vm run --detach, resuming -> SSH command ran" "$resume_ms"
awk -v r="$resume_greet_ms" -v b="$boot_greet_ms" 'BEGIN { printf "%-58s %9.2fx\n", "resume / boot, sshd greets", r / b }'
awk -v r="$resume_ms" -v b="$boot_ssh_ms" 'BEGIN { printf "%-58s %9.2fx\n", "resume / boot, SSH command ran", r / b }'
echo
echo "A VM image with its memory: vm pull + vm run until a command runs over SSH (registry on 127.0.0.1; ${state_pushed_mb} MiB stored)"
printf '%-58s %10s\n' "measure" "ms"
printf '%-58s %10d\n' "cabin vm pull (with its memory)" "$(median <"$work/pull-mem.ms")"
printf '%-58s %10d\n' "cabin vm pull --without-memory (Lume's layers)" "$(median <"$work/pull-boot.ms")"
printf '%-58s %10d\n' "pull + run, resuming -> sshd greets" "$(median <"$work/pull-resume-greet.ms")"
printf '%-58s %10d\n' "pull + run, resuming -> SSH command ran" "$(median <"$work/pull-resume.ms")"
printf '%-58s %10d\n' "pull --without-memory + run, booting -> sshd greets" "$(median <"$work/pull-boot-greet.ms")"
printf '%-58s %10d\n' "pull --without-memory + run, booting -> SSH command ran" "$(median <"$work/pull-boot-ssh.ms")"
awk -v r="$(median <"$work/pull-resume.ms")" -v b="$(median <"$work/pull-boot-ssh.ms")" 'BEGIN { printf "%-58s %9.2fx\n", "pull+resume / pull+boot, SSH command ran", r / b }'
