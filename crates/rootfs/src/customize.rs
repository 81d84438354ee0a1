//! baleen's files in the staging root: identity (os-release, issue,
//! timestamp), the read-only root's mounts, the kernel links the boot stage
//! follows, the device binary and the SSH service on port 22222.

use crate::osrelease::OsRelease;
use crate::{Error, Result, write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use subprocess::Cmd;

/// What baleen adds to a Debian root.
pub struct Customization<'a> {
    pub os_release: OsRelease,
    /// The `baleen` binary installed as `/usr/bin/baleen`.
    pub baleen_binary: &'a Path,
    /// Build time, `YYYYMMDDhhmmss` (UTC), for `/etc/timestamp`.
    pub timestamp: String,
    pub development: bool,
}

/// Mount points on the read-only root (balenaOS's layout).
pub const MOUNT_POINTS: [&str; 5] = [
    "mnt/boot",
    "mnt/state",
    "mnt/data",
    "mnt/sysroot/active",
    "mnt/sysroot/inactive",
];

/// Debian units that make no sense on a read-only appliance root.
pub const DISABLED_UNITS: [&str; 7] = [
    "ssh.service",
    "ssh.socket",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
];

/// baleen's units enabled in every image.
pub const ENABLED_UNITS: [&str; 2] = ["sshd.socket", "baleen-ssh.service"];

/// Directories of the read-only root that live in memory (path, mode) until
/// state partitions take over. Their image content is hidden at run time, so
/// the fingerprint leaves them out.
pub const VOLATILE: [(&str, &str); 5] = [
    ("/tmp", "1777"),
    ("/var/tmp", "1777"),
    ("/var/log", "0755"),
    ("/var/lib/NetworkManager", "0700"),
    ("/var/lib/systemd", "0755"),
];

/// `/etc/fstab` for [`VOLATILE`].
pub fn fstab() -> String {
    let mut text =
        String::from("# baleen: the root filesystem is read-only; these paths live in memory.\n");
    for (path, mode) in VOLATILE {
        text.push_str(&format!(
            "tmpfs {path} tmpfs mode={mode},nosuid,nodev 0 0\n"
        ));
    }
    text
}

/// Fingerprint exclusions for [`VOLATILE`]: `dir/` excludes what is under `dir`.
pub fn volatile_excludes() -> Vec<String> {
    VOLATILE
        .iter()
        .map(|(path, _)| format!("{}/", path.trim_start_matches('/')))
        .collect()
}

/// sshd: everything device-specific (host keys, keys, policy) is rendered at
/// boot into /run by `baleen device ssh-setup`.
pub const SSHD_DROPIN: &str = "\
# baleen: host keys and the access policy come from config.json at boot.
Include /run/baleen/ssh/sshd_config
";

pub const SSHD_SOCKET: &str = "\
[Unit]
Description=SSH socket on port 22222 (baleen)
Before=sockets.target
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Socket]
ListenStream=22222
Accept=yes
TriggerLimitIntervalSec=0

[Install]
WantedBy=sockets.target
";

pub const SSHD_SERVICE: &str = "\
[Unit]
Description=SSH session (baleen)
Wants=baleen-ssh.service
After=baleen-ssh.service

[Service]
ExecStart=-/usr/sbin/sshd -i
StandardInput=socket
StandardError=journal
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
";

pub const BALEEN_SSH_SERVICE: &str = "\
[Unit]
Description=SSH host keys and access policy from config.json (baleen)
After=local-fs.target systemd-udevd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device ssh-setup

[Install]
WantedBy=multi-user.target
";

pub fn apply(root: &Path, c: &Customization) -> Result<()> {
    identity(root, c)?;
    filesystem(root)?;
    install_binary(root, c.baleen_binary)?;
    kernel_links(root)?;
    ssh(root, c.development)?;
    units(root)?;
    Ok(())
}

fn replace_file(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    write(path, data)
}

fn identity(root: &Path, c: &Customization) -> Result<()> {
    let os_release = c.os_release.render();
    replace_file(&root.join("usr/lib/os-release"), &os_release)?;
    replace_file(&root.join("etc/os-release"), &os_release)?;
    replace_file(&root.join("etc/issue"), c.os_release.issue())?;
    replace_file(&root.join("etc/issue.net"), c.os_release.issue_net())?;
    replace_file(&root.join("etc/timestamp"), format!("{}\n", c.timestamp))?;
    replace_file(&root.join("etc/hostname"), "balena\n")?;
    // Empty: systemd makes one per boot until the state partition keeps it.
    replace_file(&root.join("etc/machine-id"), "")?;
    Ok(())
}

