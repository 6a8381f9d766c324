#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs a
# measured call through the lab (`demarc-testbed demo`): A → B steps ±2 ms
# every 30 s, B → A stays flat, and the console at http://127.0.0.1:8080
# shows both directions against RTT/2. Ctrl-C stops it and removes the lab.
# Extra arguments go to `demarc-testbed demo` (e.g. --console 127.0.0.1:8081).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (sudo scripts/demo.sh): the lab creates network namespaces and loads BPF programs" >&2
  exit 1
fi
bash scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1; then
  echo "demo: cargo not found: install a stable Rust toolchain (>= 1.87) first" >&2
  exit 1
fi

# Release: the relay and the peers then cost little next to what is measured.
cargo build --release --quiet -p demarc-console -p demarc-relay -p demarc-probe -p demarc-testbed
exec "${CARGO_TARGET_DIR:-target}/release/demarc-testbed" demo "$@"
