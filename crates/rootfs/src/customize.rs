//! baleen's files in the staging root: identity (os-release, issue,
//! timestamp), the read-only root's mounts, the kernel links the boot stage
//! follows, the device binary and the SSH service on port 22222.

use crate::osrelease::OsRelease;
use crate::{Error, Result, write};
use crate::{daemons, timeunits, units, updateunits};
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
}

/// Fingerprint exclusions: directories whose image content is hidden or
/// replaced at run time (memory-backed, or kept on the state partition).
/// `dir/` excludes what is under `dir`.
pub fn runtime_excludes() -> Vec<String> {
    let volatile = layout::VOLATILE
        .iter()
        .map(|(path, _)| format!("{}/", path.trim_start_matches('/')));
    let state = layout::STATE_PATHS.iter().map(|p| {
        let rel = p.path.trim_start_matches('/');
        match p.kind {
            layout::Kind::Dir => format!("{rel}/"),
            layout::Kind::File => rel.to_string(),
        }
    });
    volatile.chain(state).collect()
}

pub fn apply(root: &Path, c: &Customization) -> Result<()> {
    identity(root, c)?;
    filesystem(root)?;
    install_binary(root, c.baleen_binary)?;
    kernel_links(root)?;
    ssh(root)?;
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
    let mut dirs: Vec<&str> = layout::MOUNT_POINTS.to_vec();
    dirs.push("var/lib/docker");
    for dir in dirs {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(|source| Error::Write { path, source })?;
    }
    // Mount points for the state-backed paths the packages did not create.
    for spec in layout::STATE_PATHS {
        let path = root.join(spec.path.trim_start_matches('/'));
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let made = match spec.kind {
            layout::Kind::Dir => std::fs::create_dir_all(&path).and_then(|()| {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(spec.mode))
            }),
            layout::Kind::File => std::fs::write(&path, ""),
        };
        made.map_err(|source| Error::Write { path, source })?;
    }
    // D-Bus reads the machine id through this link (made by dbus's tmpfiles
    // otherwise, which cannot write the read-only root).
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if dbus_id.symlink_metadata().is_err() && root.join("var/lib/dbus").is_dir() {
        symlink("/etc/machine-id", &dbus_id).map_err(|source| Error::Write {
            path: dbus_id,
            source,
        })?;
    }
    // Debian's ifupdown bridge for NetworkManager; baleen has no ifupdown.
    let _ = std::fs::remove_file(root.join("etc/NetworkManager/dispatcher.d/01-ifupdown"));
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

fn ssh(root: &Path) -> Result<()> {
    let ssh_dir = root.join("etc/ssh");
    if let Ok(entries) = std::fs::read_dir(&ssh_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    // Root has an empty password on every image, as on balenaOS: whether it
    // may be used is development mode's decision at run time (sshd's policy
    // and the console gettys), not the image's.
    let shadow_path = root.join("etc/shadow");
    let shadow = std::fs::read_to_string(&shadow_path).map_err(|source| Error::Read {
        path: shadow_path.clone(),
        source,
    })?;
    replace_file(&shadow_path, set_root_password(&shadow, ""))?;
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
    for (rel, text) in units::FILES {
        replace_file(&root.join(rel), text)?;
    }
    // The resolver, chrony, dnsmasq and NetworkManager frames config.json
    // plugs into (resolv.conf replaces Debian's symlink).
    for (rel, text) in daemons::files() {
        replace_file(&root.join(rel), text)?;
    }
    for (rel, text, mode) in timeunits::FILES.into_iter().chain(updateunits::FILES) {
        let path = root.join(rel);
        replace_file(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|source| Error::Write { path, source })?;
    }
    let root_arg = format!("--root={}", root.display());
    Cmd::new("systemctl")
        .package("systemd")
        .arg(&root_arg)
        .arg("disable")
        .args(units::DISABLED_UNITS)
        .run()?;
    Cmd::new("systemctl")
        .package("systemd")
        .arg(&root_arg)
        .arg("mask")
        .args(units::MASKED_UNITS)
        .run()?;
    let generators = root.join("etc/systemd/system-generators");
    std::fs::create_dir_all(&generators).map_err(|source| Error::Write {
        path: generators.clone(),
        source,
    })?;
    for name in units::MASKED_GENERATORS {
        let path = generators.join(name);
        let _ = std::fs::remove_file(&path);
        symlink("/dev/null", &path).map_err(|source| Error::Write { path, source })?;
    }
    Cmd::new("systemctl")
        .package("systemd")
        .arg(&root_arg)
        .arg("enable")
        .args(units::ENABLED_UNITS)
        .args(daemons::ENABLED_UNITS)
        .args(timeunits::ENABLED_UNITS)
        .args(updateunits::ENABLED_UNITS)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_excludes_cover_volatile_and_state_paths() {
        let ex = runtime_excludes();
        assert_eq!(ex[0], "tmp/");
        assert!(ex.contains(&"var/log/".to_string()));
        assert!(ex.contains(&"etc/hostname".to_string()));
        assert!(ex.contains(&"var/lib/systemd/".to_string()));
    }

    #[test]
    fn fstab_has_every_volatile_dir_and_mount_point() {
        for (path, mode) in layout::VOLATILE {
            assert!(units::FSTAB.contains(&format!("tmpfs {path} tmpfs mode={mode},")));
        }
        for mp in layout::MOUNT_POINTS {
            assert!(units::FSTAB.contains(&format!(" /{mp} ")), "{mp}");
        }
    }

    #[test]
    fn fstab_mounts_the_boot_partition_as_the_root_s_initramfs_does() {
        let line = units::FSTAB
            .lines()
            .find(|l| l.contains(&format!(" {} vfat ", layout::BOOT_MOUNT)))
            .unwrap();
        let options = line.split_whitespace().nth(3).unwrap();
        assert!(
            options.starts_with(&format!(
                "rw,noatime,nosuid,nodev,noexec,{},",
                layout::BOOT_FAT_OPTIONS
            )),
            "{line}"
        );
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
