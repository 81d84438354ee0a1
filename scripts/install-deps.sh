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
  libcap2 libedit2 libgnutls30 libseccomp2  # libraries of the unpacked chronyd (below)
  ca-certificates curl build-essential pkg-config
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "ok installed" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The time tests' NTP server is Debian's chronyd, unpacked rather than installed: installing
# the chrony package would replace the host's own time daemon (it conflicts with
# systemd-timesyncd) and start it. The tests run it with -x: it never sets the host's clock.
CHRONY_DIR=/var/cache/baleen/host-tools/chrony
if [ ! -x "$CHRONY_DIR/usr/sbin/chronyd" ]; then
  echo "install-deps: unpacking Debian's chrony into $CHRONY_DIR (not installed)"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && apt-get download -q chrony 2>/dev/null || { apt-get update -q && apt-get download -q chrony; })
  mkdir -p "$CHRONY_DIR"
  dpkg-deb -x "$tmp"/chrony_*.deb "$CHRONY_DIR"
  rm -rf "$tmp"
fi

# Rust >= 1.85. Debian 12 ships 1.63 as `rustc`, and a current one as rustc-web/cargo-web.
rust_ok() {
  command -v cargo >/dev/null 2>&1 || return 1
  local v; v=$(rustc --version | awk '{print $2}')
  [ "$(printf '%s\n1.85.0\n' "$v" | sort -V | sed -n 1p)" = "1.85.0" ]
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
