#!/usr/bin/env bash
# Installs what building, running and testing baleen needs on Debian 12 (as root).
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils ovmf        # VMs: QEMU with UEFI firmware
  mmdebstrap                             # root filesystems from Debian packages
  e2fsprogs dosfstools mtools            # filesystems made from directories
  systemd-boot-efi binutils              # the unified kernel image: EFI stub + objcopy
  xz-utils zstd cpio                     # compressed kernel modules (trixie)
  openssh-client                         # SSH into test VMs
  grub-efi-amd64-bin grub-common         # the GRUB chain `baleen bench boot` compares against
  iproute2                               # network namespaces for VM tests
  dnsmasq-base                           # LAN tests: DHCP server in the namespace (no service)
  avahi-daemon avahi-utils dbus-daemon   # LAN tests: mDNS browser on a private system bus
  util-linux isc-dhcp-client             # unshare/nsenter; dhclient for the LAN self-test
  ca-certificates curl build-essential pkg-config
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Rust >= 1.85. Debian 12 ships 1.63 as `rustc`, and a current one as rustc-web/cargo-web.
rust_ok() {
  command -v cargo >/dev/null 2>&1 || return 1
  local v; v=$(rustc --version | awk '{print $2}')
  [ "$(printf '%s\n1.85.0\n' "$v" | sort -V | head -1)" = "1.85.0" ]
}
if ! rust_ok; then
  for dir in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$dir/cargo" ] && export PATH="$dir:$PATH"
  done
fi
if ! rust_ok; then
  echo "install-deps: installing Debian's rustc-web and cargo-web (Rust >= 1.85)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q rustc-web cargo-web
fi
if ! rust_ok; then
  echo "install-deps: Rust >= 1.85 is needed (cargo and rustc on PATH); install it with rustup or Debian's rustc-web" >&2
  exit 1
fi
echo "install-deps: ok ($(rustc --version))"
