//! Where things live on a baleen device: the partition labels, the mount
//! points, the paths kept on the state and data partitions, and the reset
//! flags. The build (which prepares the read-only root), the root's initramfs
//! (which mounts state and binds the paths) and the device commands all read
//! these tables, so they cannot drift apart.

/// GPT partition names (and filesystem labels) of a baleen disk.
pub mod label {
    pub const BOOT: &str = "resin-boot";
    pub const ROOT_A: &str = "resin-rootA";
    pub const ROOT_B: &str = "resin-rootB";
    pub const STATE: &str = "resin-state";
    pub const DATA: &str = "resin-data";

    /// Labels that get a `/dev/disk/by-state/` link (balenaOS's `resin-*|balena-*`).
    pub fn is_managed(label: &str) -> bool {
        label.starts_with("resin-") || label.starts_with("balena-")
    }

    /// Whether a label names one of the two root partitions.
    pub fn is_root(label: &str) -> bool {
        label == ROOT_A || label == ROOT_B
    }
}

/// `/dev/disk/by-state/`: links for the boot disk's partitions only.
pub const BY_STATE: &str = "/dev/disk/by-state";

/// Mount points on the read-only root (relative to `/`).
pub const MOUNT_POINTS: [&str; 5] = [
    "mnt/boot",
    "mnt/state",
    "mnt/data",
    "mnt/sysroot/active",
    "mnt/sysroot/inactive",
];

pub const BOOT_MOUNT: &str = "/mnt/boot";
/// The FAT options of the `/mnt/boot` mount, besides `noatime,nosuid,nodev,noexec`: only
/// root reads config.json (it holds keys). The root's initramfs mounts it with them, and
/// `/etc/fstab` names the same.
pub const BOOT_FAT_OPTIONS: &str = "fmask=0077,dmask=0077";
pub const STATE_MOUNT: &str = "/mnt/state";
pub const DATA_MOUNT: &str = "/mnt/data";

/// The factory-reset flag at the top of the state and data partitions: when
/// it is missing at boot, the partition's managed content is wiped.
pub const RESET_FLAG: &str = "remove_me_to_reset";

/// On the state partition: the backing store of the state-backed paths.
pub const ROOT_OVERLAY: &str = "root-overlay";

/// On the state partition: the persistent machine id, bound over `/etc/machine-id`.
pub const MACHINE_ID: &str = "machine-id";

/// On the state partition: baleen's own records (kept across a state reset).
pub const STATE_BALEEN_DIR: &str = "baleen";

/// What a state-backed path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// How the state copy of a path is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// Copied from the read-only root when the state copy is missing (first
    /// boot, after a reset), then kept: the device owns it.
    Once,
    /// Copied from the read-only root at every boot: derived data the running
    /// system may add to, but whose base must follow OS updates.
    EveryBoot,
}

/// A path of the read-only root that lives in `/mnt/state/root-overlay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatePath {
    /// Absolute path on the device.
    pub path: &'static str,
    pub kind: Kind,
    pub seed: Seed,
    /// Mode of the state copy when the root has nothing to seed it from.
    pub mode: u32,
}

const fn once(path: &'static str, kind: Kind, mode: u32) -> StatePath {
    StatePath {
        path,
        kind,
        seed: Seed::Once,
        mode,
    }
}

/// The state-backed paths (balenaOS's `BINDMOUNTS`), bound in this order.
pub const STATE_PATHS: [StatePath; 17] = [
    once("/etc/hostname", Kind::File, 0o644),
    once("/etc/ssh/hostkeys", Kind::Dir, 0o755),
    once("/root/.ssh", Kind::Dir, 0o700),
    once("/etc/NetworkManager/system-connections", Kind::Dir, 0o700),
    once("/etc/NetworkManager/conf.d", Kind::Dir, 0o755),
    once("/etc/NetworkManager/dispatcher.d", Kind::Dir, 0o755),
    once("/etc/udev/rules.d", Kind::Dir, 0o755),
    once("/var/lib/NetworkManager", Kind::Dir, 0o700),
    once("/var/lib/chrony", Kind::Dir, 0o755),
    once("/var/lib/systemd", Kind::Dir, 0o755),
    once("/var/lib/bluetooth", Kind::Dir, 0o700),
    once("/etc/docker", Kind::Dir, 0o755),
    once("/root/.docker", Kind::Dir, 0o700),
    once("/etc/balena-supervisor", Kind::Dir, 0o755),
    once("/etc/openvpn", Kind::Dir, 0o755),
    once("/usr/share/ca-certificates/balena", Kind::Dir, 0o755),
    StatePath {
        path: "/etc/ssl/certs",
        kind: Kind::Dir,
        seed: Seed::EveryBoot,
        mode: 0o755,
    },
];

/// On the data partition: the container engine's data root, bound at
/// `/var/lib/docker`.
pub const DATA_DOCKER: &str = "docker";
/// On the data partition: application data (`/resin-data` in balenaOS).
pub const DATA_RESIN: &str = "resin-data";
/// On the data partition: persistent logs, bound at `/var/log/journal`.
pub const DATA_JOURNAL: &str = "root-overlay/var/log/journal";

/// Directories of the read-only root that live in memory (path, mode).
pub const VOLATILE: [(&str, &str); 3] =
    [("/tmp", "1777"), ("/var/tmp", "1777"), ("/var/log", "0755")];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_paths_are_absolute_unique_and_not_volatile() {
        let mut seen = std::collections::BTreeSet::new();
        for p in STATE_PATHS {
            assert!(p.path.starts_with('/'), "{}", p.path);
            assert!(seen.insert(p.path), "{} twice", p.path);
            for (v, _) in VOLATILE {
                assert!(
                    !p.path.starts_with(&format!("{v}/")),
                    "{} is under the volatile {v}",
                    p.path
                );
            }
        }
    }

    #[test]
    fn managed_labels() {
        assert!(label::is_managed("resin-state"));
        assert!(label::is_managed("balena-extra"));
        assert!(!label::is_managed("EFI"));
        assert!(label::is_root("resin-rootB"));
        assert!(!label::is_root("resin-data"));
    }
}
