#!/usr/bin/env bash
# Installs cabin under a prefix: the `cabin` command in PREFIX/bin, with containerd's
# shim for cabin (containerd-shim-cabin-v2, the runtime io.containerd.cabin.v2); what it runs in its
# guests (cabin-init, the container kernel, the VM kernel) in PREFIX/lib/cabin, where
# an installed cabin looks for them; and the systemd units that run `cabin serve` with
# the Docker socket (PREFIX/lib/systemd/{system,user}/cabin.service).
#   scripts/install.sh [--prefix DIR] [--binary PATH]     (default prefix: /usr/local)
#   scripts/install.sh [--prefix DIR] --uninstall
# It first runs scripts/setup.sh (Debian packages, cabin-init, the kernels, the release
# build of cabin); with --binary PATH it installs that cabin binary as it is, with the
# guest files setup.sh has built before.
set -euo pipefail
self=$(readlink -f "$0")
here=$PWD
cd "$(dirname "$self")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
usage() { sed -n '2,10p' "$self" | sed 's/^# \{0,1\}//' >&2; }

prefix=/usr/local
binary=""
action=install
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown option $1" >&2; usage; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) prefix="$here/$prefix" ;; esac
case "$binary" in /*|"") ;; *) binary="$here/$binary" ;; esac
bin="$prefix/bin"
lib="$prefix/lib/cabin"
system_unit="$prefix/lib/systemd/system/cabin.service"
user_unit="$prefix/lib/systemd/user/cabin.service"
installed=("$bin/cabin" "$bin/containerd-shim-cabin-v2" "$lib/cabin-init" "$lib/vmlinux" "$lib/bzImage-vm" "$system_unit" "$user_unit")

if [ "$action" = uninstall ]; then
  for f in "${installed[@]}"; do
    [ -e "$f" ] && { rm -f "$f"; echo "removed $f"; }
  done
  rmdir "$lib" 2>/dev/null || true
  echo "cabin is uninstalled from $prefix (its data directories are left as they are)"
  exit 0
fi

if [ -n "$binary" ]; then
  # A build of one's own, installed as it is, with the guest files already built.
  [ -x "$binary" ] || { echo "install: $binary is not an executable" >&2; exit 1; }
  init="$PWD/target/x86_64-unknown-linux-gnu/release/cabin-init"
  [ -f "$init" ] || { echo "install: $init is missing: run scripts/setup.sh first" >&2; exit 1; }
else
  scripts/setup.sh --release --vm-kernel
  binary=target/release/cabin
  init=$(scripts/build-init.sh 2>/dev/null)
fi
# (Cached: these only print where the kernels are once built; the VM kernel is built
# here when no VM was made from an image yet.)
container_kernel=$(scripts/build-kernel.sh container)
vm_kernel=$(scripts/build-kernel.sh vm)

say "installing under $prefix"
# Each file is written beside its place and renamed into it: a running cabin never
# sees half a binary.
put() { # mode source destination
  mkdir -p "$(dirname "$3")"
  install -m "$1" "$2" "$3.new"
  mv -f "$3.new" "$3"
  echo "installed $3"
}
put 0755 "$binary" "$bin/cabin"
# The shim is built beside cabin (the same build, the same libraries).
shim="$(dirname "$binary")/containerd-shim-cabin-v2"
[ -x "$shim" ] || { echo "install: $shim is missing: build it with cabin (cargo build -p cabin-cli)" >&2; exit 1; }
put 0755 "$shim" "$bin/containerd-shim-cabin-v2"
put 0755 "$init" "$lib/cabin-init"
put 0644 "$container_kernel/vmlinux" "$lib/vmlinux"
put 0644 "$vm_kernel/bzImage" "$lib/bzImage-vm"
unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s|@PREFIX@|$prefix|g" packaging/cabin.service.in >"$unit"
put 0644 "$unit" "$system_unit"
sed "s|@PREFIX@|$prefix|g" packaging/cabin-user.service.in >"$unit"
put 0644 "$unit" "$user_unit"

cat <<MSG

cabin is installed: $bin/cabin (add $bin to PATH if it is not there).
Run it as a service, with the Docker socket:
  as root:   systemctl daemon-reload && systemctl enable --now cabin
             export DOCKER_HOST=unix:///run/cabin/docker.sock
  as a user: systemctl --user daemon-reload && systemctl --user enable --now cabin
             export DOCKER_HOST=unix://\$XDG_RUNTIME_DIR/cabin/docker.sock
(systemd reads units from $prefix/lib/systemd only for the prefixes it knows, such as
/usr/local and /usr; for another prefix, link the unit into /etc/systemd/system.)
Without systemd: $bin/cabin serve --docker-socket /run/cabin/docker.sock
containerd runs tasks in cabin's VMs with --runtime io.containerd.cabin.v2 (its shim is
$bin/containerd-shim-cabin-v2); Kubernetes: see docs/KUBERNETES.md.
MSG
