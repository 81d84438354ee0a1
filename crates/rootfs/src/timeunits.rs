//! The time chain's units (balenaOS §5, with its known problems fixed): the
//! early clock (build-time floor, saved clock, RTC), the saved clock (hourly
//! and at shutdown), the HTTPS `Date` step before chrony, and chrony's
//! health check. The commands are `baleen device time-*` and `ntp-health`.

/// Early in boot, before anything reads the clock: never earlier than the
/// build, then the saved clock, then the RTC. Stopping it at shutdown saves
/// the clock to the state partition (it is ordered after `/mnt/state`'s
/// mount, so it stops before that unmounts).
pub const EARLY_SERVICE: &str = "\
[Unit]
Description=Clock from the build time, the saved clock and the RTC (baleen)
DefaultDependencies=no
RequiresMountsFor=/mnt/state
Before=time-set.target sysinit.target shutdown.target
Wants=time-set.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/baleen device time-early
ExecStop=/usr/bin/baleen device time-save

[Install]
WantedBy=sysinit.target
";

pub const SAVE_SERVICE: &str = "\
[Unit]
Description=Save the clock to the state partition (baleen)
RequiresMountsFor=/mnt/state

[Service]
Type=oneshot
ExecStart=/usr/bin/baleen device time-save
";

pub const SAVE_TIMER: &str = "\
[Unit]
Description=Save the clock to the state partition every hour (baleen)

[Timer]
OnCalendar=hourly

[Install]
WantedBy=timers.target
";

/// The HTTPS step: ready once the clock was stepped (or the step is
/// disabled or not possible), and only chrony waits for it. While no
/// trusted answer comes, it holds chrony for a bounded time, then lets it
/// start and keeps trying in the background.
pub const HTTPS_SERVICE: &str = "\
[Unit]
Description=Clock from the connectivity check's HTTPS Date header (baleen)
Wants=network.target
After=network.target time-set.target baleen-config.service
Before=time-sync.target chrony.service

[Service]
Type=notify
ExecStart=/usr/bin/baleen device time-https
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

/// chronyd: after the HTTPS step, sources from config.json.
pub const CHRONY_DROPIN: &str = "\
[Unit]
# baleen: the HTTPS Date step first, sources from config.json (the config agent).
Wants=baleen-time-https.service baleen-config.service
After=baleen-time-https.service baleen-config.service

[Service]
# baleen: with no DNS server answering (pool names being looked up), chronyd
# was seen to take 11-24 s to stop, paid at every shutdown. It saves its drift
# file while it runs, so a kill loses little.
TimeoutStopSec=5s
";

pub const NTP_HEALTH_SERVICE: &str = "\
[Unit]
Description=Check that NTP keeps the clock synchronized, restart chronyd if not (baleen)
After=chrony.service

[Service]
Type=oneshot
ExecStart=/usr/bin/baleen device ntp-health
";

pub const NTP_HEALTH_TIMER: &str = "\
[Unit]
Description=Check NTP synchronization every 10 minutes (baleen)

[Timer]
OnActiveSec=10min
OnUnitActiveSec=10min

[Install]
WantedBy=timers.target
";

/// NetworkManager's dispatcher: NTP servers from DHCP (option 42) and chrony
/// online/offline with connectivity. Under `/usr/lib` so that an update
/// brings new versions (`/etc/NetworkManager/dispatcher.d` is state-backed).
pub const NM_DISPATCHER: &str = "\
#!/bin/sh
# baleen: NTP servers from DHCP, and chrony online/offline with the network.
exec /usr/bin/baleen device ntp-dispatch \"$1\" \"$2\"
";

/// (path relative to the root, content, mode).
pub const FILES: [(&str, &str, u32); 8] = [
    (
        "etc/systemd/system/baleen-time-early.service",
        EARLY_SERVICE,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-time-save.service",
        SAVE_SERVICE,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-time-save.timer",
        SAVE_TIMER,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-time-https.service",
        HTTPS_SERVICE,
        0o644,
    ),
    (
        "etc/systemd/system/chrony.service.d/baleen.conf",
        CHRONY_DROPIN,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-ntp-health.service",
        NTP_HEALTH_SERVICE,
        0o644,
    ),
    (
        "etc/systemd/system/baleen-ntp-health.timer",
        NTP_HEALTH_TIMER,
        0o644,
    ),
    (
        "usr/lib/NetworkManager/dispatcher.d/90-baleen-ntp",
        NM_DISPATCHER,
        0o755,
    ),
];

pub const ENABLED_UNITS: [&str; 4] = [
    "baleen-time-early.service",
    "baleen-time-save.timer",
    "baleen-time-https.service",
    "baleen-ntp-health.timer",
];
