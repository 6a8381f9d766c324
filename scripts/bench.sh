#!/usr/bin/env bash
# Regenerates the numbers in BENCHMARKS.md, side by side in one run:
# demarc-relay against coturn (`demarc-testbed bench`, CPUs pinned), the
# endpoint probe's cost on a sender and the BPF run time per program
# (`probe_overhead`), and the console's ingest (`demarc-console-bench`).
# Output: artifacts/bench/{relay,relay-unsteered,probe,console}.txt. Takes
# ~25 minutes. Extra arguments go to both `demarc-testbed bench` runs (e.g.
# --runs 1). The second run leaves loopback receive work on the sending CPU,
# the way the issue's coturn baseline was taken (160 B, probe on).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench: run as root (sudo scripts/bench.sh): namespaces, BPF, pinned CPUs" >&2
  exit 1
fi
bash scripts/setup.sh
out=artifacts/bench
mkdir -p "$out"
target="${CARGO_TARGET_DIR:-target}"

cargo build --release --quiet -p demarc-relay -p demarc-testbed -p demarc-console
{
  echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
  echo "# coturn $(turnserver --version 2>/dev/null | tail -1), demarc $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$target/release/demarc-testbed" bench "$@"
} | tee "$out/relay.txt"
"$target/release/demarc-testbed" bench --no-rx-steering --payloads 160 --probe on "$@" |
  tee "$out/relay-unsteered.txt"
cargo bench --quiet -p demarc-probe --bench probe_overhead 2>&1 | tee "$out/probe.txt"
"$target/release/demarc-console-bench" 30 100 2>&1 | tee "$out/console.txt"
echo "bench: results in $out/"
