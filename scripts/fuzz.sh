#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for SECONDS (default 30) from its
# committed seeds (fuzz/seeds/<target>), growing a scratch corpus in
# fuzz/corpus/<target> (ignored by git). Exits non-zero on the first crash;
# libFuzzer leaves the input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh --check   # exit 0 if this machine can build the fuzzers
# Exit status 3: this machine cannot build the fuzzers (no C++ compiler, a
# rustc that refuses -Z, or cargo-fuzz could not be installed); .ci/run
# skips fuzzing then, and fails on any other non-zero status.
# Installs cargo-fuzz from crates.io if missing. Needs only the stable
# toolchain: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly flags.
# Built without a sanitizer: the crate forbids unsafe code, so the fuzzers
# look for panics, overflows (debug assertions are on), hangs and memory
# growth, and run about twice as fast as under AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2

can_build() {
  # libfuzzer-sys compiles libFuzzer's C++; rustc must take -Z flags.
  command -v c++ >/dev/null 2>&1 && rustc -Z help >/dev/null 2>&1
}

if [ "${1:-}" = "--check" ]; then
  can_build
  exit
fi
if ! can_build; then
  echo "fuzz.sh: needs a C++ compiler and a rustc that accepts -Z (RUSTC_BOOTSTRAP=1)" >&2
  exit 3
fi

secs=${1:-30}
shift || true
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION..." >&2
  if ! cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"; then
    echo "fuzz.sh: could not install cargo-fuzz" >&2
    exit 3
  fi
fi

cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build -s none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${secs}s" >&2
  log="corpus/$t.log"
  # -rss_limit_mb catches unbounded buffering; -timeout a hang on one input.
  rc=0
  cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
    exit "$rc"
  fi
  grep -E 'DONE|stat::number_of_executed_units' "$log" >&2 || true
done
echo "fuzz: ${#targets[@]} targets ran clean for ${secs}s each" >&2
