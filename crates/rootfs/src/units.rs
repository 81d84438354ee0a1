//! The systemd units, udev rules and daemon configuration baleen adds to the
//! root, as (path relative to the root, content). The commands they run are
//! `baleen device …` subcommands (crates/baleen/src/device).

/// Files written into every root.
pub const FILES: [(&str, &str); 22] = [
    ("etc/fstab", FSTAB),
    ("etc/ssh/sshd_config.d/00-baleen.conf", SSHD_DROPIN),
    ("etc/systemd/system/sshd.socket", SSHD_SOCKET),
    ("etc/systemd/system/sshd@.service", SSHD_SERVICE),
    ("etc/systemd/system/baleen-access.service", ACCESS_SERVICE),
    (
        "etc/systemd/system/baleen-identity.service",
        IDENTITY_SERVICE,
    ),
    ("etc/systemd/system/baleen-config.service", CONFIG_SERVICE),
    (
        "etc/systemd/system/baleen-data-reset.service",
        DATA_RESET_SERVICE,
    ),
    (
        "etc/systemd/system/baleen-persistent-logs.service",
        PERSISTENT_LOGS_SERVICE,
    ),
    (
        "etc/systemd/system/baleen-sshd-recover.service",
        SSHD_RECOVER_SERVICE,
    ),
    (
        "etc/systemd/system/baleen-sshd-recover.timer",
        SSHD_RECOVER_TIMER,
    ),
    (
        "etc/systemd/system/getty@.service.d/baleen.conf",
        GETTY_DROPIN,
    ),
    (
        "etc/systemd/system/serial-getty@.service.d/baleen.conf",
        GETTY_DROPIN,
    ),
    (
        "etc/systemd/system/console-getty.service.d/baleen.conf",
        GETTY_DROPIN,
    ),
    (
        "etc/systemd/system/avahi-daemon.service.d/baleen.conf",
        AVAHI_DROPIN,
    ),
    (
        "etc/systemd/system/NetworkManager.service.d/baleen.conf",
        NETWORKMANAGER_DROPIN,
    ),
    ("etc/avahi/services/ssh.service", AVAHI_SSH_SERVICE),
    ("etc/systemd/system/baleen-zram.service", ZRAM_SERVICE),
    (
        "usr/lib/udev/rules.d/65-baleen-by-state.rules",
        BY_STATE_RULES,
    ),
    ("etc/systemd/journald.conf.d/baleen.conf", JOURNALD),
    ("etc/sysctl.d/60-baleen.conf", SYSCTL),
    ("etc/modules-load.d/baleen.conf", MODULES),
];

