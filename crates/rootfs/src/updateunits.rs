//! Host OS update units (balenaOS's rollback-altboot, rollback-health and
//! rollback-clear-bootcount, docs/updates.md), the update hook directory and
//! the health check directory. The commands are `baleen device update-*`.

/// Early at every boot: after a boot-stage fallback, point the bootenv back at
/// the running (old) root and record the rollback; drop the breadcrumbs of an
/// install cut off before its commit point.
pub const BOOT_SERVICE: &str = "\
[Unit]
Description=Update rollback after a failed boot, stale update breadcrumbs (baleen)
# It tells the slots apart by udev's by-state links, which come after the trigger.
Wants=dev-disk-by\\x2dstate-resin\\x2drootA.device dev-disk-by\\x2dstate-resin\\x2drootB.device dev-disk-by\\x2dstate-active.device
After=dev-disk-by\\x2dstate-resin\\x2drootA.device dev-disk-by\\x2dstate-resin\\x2drootB.device dev-disk-by\\x2dstate-active.device
After=local-fs.target systemd-udev-trigger.service
RequiresMountsFor=/mnt/boot /mnt/state
Before=baleen-update-health.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device update-boot

[Install]
WantedBy=multi-user.target
";

/// The health window of a new root on trial; it exits at once when nothing
/// is on trial. It commits, or rolls back and reboots.
pub const HEALTH_SERVICE: &str = "\
[Unit]
Description=Health checks of an updated OS on trial: commit or roll back (baleen)
After=baleen-update-boot.service network-online.target NetworkManager.service baleen-config.service
Wants=network-online.target
RequiresMountsFor=/mnt/boot /mnt/state

[Service]
Type=simple
ExecStart=/usr/bin/baleen device update-health

[Install]
WantedBy=multi-user.target
";

/// Stopped at every clean shutdown while `/mnt/boot` is still mounted: a
/// clean reboot during the health window is not a failed boot (balenaOS's
/// rollback-clear-bootcount, which misses `bootenv`).
pub const SHUTDOWN_SERVICE: &str = "\
[Unit]
Description=A clean shutdown is not a failed boot of an update on trial (baleen)
After=mnt-boot.mount mnt-state.mount
RequiresMountsFor=/mnt/boot /mnt/state

[Service]
# Active from boot to shutdown without running anything at boot (no ExecStart: one process
# less while the boot is busiest); the work is the ExecStop.
Type=oneshot
RemainAfterExit=yes
ExecStop=/usr/bin/baleen device update-shutdown

[Install]
WantedBy=multi-user.target
";

/// balenaOS's `60-data-breadcrumb` forward hook: an OS without the data reset
/// flag must not wipe the data partition.
pub const DATA_BREADCRUMB_HOOK: &str = "\
#!/bin/sh
# baleen: keep the data partition's reset flag (balenaOS 60-data-breadcrumb).
set -e
[ -e /mnt/data/remove_me_to_reset ] || touch /mnt/data/remove_me_to_reset
";

pub const HEALTH_README: &str = "\
Health checks of an updated OS on trial (docs/updates.md). Every executable
here, and in /mnt/data/baleen/health.d/, runs once per round during the health
window; exit 0 means healthy. A check failing 3 rounds in a row, or at the end
of the window, rolls the update back.
";

/// (path relative to the root, content, mode).
pub const FILES: [(&str, &str, u32); 5] = [
    (
        "etc/systemd/system/baleen-update-boot.service",
        BOOT_SERVICE,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-update-health.service",
        HEALTH_SERVICE,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-update-shutdown.service",
        SHUTDOWN_SERVICE,
        0o644,
    ),
    (
        "etc/hostapp-update-hooks.d/60-data-breadcrumb",
        DATA_BREADCRUMB_HOOK,
        0o755,
    ),
    ("usr/lib/baleen/health.d/README", HEALTH_README, 0o644),
];

pub const ENABLED_UNITS: [&str; 3] = [
    "baleen-update-boot.service",
    "baleen-update-health.service",
    "baleen-update-shutdown.service",
];
