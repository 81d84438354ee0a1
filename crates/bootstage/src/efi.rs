//! What the firmware tells us about the boot: the partition the unified kernel
//! image was loaded from (`LoaderDevicePartUUID`, set by systemd's EFI stub)
//! and the device path of the boot option it used (`BootCurrent` → `Boot####`).
//! Parsing is pure; `read_var` is the only I/O.

use std::path::Path;

/// The vendor GUID of systemd's loader interface variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The UEFI global variable GUID (`BootCurrent`, `Boot####`).
const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Reads an EFI variable's payload from efivarfs (without its 4-byte attributes).
pub fn read_var(efivars: &Path, name: &str, guid: &str) -> Option<Vec<u8>> {
    let raw = std::fs::read(efivars.join(format!("{name}-{guid}"))).ok()?;
    (raw.len() >= 4).then(|| raw[4..].to_vec())
}

/// The partition GUID the boot image was loaded from, lower-case, if the stub set it.
pub fn loader_device_part_uuid(efivars: &Path) -> Option<String> {
    read_var(efivars, "LoaderDevicePartUUID", LOADER_GUID)
        .and_then(|v| decode_utf16z(&v))
        .map(|s| s.to_lowercase())
}

/// The PCI path of the device the firmware booted from, from `BootCurrent`.
pub fn boot_current_pci_path(efivars: &Path) -> Option<Vec<PciNode>> {
    let current = read_var(efivars, "BootCurrent", GLOBAL_GUID)?;
    let number = u16::from_le_bytes(current.get(..2)?.try_into().ok()?);
    let option = read_var(efivars, &format!("Boot{number:04X}"), GLOBAL_GUID)?;
    load_option_pci_path(&option)
}

/// Decodes a NUL-terminated UTF-16LE string.
pub fn decode_utf16z(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// One PCI hop of a device path: `Pci(device, function)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciNode {
    pub device: u8,
    pub function: u8,
}

/// Extracts the PCI hops of the first device path in an `EFI_LOAD_OPTION`
/// (attributes u32, path length u16, NUL-terminated UTF-16 description, path).
pub fn load_option_pci_path(option: &[u8]) -> Option<Vec<PciNode>> {
    let path_len = u16::from_le_bytes(option.get(4..6)?.try_into().ok()?) as usize;
    let mut at = 6;
    loop {
        let unit = option.get(at..at + 2)?;
        at += 2;
        if unit == [0, 0] {
            break;
        }
    }
    device_path_pci_nodes(option.get(at..at + path_len)?)
}

/// Walks device-path nodes (type u8, subtype u8, length u16) up to the end node,
/// keeping the hardware PCI nodes (type 1, subtype 1: function u8, device u8).
pub fn device_path_pci_nodes(path: &[u8]) -> Option<Vec<PciNode>> {
    let mut nodes = Vec::new();
    let mut at = 0;
    while at + 4 <= path.len() {
        let (kind, subtype) = (path[at], path[at + 1]);
        let len = u16::from_le_bytes([path[at + 2], path[at + 3]]) as usize;
        if len < 4 || at + len > path.len() {
            return None;
        }
        if kind == 0x7f && subtype == 0xff {
            return Some(nodes);
        }
        if kind == 1 && subtype == 1 && len >= 6 {
            nodes.push(PciNode {
                function: path[at + 4],
                device: path[at + 5],
            });
        }
        at += len;
    }
    None
}

/// The PCI hops of a Linux sysfs device path such as
/// `/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1`.
pub fn sysfs_pci_path(sysfs_path: &str) -> Vec<PciNode> {
    sysfs_path
        .split('/')
        .filter_map(|part| {
            // dddd:bb:dd.f
            let (addr, function) = part.rsplit_once('.')?;
            let mut fields = addr.split(':');
            let (domain, bus, device) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || domain.len() != 4 || bus.len() != 2 || device.len() != 2 {
                return None;
            }
            Some(PciNode {
                device: u8::from_str_radix(device, 16).ok()?,
                function: function.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// `PciRoot(0x0)/Pci(0x3,0x0)` then the end node, as OVMF writes it for a virtio disk.
    fn ovmf_virtio_path() -> Vec<u8> {
        let mut p = vec![2, 1, 12, 0, 0xd0, 0x41, 0x03, 0x0a, 0, 0, 0, 0];
        p.extend([1, 1, 6, 0, 0, 3]);
        p.extend([0x7f, 0xff, 4, 0]);
        p
    }

    #[test]
    fn decodes_loader_device_part_uuid() {
        let raw = utf16z("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0");
        assert_eq!(
            decode_utf16z(&raw).unwrap(),
            "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"
        );
    }

    #[test]
    fn load_option_yields_pci_hops() {
        let path = ovmf_virtio_path();
        let mut option = vec![1, 0, 0, 0];
        option.extend((path.len() as u16).to_le_bytes());
        option.extend(utf16z("UEFI Misc Device"));
        option.extend(&path);
        assert_eq!(
            load_option_pci_path(&option).unwrap(),
            vec![PciNode {
                device: 3,
                function: 0
            }]
        );
    }

    #[test]
    fn truncated_device_path_is_rejected() {
        let path = ovmf_virtio_path();
        assert_eq!(device_path_pci_nodes(&path[..14]), None);
        assert_eq!(device_path_pci_nodes(&[1, 1, 2, 0]), None);
    }

    #[test]
    fn sysfs_path_yields_pci_hops() {
        assert_eq!(
            sysfs_pci_path("/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.1/nvme/nvme0/nvme0n1"),
            vec![
                PciNode {
                    device: 0x1c,
                    function: 0
                },
                PciNode {
                    device: 0,
                    function: 1
                }
            ]
        );
        assert_eq!(
            sysfs_pci_path("/sys/devices/pci0000:00/0000:00:03.0/virtio1/block/vda"),
            vec![PciNode {
                device: 3,
                function: 0
            }]
        );
    }
}
