#!/usr/bin/env bash
# Bounded fuzzing of the TURN message path, for CI and by hand.
#   relay-probe/fuzz/run.sh [seconds]   (default 60)
# The toolchain here is stable only: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z flags (sanitizer, coverage) to the stable compiler. cargo-fuzz is
# installed from crates.io when missing.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p corpus/turn_messages
cargo fuzz run turn_messages corpus/turn_messages -- \
  -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1
