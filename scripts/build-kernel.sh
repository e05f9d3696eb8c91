#!/usr/bin/env bash
# Builds one of cabin's guest kernels from Debian's linux-source package and the config
# fragments in guest/kernel/, once per (fragments, source version, recipe), and caches the
# result outside the source tree:  ${XDG_CACHE_HOME:-~/.cache}/cabin/kernel/<hash>/{vmlinux,bzImage}
# Prints the cache directory on stdout. A build that fails leaves nothing in the cache.
#   usage: build-kernel.sh [container|vm]
#   container (default): the microVM kernel for containers (cabin-guest.config), pointed to
#                        by kernel/current;
#   vm: that plus cabin-vm.config (ACPI, PCI, EFI stub, display, USB) for full VMs on q35,
#       pointed to by kernel/current-vm.
set -euo pipefail

RECIPE=1   # bump when this script changes what it produces
here=$(cd "$(dirname "$0")/.." && pwd)
flavour=${1:-container}
fragments=("$here/guest/kernel/cabin-guest.config")
case "$flavour" in
  container) pointer=current ;;
  vm) pointer=current-vm; fragments+=("$here/guest/kernel/cabin-vm.config") ;;
  *) echo "build-kernel: unknown kernel '$flavour' (container or vm)" >&2; exit 2 ;;
esac
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/cabin/kernel"

src=""
for v in 6.12 6.1; do
  if [ -f "/usr/src/linux-source-$v.tar.xz" ]; then src="/usr/src/linux-source-$v.tar.xz"; break; fi
done
if [ -z "$src" ]; then
  echo "build-kernel: no kernel source found; install it with: apt-get install linux-source-6.12" >&2
  exit 1
fi
src_version=$(dpkg-query -W -f='${Version}' "$(basename "$src" .tar.xz)" 2>/dev/null || stat -c %s "$src")
hash=$( { echo "recipe=$RECIPE"; echo "source=$src $src_version"; cat "${fragments[@]}"; } | sha256sum | cut -c1-16)
out="$cache_root/$hash"
# cabin boots ~/.cache/cabin/kernel/current/vmlinux (containers) and current-vm/bzImage
# (full VMs) unless told otherwise.
point_current() { ln -sfn "$hash" "$cache_root/$pointer.tmp" && mv -T "$cache_root/$pointer.tmp" "$cache_root/$pointer"; }
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  point_current; echo "$out"; exit 0
fi

for tool in make gcc bc bison flex lz4; do
  command -v "$tool" >/dev/null || {
    echo "build-kernel: '$tool' is missing; install: apt-get install build-essential bc bison flex libelf-dev lz4" >&2
    exit 1
  }
done

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.build-$hash.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-kernel: building the $flavour kernel from $(basename "$src") (cache key $hash); takes about 5 minutes on 2 cores" >&2
tar -xf "$src" -C "$work"
tree=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -n1)
log="$work/build.log"
(
  cd "$tree"
  make -s tinyconfig
  KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m .config "${fragments[@]}"
  make -s olddefconfig
) >"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "build-kernel: configuring failed (log above)" >&2; exit 1; }

# Every option of the fragments must have taken: kconfig silently drops what it cannot
# satisfy. A later fragment overrides an earlier one, so each key is checked at its last value.
bad=0
wanted=$(cat "${fragments[@]}" | grep -v '^#' | grep '=' | awk -F= '{last[$1]=$0; order[NR]=$1} END {for (i=1;i<=NR;i++) if (order[i] in last) {print last[order[i]]; delete last[order[i]]}}')
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue;; esac
  key=${line%%=*}; val=${line#*=}
  if [ "$val" = n ]; then
    if grep -q "^$key=" "$tree/.config"; then echo "build-kernel: $key should be off but is $(grep "^$key=" "$tree/.config")" >&2; bad=1; fi
  elif ! grep -qx -- "$line" "$tree/.config"; then
    echo "build-kernel: $line did not take (got: $(grep "^$key=\|^# $key " "$tree/.config" || echo absent))" >&2; bad=1
  fi
done <<< "$wanted"
[ "$bad" = 0 ] || { echo "build-kernel: the config fragments do not apply to this source; fix ${fragments[*]}" >&2; exit 1; }

( cd "$tree" && make -j"$(nproc)" vmlinux bzImage ) >>"$log" 2>&1 || {
  tail -n 40 "$log" >&2; echo "build-kernel: kernel build failed (log tail above)" >&2; exit 1; }

stage="$work/out"
mkdir -p "$stage"
cp "$tree/vmlinux" "$stage/vmlinux"
strip --strip-debug "$stage/vmlinux" 2>/dev/null || true
cp "$tree/arch/x86/boot/bzImage" "$stage/bzImage"
cp "$tree/.config" "$stage/config"
echo "$(basename "$src") $src_version" > "$stage/source"
rm -rf "$out"
mv "$stage" "$out"
point_current
echo "build-kernel: done: $out" >&2
echo "$out"