fn filesystem(root: &Path) -> Result<()> {
    for dir in MOUNT_POINTS {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(|source| Error::Write { path, source })?;
    }
    replace_file(&root.join("etc/fstab"), fstab())?;
    if root.join("usr/sbin/NetworkManager").exists() {
        let resolv = root.join("etc/resolv.conf");
        let _ = std::fs::remove_file(&resolv);
        symlink("../run/NetworkManager/resolv.conf", &resolv).map_err(|source| Error::Write {
            path: resolv,
            source,
        })?;
    }
    Ok(())
}

fn install_binary(root: &Path, binary: &Path) -> Result<()> {
    let target = root.join("usr/bin/baleen");
    let _ = std::fs::remove_file(&target);
    std::fs::copy(binary, &target).map_err(|source| Error::Write {
        path: target.clone(),
        source,
    })?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        Error::Write {
            path: target,
            source,
        }
    })
}

/// `/boot/vmlinuz` and `/boot/initrd.img`: relative links to the one kernel,
/// the paths the boot stage kexecs.
fn kernel_links(root: &Path) -> Result<()> {
    let boot = root.join("boot");
    let entries = std::fs::read_dir(&boot).map_err(|source| Error::Read {
        path: boot.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for (link, prefix) in [("vmlinuz", "vmlinuz-"), ("initrd.img", "initrd.img-")] {
        if let Some(target) = names.iter().rev().find(|n| n.starts_with(prefix)) {
            let path = boot.join(link);
            let _ = std::fs::remove_file(&path);
            symlink(target, &path).map_err(|source| Error::Write { path, source })?;
        }
    }
    Ok(())
}

fn ssh(root: &Path, development: bool) -> Result<()> {
    let ssh_dir = root.join("etc/ssh");
    if let Ok(entries) = std::fs::read_dir(&ssh_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    replace_file(
        &root.join("etc/ssh/sshd_config.d/00-baleen.conf"),
        SSHD_DROPIN,
    )?;
    // Development images: root has an empty password (used only while no SSH
    // keys are configured; sshd refuses it in production). Production: locked.
    let shadow_path = root.join("etc/shadow");
    let shadow = std::fs::read_to_string(&shadow_path).map_err(|source| Error::Read {
        path: shadow_path.clone(),
        source,
    })?;
    replace_file(
        &shadow_path,
        set_root_password(&shadow, if development { "" } else { "*" }),
    )?;
    std::fs::set_permissions(&shadow_path, std::fs::Permissions::from_mode(0o640)).map_err(
        |source| Error::Write {
            path: shadow_path,
            source,
        },
    )
}

/// Replaces root's password field in an /etc/shadow text.
pub fn set_root_password(shadow: &str, hash: &str) -> String {
    shadow
        .lines()
        .map(|line| match line.split_once(':') {
            Some(("root", rest)) => {
                let rest = rest.split_once(':').map_or("", |(_, r)| r);
                format!("root:{hash}:{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

fn units(root: &Path) -> Result<()> {
    let system = root.join("etc/systemd/system");
    write(&system.join("sshd.socket"), SSHD_SOCKET)?;
    write(&system.join("sshd@.service"), SSHD_SERVICE)?;
    write(&system.join("baleen-ssh.service"), BALEEN_SSH_SERVICE)?;
    let root_arg = format!("--root={}", root.display());
    Cmd::new("systemctl")
        .package("systemd")
        .arg(&root_arg)
        .arg("disable")
        .args(DISABLED_UNITS)
        .run()?;
    Cmd::new("systemctl")
        .package("systemd")
        .arg(&root_arg)
        .arg("enable")
        .args(ENABLED_UNITS)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_mounts_each_volatile_dir() {
        assert_eq!(
            fstab(),
            "# baleen: the root filesystem is read-only; these paths live in memory.\n\
             tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0\n\
             tmpfs /var/tmp tmpfs mode=1777,nosuid,nodev 0 0\n\
             tmpfs /var/log tmpfs mode=0755,nosuid,nodev 0 0\n\
             tmpfs /var/lib/NetworkManager tmpfs mode=0700,nosuid,nodev 0 0\n\
             tmpfs /var/lib/systemd tmpfs mode=0755,nosuid,nodev 0 0\n"
        );
        assert_eq!(volatile_excludes()[3], "var/lib/NetworkManager/");
    }

    #[test]
    fn root_password_is_replaced_and_other_lines_kept() {
        let shadow = "root:*:20781:0:99999:7:::\ndaemon:*:20781:0:99999:7:::\n";
        assert_eq!(
            set_root_password(shadow, ""),
            "root::20781:0:99999:7:::\ndaemon:*:20781:0:99999:7:::\n"
        );
    }
}
