#!/usr/bin/env bash
# Builds cabin-init, the guest's PID 1, as a static executable (no libc needed in the
# guest). The result is target/x86_64-unknown-linux-gnu/release/cabin-init, where cabin
# finds it next to its own build; CABIN_INIT points cabin at another one.
set -euo pipefail
cd "$(dirname "$0")/.."
# With an explicit --target, RUSTFLAGS reach only the target's crates, not build scripts
# or proc macros, and the artifacts land apart from the host build.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p cabin-init --target x86_64-unknown-linux-gnu "$@"
echo "$PWD/target/x86_64-unknown-linux-gnu/release/cabin-init"
