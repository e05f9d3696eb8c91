#!/usr/bin/env bash
# Builds the Lumier image, cabin-lumier:latest, into cabin's image store: one static
# binary (cabin-lumier, with the viewer's web files built in) and nothing else, run as
# the image's entry point. Lumier's variables and their defaults are the image's
# environment; port 8006 is the viewer.
#   scripts/make-lumier-image.sh [NAME[:TAG]]     (CABIN_DATA_DIR picks the store)
# The same image for Docker: docker build -f lumier/Dockerfile . (after this script),
# or `cabin image save cabin-lumier:latest | docker load`.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-cabin-lumier:latest}
[ -d web/node_modules/@novnc/novnc ] || npm ci --prefix web --no-audit --no-fund --loglevel=error >/dev/null
# Static, as cabin-init: the image has no libc. Its own target directory keeps the
# host build's flags apart.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p cabin-lumier --target x86_64-unknown-linux-gnu >&2
bin=target/x86_64-unknown-linux-gnu/release/cabin-lumier
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/cabin-lumier"
printf 'root:x:0:0:root:/:/cabin-lumier\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
cabin=${CABIN:-}
if [ -z "$cabin" ]; then
  if command -v cabin >/dev/null 2>&1; then cabin=cabin
  else cargo build --locked -p cabin-cli >&2; cabin=target/debug/cabin; fi
fi
"$cabin" image import "$root" "$name" \
  --entrypoint /cabin-lumier --expose 8006 \
  -e VM_NAME=lumier -e CPU_CORES=4 -e RAM_SIZE=8192 -e DISPLAY=1024x768 \
  -e LUME_API_HOST=host.docker.internal -e LUME_API_PORT=7777 -e LUMIER_DEBUG=0 >/dev/null
echo "$name"
