#!/usr/bin/env bash
# The whole test suite: quality gates, unit tests, then the image and VM
# suites against images built once here (scripts/test-images.sh: development,
# production, trixie, and the next development release with its update bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (image builds and VM tests need it)" >&2; exit 1; }
scripts/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start )) s)"; }

step "format"
cargo fmt --all -- --check

step "static binaries"
bin=$(scripts/build.sh)
export BALEEN_BIN="$bin/baleen"

# The test images need only the binaries and are built beside the lints and unit tests: a cold
# build is mostly mmdebstrap fetching packages, which leaves the CPUs to the compiler.
step "test images (in the background)"
export BALEEN_TEST_IMAGES="$PWD/target/systests/images"
images_log=target/systests/images.log
mkdir -p target/systests
setsid scripts/test-images.sh >"$images_log" 2>&1 </dev/null &
images=$!
# Ends the image builds (their process group) when this script stops early.
trap 'kill -- -"$images" 2>/dev/null || true' EXIT

step "lints"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "unit tests"
cargo test --locked

step "test images (waiting for them)"
images_rc=0
wait "$images" || images_rc=$?
trap - EXIT
cat "$images_log"
if [ "$images_rc" != 0 ]; then
    echo "building the test images failed (exit $images_rc; log above, in $images_log)" >&2
    exit 1
fi

step "image and VM tests"
scripts/systests.sh

step "done"