/// baleen's units enabled in every image.
pub const ENABLED_UNITS: [&str; 8] = [
    "sshd.socket",
    "baleen-zram.service",
    "baleen-config.service",
    "baleen-access.service",
    "baleen-identity.service",
    "baleen-data-reset.service",
    "baleen-persistent-logs.service",
    "baleen-sshd-recover.timer",
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

/// Masked:
/// - `user@.service`: logind's per-user service manager (`systemd --user`), which pam_systemd
///   started for root at every SSH login after 10 s without one: 1.3 s of CPU each time under
///   emulation, a login of 5 to 10 s instead of 2, for a manager nothing on the device uses.
///   Sessions are still registered with logind (and keep their background processes).
/// - `kmod-static-nodes.service`: its device-node list is written at build time instead
///   (`rootfs::modules::write_static_nodes`), the kernel being part of the read-only root.
/// - `systemd-repart.service`: never runs (no repart.d definitions; the boot stage grows
///   `resin-data`), but its `Wants=` started `modprobe@dm_mod` and `modprobe@loop` at every boot.
/// - `modprobe@drm.service` (wanted by logind for graphical seats, which a device does not have;
///   a GPU's driver pulls `drm` in when udev loads it) and `modprobe@efi_pstore.service`
///   (wanted by `systemd-pstore.service`, which still archives any pstore backend built in).
///
/// Each of the last four was a process per boot, 0.5 to 0.9 s each under emulation, ahead of
/// `sysinit.target` and so of everything after it.
pub const MASKED_UNITS: [&str; 5] = [
    "user@.service",
    "kmod-static-nodes.service",
    "systemd-repart.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
];

/// systemd generators masked (a link to `/dev/null` of the same name in
/// `/etc/systemd/system-generators`): each is a process at every boot and at every
/// `systemctl daemon-reload`, and none has anything to do on a baleen root. GPT
/// auto-discovery (balenaOS masks it too: the partitions are mounted by label), encrypted,
/// integrity and verity volumes from `/etc/*tab` (none), hibernation (none), offline
/// system updates (baleen's updates are bundles), and SysV init scripts (every one Debian ships
/// here has a native unit). The fstab, getty, debug (`systemd.mask=`, `systemd.debug_shell`)
/// and run (`systemd.run=`) generators stay.
pub const MASKED_GENERATORS: [&str; 8] = [
    "systemd-gpt-auto-generator",
    "systemd-cryptsetup-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
    "systemd-hibernate-resume-generator",
    "systemd-system-update-generator",
    "systemd-sysv-generator",
    "systemd-rc-local-generator",
];

/// Written at boot by `baleen device access` in development mode: console
/// logins (getty) and passwordless SSH are allowed only while it exists.
pub const DEVELOPMENT_FLAG: &str = "/run/baleen/development";

/// `/etc/fstab`: memory-backed directories, then the partitions of the boot
/// disk through their `/dev/disk/by-state` links. `/mnt/state` is mounted by
/// the root's initramfs already (it holds the machine id and the state-backed
/// paths); the entry lets systemd know it. The boot stage has checked every
/// filesystem, hence no fsck pass.
pub const FSTAB: &str = "\
# baleen: the root filesystem is read-only.
tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0
tmpfs /var/tmp tmpfs mode=1777,nosuid,nodev 0 0
tmpfs /var/log tmpfs mode=0755,nosuid,nodev 0 0
# Partitions of the boot disk only (see /usr/lib/udev/rules.d/65-baleen-by-state.rules).
/dev/disk/by-state/resin-boot /mnt/boot vfat rw,noatime,nosuid,nodev,noexec,fmask=0077,dmask=0077,nofail,x-systemd.device-timeout=30s 0 0
/dev/disk/by-state/resin-state /mnt/state ext4 rw,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s 0 0
/dev/disk/by-state/resin-data /mnt/data ext4 rw,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s 0 0
/dev/disk/by-state/active /mnt/sysroot/active ext4 ro,noatime,nofail,x-systemd.device-timeout=30s 0 0
/dev/disk/by-state/inactive /mnt/sysroot/inactive ext4 ro,noatime,noauto,nofail,x-systemd.automount,x-systemd.idle-timeout=60s 0 0
# The container engine's storage lives on the data partition.
/mnt/data/docker /var/lib/docker none bind,nofail,x-systemd.requires=baleen-data-reset.service,x-systemd.after=baleen-data-reset.service 0 0
";

/// sshd: the device-specific parts (host keys, keys, policy) are rendered at
/// boot into /run by `baleen device access`.
pub const SSHD_DROPIN: &str = "\
# baleen: host keys and the access policy come from config.json at boot.
Include /run/baleen/ssh/sshd_config
";

/// balenaOS's socket: one `sshd -i` per connection. systemd's default trigger
/// limit applies; `baleen-sshd-recover.timer` restarts the socket when it hit it.
pub const SSHD_SOCKET: &str = "\
[Unit]
Description=SSH socket on port 22222 (baleen)
Before=sockets.target
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Socket]
ListenStream=22222
Accept=yes

[Install]
WantedBy=sockets.target
";

pub const SSHD_SERVICE: &str = "\
[Unit]
Description=SSH session (baleen)
Wants=baleen-access.service
After=baleen-access.service

[Service]
ExecStart=-/usr/sbin/sshd -i
StandardInput=socket
StandardError=journal
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
";

pub const ACCESS_SERVICE: &str = "\
[Unit]
Description=SSH host keys, authorized keys and development mode from config.json (baleen)
# Early (with sysinit, not after basic.target): SSH waits for it.
DefaultDependencies=no
After=local-fs.target baleen-identity.service
RequiresMountsFor=/mnt/boot
Before=getty.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device access

[Install]
WantedBy=multi-user.target
";

pub const IDENTITY_SERVICE: &str = "\
[Unit]
Description=Device uuid and hostname from config.json (baleen)
DefaultDependencies=no
After=local-fs.target
RequiresMountsFor=/mnt/boot
Before=network-pre.target avahi-daemon.service shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device identity

[Install]
WantedBy=multi-user.target
";

/// The config agent: applies every change of config.json while the device runs.
pub const CONFIG_SERVICE: &str = "\
[Unit]
Description=Apply config.json changes to the running device (baleen)
After=local-fs.target baleen-identity.service baleen-access.service
RequiresMountsFor=/mnt/boot

[Service]
# Ready once the first pass rendered /run (dnsmasq's and chrony's sources).
Type=notify
ExecStart=/usr/bin/baleen device config-agent
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
";

pub const DATA_RESET_SERVICE: &str = "\
[Unit]
Description=Factory reset of the data partition when its flag is missing (baleen)
# Not before local-fs.target: that would hold the whole boot until udev has
# found the data partition. What uses the data partition waits for it instead.
DefaultDependencies=no
RequiresMountsFor=/mnt/data
Before=var-lib-docker.mount baleen-persistent-logs.service umount.target
Conflicts=umount.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device data-reset

[Install]
WantedBy=multi-user.target
";

pub const PERSISTENT_LOGS_SERVICE: &str = "\
[Unit]
Description=Journal on the data partition when config.json asks for persistentLogging (baleen)
After=baleen-data-reset.service systemd-journald.service
RequiresMountsFor=/mnt/data /mnt/boot

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device persistent-logs

[Install]
WantedBy=multi-user.target
";

pub const SSHD_RECOVER_SERVICE: &str = "\
[Unit]
Description=Restart the SSH socket if systemd's trigger limit stopped it (baleen)

