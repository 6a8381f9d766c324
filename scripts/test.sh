#!/usr/bin/env bash
# The test command of the README and of CI: installs what is missing, then runs
# every test of the workspace, including the privileged ones (root, BPF,
# network namespaces), which are real tests here, not skipped ones.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
if [ "$(id -u)" != 0 ]; then
  echo "test: run as root: the probe tests load BPF programs and create network namespaces" >&2
  exit 1
fi

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# The TURN message path under cargo-fuzz (libFuzzer + ASan), bounded.
bash relay-probe/fuzz/run.sh 60
