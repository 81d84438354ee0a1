#!/usr/bin/env bash
# Builds the test images scripts/test.sh runs the image and VM suites against, into
# $BALEEN_TEST_IMAGES with $BALEEN_BIN: development, production, trixie, and the development
# image one release later with its update bundle, signed with the default key in the build
# cache, the one every image trusts.
#
# The trixie build runs beside the bookworm ones: on a cold cache both are mostly mmdebstrap
# fetching packages. The bookworm images run one after the other: the first fills the root
# filesystem cache the others hit. Each build's output is printed whole when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BALEEN_BIN:?set BALEEN_BIN to the baleen binary (scripts/build.sh)}"
: "${BALEEN_TEST_IMAGES:?set BALEEN_TEST_IMAGES to the output directory}"
mkdir -p "$BALEEN_TEST_IMAGES"
start=$(date +%s)

build() {
    local variant=$1 config=$2
    local log="$BALEEN_TEST_IMAGES/$variant.log" rc=0
    "$BALEEN_BIN" build --config "$config" --out "$BALEEN_TEST_IMAGES/$variant" >"$log" 2>&1 ||
        rc=$?
    echo "--- image $variant ($config): $([ "$rc" = 0 ] && echo built || echo FAILED)" \
        "$(($(date +%s) - start)) s after the start"
    cat "$log"
    return "$rc"
}

build trixie tests/build-trixie.toml &
trixie=$!

bookworm_rc=0
{
    build dev tests/build-dev.toml &&
        build prod tests/build-prod.toml &&
        build next tests/build-dev-next.toml &&
        "$BALEEN_BIN" bundle create --image "$BALEEN_TEST_IMAGES/next/qemux86-64.img" \
            -o "$BALEEN_TEST_IMAGES/next/qemux86-64.bundle" &&
        "$BALEEN_BIN" bundle verify "$BALEEN_TEST_IMAGES/next/qemux86-64.bundle"
} || bookworm_rc=$?

trixie_rc=0
wait "$trixie" || trixie_rc=$?
echo "--- test images: $(($(date +%s) - start)) s"
[ "$bookworm_rc" = 0 ] && [ "$trixie_rc" = 0 ]
