#!/usr/bin/env bash
# The whole test suite: installs and builds what the tests need, then runs every test.
# The integration tests boot real VMs (under TCG where KVM cannot run a guest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --vm-kernel
# The hostile guest init of tests/hostile_guest.rs (test-only, never installed).
scripts/build-init.sh --features hostile --bin cabin-hostile-init >/dev/null
printf '\033[1m==> cargo fmt --check, clippy\033[0m\n' >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
printf '\033[1m==> cargo test\033[0m\n' >&2
cargo test --workspace --locked "$@"
printf '\033[1m==> fuzzing every parser fed from outside, 20 s each\033[0m\n' >&2
scripts/fuzz.sh 20
