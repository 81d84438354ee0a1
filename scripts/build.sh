#!/usr/bin/env bash
# Builds the static `baleen` and `baleen-boot` binaries (glibc, crt-static):
# baleen-boot is PID 1 of the initramfs, and baleen runs on any Debian root.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static ${RUSTFLAGS:-}" \
  cargo build --release --locked --target "$target" --bin baleen --bin baleen-boot >&2
echo "$PWD/target/$target/release"
