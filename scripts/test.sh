#!/usr/bin/env bash
# The whole test suite: quality gates, unit tests, then the image and VM
# suites against images built once here (development, production, trixie, and
# the next development release with its update bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (image builds and VM tests need it)" >&2; exit 1; }
scripts/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start )) s)"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "unit tests"
cargo test --locked

step "static binaries"
bin=$(scripts/build.sh)
export BALEEN_BIN="$bin/baleen"

step "test images"
export BALEEN_TEST_IMAGES="$PWD/target/systests/images"
"$BALEEN_BIN" build --config tests/build-dev.toml --out "$BALEEN_TEST_IMAGES/dev"
"$BALEEN_BIN" build --config tests/build-prod.toml --out "$BALEEN_TEST_IMAGES/prod"
"$BALEEN_BIN" build --config tests/build-trixie.toml --out "$BALEEN_TEST_IMAGES/trixie"
# The update tests' target: the dev image one release later, and its bundle, signed with the
# default key in the build cache, the one every image above trusts.
"$BALEEN_BIN" build --config tests/build-dev-next.toml --out "$BALEEN_TEST_IMAGES/next"
"$BALEEN_BIN" bundle create --image "$BALEEN_TEST_IMAGES/next/qemux86-64.img" \
    -o "$BALEEN_TEST_IMAGES/next/qemux86-64.bundle"
"$BALEEN_BIN" bundle verify "$BALEEN_TEST_IMAGES/next/qemux86-64.bundle"

step "image and VM tests"
scripts/systests.sh

step "done"
