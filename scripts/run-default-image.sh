#!/usr/bin/env bash
# The main job: install what is needed, build the default image (qemux86-64,
# development, Debian bookworm) and boot it in QEMU with the serial console on
# this terminal. SSH in from another terminal: ssh -p 22222 root@127.0.0.1
# Extra arguments go to `baleen run` (e.g. --ssh-port 2222, --memory 2048).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (mmdebstrap and image builds need it)" >&2; exit 1; }
scripts/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bin=$(scripts/build.sh)
"$bin/baleen" build --config build.toml --out out
exec "$bin/baleen" run out/qemux86-64.img --ssh-port "${BALEEN_SSH_PORT:-22222}" "$@"
