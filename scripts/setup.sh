#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and demo demarc.
# Idempotent: a second run finds everything and installs nothing.
set -euo pipefail

PACKAGES=(
  clang llvm libbpf-dev bpftool linux-libc-dev   # BPF programs (clang -target bpf, libbpf headers)
  iproute2 procps kmod                            # namespaces, veth, tc, sysctl
  pkg-config                                      # -sys crates
  coturn                                          # interop and baseline: turnserver, turnutils_*
  chromium chromium-driver fonts-dejavu-core      # console browser tests, browser WebRTC peers
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs Debian packages and needs BPF and namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# coturn's package enables a system service on some images; demarc's tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet coturn 2>/dev/null; then
  echo "setup: note: a system coturn service is running; tests use their own ports and namespaces"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install the Rust toolchain (rustup, stable >= 1.87) and re-run" >&2
  exit 1
fi

# Classic tracepoints (syscalls:*) need tracefs; it is not mounted at boot on every machine.
if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
