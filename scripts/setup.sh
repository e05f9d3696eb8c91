#!/usr/bin/env bash
# Installs what cabin needs on a Debian 12 host and builds it: Debian packages (only the
# missing ones), the static guest init, the guest kernel (cached), and cabin itself.
#   scripts/setup.sh [--release] [--vm-kernel]
#     --release    also builds the optimised cabin binary
#     --vm-kernel  also builds the kernel for full VMs now (otherwise the first
#                  `cabin vm create --image` builds it, saying so)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

packages=(
  qemu-system-x86 qemu-utils          # the VMM and qemu-img (per-container writable layers)
  ovmf                                # UEFI firmware for full VMs (cabin vm)
  openssh-client                      # cabin vm ssh, and its key for VMs made from images
  linux-source-6.12 build-essential bc bison flex libelf-dev lz4   # the guest kernel build
  e2fsprogs                           # mkfs.ext4 -d: root filesystem images, volumes
  iproute2 nftables                   # --network bridge: the host bridge, NAT, published ports
  busybox-static                      # the demo and test root filesystem
  debootstrap                         # tests: a real Debian root filesystem
  tmux cpio file curl                 # tests: terminals, archive checks, HTTP to containers
  docker-registry skopeo apache2-utils openssl   # tests: a real registry (htpasswd, tokens), an independent OCI client
  python3-venv                        # tests: pylume and the docker SDK (PyPI) against cabin serve
  docker.io                           # bench/docker.sh: Docker's engine with runc, the baseline (private socket)
  containerd                          # tests and bench/containerd.sh: containerd drives cabin's shim (private socket)
  containernetworking-plugins         # tests: CNI's bridge and host-local plugins for a pod network (cri.rs)
  protobuf-compiler                   # tests: the CRI client's API (crate k8s-cri) is generated with protoc
  docker-compose                      # tests: Debian's docker-compose (1.29) against cabin's Docker API
  grub-efi-amd64-bin grub-common mtools   # VMs made from images: a disk with its own boot loader (EFI partition)
  xorriso                             # tests: a UEFI-bootable installer ISO (grub-mkrescue)
  dnsmasq-base                        # tests: a LAN's DHCP server for bridged VMs
  chromium                            # tests: the web console in a real (headless) browser
)
# The web console's libraries (noVNC, xterm.js) come from the npm registry, pinned by
# web/package-lock.json; Node.js and npm install them (any recent Node; Debian's will do).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cmp -s web/package-lock.json web/node_modules/.cabin-installed-lock 2>/dev/null; then
  say "installing the web console's libraries from the npm registry (web/package-lock.json)"
  npm ci --prefix web --no-audit --no-fund --loglevel=error >/dev/null
  cp web/package-lock.json web/node_modules/.cabin-installed-lock
fi

say "building cabin-init (static guest init)"
scripts/build-init.sh >/dev/null
release=0; vm_kernel=0
for arg in "$@"; do
  case "$arg" in
    --release) release=1 ;;
    --vm-kernel) vm_kernel=1 ;;
    *) echo "setup.sh: unknown option $arg (--release, --vm-kernel)" >&2; exit 2 ;;
  esac
done
say "building the guest kernel for containers (cached after the first build, which takes about 5 minutes)"
scripts/build-kernel.sh container >/dev/null
if [ "$vm_kernel" = 1 ]; then
  say "building the guest kernel for full VMs (cached after the first build, about 5 minutes)"
  scripts/build-kernel.sh vm >/dev/null
fi
if [ "$release" = 1 ]; then
  say "building cabin"
  cargo build --release --locked -p cabin-cli
fi
