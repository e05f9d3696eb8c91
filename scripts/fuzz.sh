#!/usr/bin/env bash
# Fuzzes every parser that reads data from outside (fuzz/fuzz_targets/, cargo fuzz's
# layout, libFuzzer with AddressSanitizer) for SECONDS each, starting from the committed
# seeds (fuzz/corpus/TARGET) plus what earlier runs on this machine found
# (target/fuzz/corpus/TARGET), and prints per target the executions, libFuzzer's coverage
# counts and any crash. Exits 1 when a target crashed (its input is kept under
# fuzz/artifacts/TARGET/, and libFuzzer's report in target/fuzz/logs/TARGET.log).
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default: 60 seconds, every target
# Installs cargo-fuzz (crates.io) when it is missing. The toolchain is stable, so the
# sanitizer flags are allowed through RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
seconds=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || {
  say "installing cargo-fuzz from crates.io"
  cargo install --locked --quiet cargo-fuzz@0.13.2
}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
work=$PWD/target/fuzz
mkdir -p "$work/logs" "$work/tmp"
say "building ${#targets[@]} fuzz targets"
(cd fuzz && cargo fuzz build --target-dir "$work/build") >&2
failed=0
printf '%-14s %10s %8s %7s %7s %7s  %s\n' target runs exec/s cov ft corpus result
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  log=$work/logs/$t.log
  # One scratch directory per run, removed after: the targets write files.
  tmp=$(mktemp -d "$work/tmp/$t.XXXX")
  if (cd fuzz && TMPDIR=$tmp cargo fuzz run --target-dir "$work/build" "$t" "$corpus" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1); then
    result=ok
  else
    result="CRASH: $(ls -t "fuzz/artifacts/$t" | head -1) (see $log)"
    failed=1
  fi
  rm -rf "$tmp"
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  field() { sed -nE "s|.* $1: *([0-9]+).*|\\1|p" <<<"$done_line"; }
  corp=$(sed -nE 's|.* corp: *([0-9]+)/.*|\1|p' <<<"$done_line")
  printf '%-14s %10s %8s %7s %7s %7s  %s\n' "$t" "${runs:-?}" "$(field exec/s)" "$(field cov)" \
    "$(field ft)" "${corp:-?}" "$result"
done
exit $failed