[Service]
Type=oneshot
ExecStart=/usr/bin/baleen device recover-ssh
";

pub const SSHD_RECOVER_TIMER: &str = "\
[Unit]
Description=Check the SSH socket every 15 minutes (baleen)

[Timer]
OnCalendar=*:0/15
Persistent=true

[Install]
WantedBy=timers.target
";

/// Console logins only in development mode, as balenaOS.
pub const GETTY_DROPIN: &str = "\
[Unit]
# baleen: console logins only in development mode (config.json developmentMode).
Wants=baleen-access.service
After=baleen-access.service
ConditionPathExists=/run/baleen/development
";

pub const AVAHI_DROPIN: &str = "\
[Unit]
# baleen: publish the hostname from config.json, not the image's default.
Wants=baleen-identity.service
After=baleen-identity.service

[Service]
Restart=always
";

/// NetworkManager reads the hostname from systemd-hostnamed as it starts, and waits while D-Bus
/// has systemd start hostnamed for it: 4.0 s of NetworkManager's start under emulation (6.1 s
/// on a loaded host), ahead of any address. With hostnamed started beside NetworkManager, it
/// took 0.8 s, and NetworkManager's start to its DHCP lease 2.9 s instead of 5.7 (one boot
/// each, 2026-11-26).
pub const NETWORKMANAGER_DROPIN: &str = "\
[Unit]
# baleen: NetworkManager asks hostnamed for the hostname first thing; start it alongside.
Wants=systemd-hostnamed.service
";

/// `<hostname>.local` answers SSH on 22222, found by balena's tools through
/// the `_resin-device` subtype.
pub const AVAHI_SSH_SERVICE: &str = r#"<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<!-- baleen: SSH on port 22222, as balenaOS publishes it. -->
<service-group>
  <name replace-wildcards="yes">%h</name>
  <service>
    <type>_ssh._tcp</type>
    <subtype>_resin-device._sub._ssh._tcp</subtype>
    <port>22222</port>
  </service>
</service-group>
"#;

/// Swap in compressed memory: half the RAM, at most 4096000 KiB, the only
/// swap (balenaOS's zram-swap-init). Not a swap unit: see
/// `baleen device zram` for why it stays out of `swap.target`.
pub const ZRAM_SERVICE: &str = "\
[Unit]
Description=Swap in compressed memory (baleen)
After=local-fs.target
ConditionVirtualization=!container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device zram

[Install]
WantedBy=multi-user.target
";

/// `/dev/disk/by-state/<label>`, `active` and `inactive`, for partitions of
/// the disk the root was mounted from only: a second disk carrying the same
/// labels (a USB stick with another image) gets no link.
pub const BY_STATE_RULES: &str = r#"# baleen: /dev/disk/by-state links for the partitions of the boot disk.
SUBSYSTEM!="block", GOTO="baleen_by_state_end"
ACTION=="remove", GOTO="baleen_by_state_end"
KERNEL=="loop*|ram*|zram*", GOTO="baleen_by_state_end"
ENV{DEVTYPE}!="partition", GOTO="baleen_by_state_end"
ENV{ID_PART_ENTRY_NAME}=="resin-*|balena-*", IMPORT{program}="/usr/bin/baleen device state-probe $devnode $env{ID_PART_ENTRY_NAME}"
ENV{BALENA_FS_USE}!="?*", ENV{ID_FS_LABEL_ENC}=="resin-*|balena-*", IMPORT{program}="/usr/bin/baleen device state-probe $devnode $env{ID_FS_LABEL_ENC}"
ENV{BALENA_FS_USE}=="?*", SYMLINK+="disk/by-state/$env{BALENA_FS_USE}"
ENV{BALENA_UPDATE_STATE}=="?*", SYMLINK+="disk/by-state/$env{BALENA_UPDATE_STATE}"
LABEL="baleen_by_state_end"
"#;

/// journald as balenaOS configures it: volatile unless persistent logging
/// binds `/var/log/journal` to the data partition.
pub const JOURNALD: &str = "\
[Journal]
Storage=auto
RuntimeMaxUse=128M
SystemMaxUse=128M
ForwardToSyslog=no
";

/// Modules loaded by `systemd-modules-load` at the start of sysinit. The boot partition's FAT
/// driver is on the path to SSH (`/mnt/boot` → identity → network). baleen's root initramfs
/// loads it and mounts `/mnt/boot` before init starts; this covers a root booted with
/// Debian's initrd, where loading it before udev's coldplug queues dozens of driver loads
/// keeps the mount from waiting behind them (6 s under emulation). FAT mounts use code page
/// 437 and, by the Debian kernel's default, `ascii`.
pub const MODULES: &str = "\
vfat
nls_cp437
nls_ascii
";

/// balenaOS's sysctl settings that matter without its engine.
pub const SYSCTL: &str = "\
fs.inotify.max_user_instances=512
net.ipv4.ip_local_port_range=49152 65535
vm.overcommit_memory=1
kernel.printk=4 4 1 7
";
