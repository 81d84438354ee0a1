//! What a VM is made of, and the QEMU command line that follows from it (pure, tested).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::netns::NetNs;
use crate::overlay::DiskFormat;
use crate::ssh::GUEST_SSH_PORT;

/// OVMF firmware code (read-only pflash) on Debian.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template, copied per VM.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The QEMU binary used unless [`VmConfig::qemu_binary`] says otherwise.
pub const QEMU: &str = "qemu-system-x86_64";
/// Where a guest on a namespace bridge is expected to be, unless told otherwise.
pub const DEFAULT_GUEST_ADDR: &str = "10.0.2.15";

/// A VM to start: built with chained setters from [`crate::Vm::builder`], then
/// [`VmConfig::start`]ed.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub(crate) name: String,
    pub(crate) disk: Option<(PathBuf, DiskFormat)>,
    pub(crate) overlay_size: Option<u64>,
    pub(crate) extra_disks: Vec<(PathBuf, DiskFormat)>,
    pub(crate) memory_mib: u32,
    pub(crate) cpus: u32,
    pub(crate) ssh_port: Option<u16>,
    pub(crate) ssh_key: Option<PathBuf>,
    pub(crate) persist: bool,
    pub(crate) netns: Option<NetNs>,
    pub(crate) guest_addr: String,
    pub(crate) mac: Option<String>,
    pub(crate) log_dir: Option<PathBuf>,
    pub(crate) ovmf_code: PathBuf,
    pub(crate) ovmf_vars: PathBuf,
    pub(crate) qemu: PathBuf,
    pub(crate) rtc_base: Option<String>,
    pub(crate) extra_args: Vec<String>,
    pub(crate) console: bool,
}

impl VmConfig {
    /// A 1 GiB VM named `name` (used for its log folder) with [`crate::default_cpus`] CPUs; a
    /// disk must still be given.
    pub fn new(name: &str) -> Self {
        VmConfig {
            name: name.to_owned(),
            disk: None,
            overlay_size: None,
            extra_disks: Vec::new(),
            memory_mib: 1024,
            cpus: crate::default_cpus(),
            ssh_port: None,
            ssh_key: None,
            persist: false,
            netns: None,
            guest_addr: DEFAULT_GUEST_ADDR.to_owned(),
            mac: None,
            log_dir: None,
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: OVMF_VARS.into(),
            qemu: QEMU.into(),
            rtc_base: None,
            extra_args: Vec::new(),
            console: false,
        }
    }

    /// Boots this raw image (through a throwaway overlay unless [`VmConfig::persist`]).
    pub fn base_image(self, path: impl Into<PathBuf>) -> Self {
        self.disk(path, DiskFormat::Raw)
    }

    /// Boots this image of the given format.
    pub fn disk(mut self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.disk = Some((path.into(), format));
        self
    }

    /// Grows the overlay's virtual size to `bytes` (the guest sees a bigger disk).
    pub fn overlay_size(mut self, bytes: u64) -> Self {
        self.overlay_size = Some(bytes);
        self
    }

    /// Attaches a raw image as an additional virtio disk, always through its own overlay and
    /// after the first disk in boot order.
    pub fn extra_disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_disks.push((path.into(), DiskFormat::Raw));
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// Host port on 127.0.0.1 forwarded to the guest's 22222; `None` picks a free one.
    pub fn ssh_port(mut self, port: Option<u16>) -> Self {
        self.ssh_port = port;
        self
    }

    /// Private key for SSH; without one, passwordless root (development images) is used.
    pub fn ssh_key(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssh_key = Some(path.into());
        self
    }

    /// Boots the disk itself instead of an overlay: the guest's writes land in the image.
    pub fn persist(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }

    /// Runs QEMU inside this namespace with a tap NIC on its bridge instead of user networking.
    /// SSH then goes from inside the namespace to [`VmConfig::guest_addr`]:22222; the test
    /// gives the guest that address (its own DHCP server or static configuration).
    pub fn netns(mut self, ns: Option<&NetNs>) -> Self {
        self.netns = ns.cloned();
        self
    }

    /// The guest's address on a namespace bridge (default `10.0.2.15`).
    pub fn guest_addr(mut self, addr: &str) -> Self {
        self.guest_addr = addr.to_owned();
        self
    }

    /// The NIC's MAC address (give each VM on one bridge its own).
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac.to_owned());
        self
    }

    /// The folder for serial.log, qemu.log, overlays and the NVRAM copy (default: a fresh
    /// `target/vmtests/<name>-<timestamp>`).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// OVMF code and variable-store template (defaults: Debian's 4M builds).
    pub fn ovmf(mut self, code: impl Into<PathBuf>, vars_template: impl Into<PathBuf>) -> Self {
        self.ovmf_code = code.into();
        self.ovmf_vars = vars_template.into();
        self
    }

    pub fn qemu_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu = path.into();
        self
    }

    /// The guest's RTC start (`-rtc base=…`, e.g. `2020-01-01T00:00:00` or `utc`); the host's
    /// clock is never touched.
    pub fn rtc_base(mut self, base: &str) -> Self {
        self.rtc_base = Some(base.to_owned());
        self
    }

    /// Extra QEMU arguments. Networking, KVM and host device paths are refused at start.
    pub fn qemu_arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// The VM's name.
    /// Interactive console: the terminal's input goes to the serial port and
    /// the serial output is echoed to stdout (for `baleen run`).
    pub fn console(mut self, console: bool) -> Self {
        self.console = console;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks what can be checked without touching the system. Pure.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.disk.is_none() {
            return Err(Error::Config(format!(
                "VM {:?} has no disk: call base_image() or disk()",
                self.name
            )));
        }
        if self.cpus == 0 || self.memory_mib < 64 {
            return Err(Error::Config(format!(
                "VM {:?} needs at least 1 CPU and 64 MiB (has {} CPUs, {} MiB)",
                self.name, self.cpus, self.memory_mib
            )));
        }
        if self.persist && self.overlay_size.is_some() {
            return Err(Error::Config(
                "overlay_size() has no effect with persist(true)".into(),
            ));
        }
        for arg in &self.extra_args {
            let a = arg.to_ascii_lowercase();
            let forbidden = a.contains("kvm")
                || a.contains("hostfwd")
                || a.contains("/dev/")
                || ["-netdev", "-nic", "-net", "-accel", "-machine", "-m"].contains(&a.as_str());
            if forbidden {
                return Err(Error::Config(format!(
                    "extra QEMU argument {arg:?} is not allowed: networking, acceleration and host \
                     devices are fixed by the harness"
                )));
            }
        }
        Ok(())
    }
}

/// Paths and ports decided when a VM starts.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub disk0: PathBuf,
    pub disk0_format: DiskFormat,
    /// qcow2 overlays of the extra disks.
    pub extra: Vec<PathBuf>,
    pub vars: PathBuf,
    pub qmp: PathBuf,
    pub net: Net,
}

#[derive(Debug, Clone)]
pub(crate) enum Net {
    /// User networking, isolated, with SSH forwarded from 127.0.0.1:`ssh_port`.
    User { ssh_port: u16 },
    /// A tap on a namespace bridge; QEMU runs in the namespace.
    Tap { netns: String, ifname: String },
}

/// The accelerator: software emulation with a 128 MiB translation cache (see `qemu_argv`).
pub const TCG_ACCEL: &str = "tcg,tb-size=128";

/// The guest CPU: everything TCG emulates except the AVX family, like the Atom and Celeron
/// boards of x86 fleets (SSE4.2, AES-NI, carry-less multiply; no AVX).
///
/// Programs pick AVX2 code at run time where the CPU has it (ring's AES-GCM and ChaCha20,
/// glibc's string functions, zstd), and how fast TCG runs it depends on the host: on one CI
/// host (2026-11-26) ring's AES-128-GCM ran at 7 MiB/s under `qemu-x86_64 -cpu max` and at
/// 44 MiB/s with AVX off (ChaCha20 26 and 46, zstd decompression 122 and 408 MiB/s), and an
/// HTTPS install in a guest took 42 s where HTTP took 14 s. Without AVX the guest's speed no
/// longer swings with the host's.
pub const GUEST_CPU: &str = "max,-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq";

/// Escapes a value for QEMU's comma-separated option syntax.
fn opt(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The full argv, starting with `ip netns exec <ns>` when QEMU runs in a namespace. Pure.
pub(crate) fn qemu_argv(cfg: &VmConfig, layout: &Layout) -> Vec<OsString> {
    let mut a: Vec<String> = Vec::new();
    if let Net::Tap { netns, .. } = &layout.net {
        a.extend(["ip", "netns", "exec", netns].map(String::from));
    }
    a.push(cfg.qemu.to_string_lossy().into_owned());
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &cfg.name.replace(',', ",,")]);
    // TCG's translation cache defaults to 1 GiB, so it is never flushed: after a guest reboot
    // the new boot writes over pages still holding translations of the old one, and each such
    // write pays for invalidating them (the firmware, the kernel's decompression and kexec all
    // write most of memory). Measured: reboot to SSH 90 s with the default, 40 s with 128 MiB;
    // a cold boot is the same with both.
    push(&["-machine", "q35", "-accel", TCG_ACCEL, "-cpu", GUEST_CPU]);
    push(&[
        "-smp",
        &cfg.cpus.to_string(),
        "-m",
        &cfg.memory_mib.to_string(),
    ]);
    push(&["-nodefaults", "-no-user-config"]);
    // No window, but a display device so QMP `screendump` has something to capture.
    push(&["-display", "none", "-device", "VGA"]);
    push(&[
        "-drive",
        &format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            opt(&cfg.ovmf_code)
        ),
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", opt(&layout.vars)),
    ]);
    let disks = std::iter::once((&layout.disk0, layout.disk0_format))
        .chain(layout.extra.iter().map(|p| (p, DiskFormat::Qcow2)));
    for (i, (path, format)) in disks.enumerate() {
        push(&[
            "-drive",
            &format!("file={},if=none,id=d{i},format={format}", opt(path)),
            "-device",
            &format!("virtio-blk-pci,drive=d{i},bootindex={i}"),
        ]);
    }
    let netdev = match &layout.net {
        Net::User { ssh_port } => {
            format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:{GUEST_SSH_PORT}")
        }
        Net::Tap { ifname, .. } => {
            format!("tap,id=n0,ifname={ifname},script=no,downscript=no")
        }
    };
    let nic = match &cfg.mac {
        Some(mac) => format!("virtio-net-pci,netdev=n0,mac={mac}"),
        None => "virtio-net-pci,netdev=n0".to_owned(),
    };
    push(&["-netdev", &netdev, "-device", &nic]);
    // Guests wait for entropy at boot; TCG makes that slow without a virtio RNG.
    push(&["-device", "virtio-rng-pci"]);
    if cfg.console {
        // Interactive: the serial port shares the terminal with QEMU's
        // monitor; Ctrl-A X quits, Ctrl-A C switches to the monitor.
        push(&[
            "-chardev",
            "stdio,id=ser0,mux=on,signal=off",
            "-serial",
            "chardev:ser0",
        ]);
        push(&["-mon", "chardev=ser0,mode=readline"]);
    } else {
        push(&[
            "-chardev",
            "stdio,id=ser0,signal=off",
            "-serial",
            "chardev:ser0",
        ]);
    }
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", opt(&layout.qmp)),
    ]);
    if let Some(base) = &cfg.rtc_base {
        push(&["-rtc", &format!("base={base}")]);
    }
    a.extend(cfg.extra_args.iter().cloned());
    a.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(net: Net) -> Layout {
        Layout {
            disk0: "/logs/t/disk0.qcow2".into(),
            disk0_format: DiskFormat::Qcow2,
            extra: vec!["/logs/t/disk1.qcow2".into()],
            vars: "/logs/t/OVMF_VARS.fd".into(),
            qmp: "/logs/t/qmp.sock".into(),
            net,
        }
    }

    fn argv(cfg: &VmConfig, l: &Layout) -> Vec<String> {
        qemu_argv(cfg, l)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn user_networking_is_restricted_and_forwarded_from_loopback() {
        let cfg = VmConfig::new("boot").base_image("/img/base.img").cpus(2);
        let a = argv(&cfg, &layout(Net::User { ssh_port: 40123 }));
        assert_eq!(a[0], "qemu-system-x86_64");
        assert_eq!(
            after(&a, "-netdev"),
            ["user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40123-:22222"]
        );
        assert_eq!(after(&a, "-accel"), ["tcg,tb-size=128"]);
        assert!(!a.iter().any(|s| s.contains("kvm")), "{a:?}");
        assert_eq!(after(&a, "-machine"), ["q35"]);
        assert_eq!(
            after(&a, "-cpu"),
            ["max,-avx,-avx2,-fma,-f16c,-vaes,-vpclmulqdq"]
        );
        assert_eq!(after(&a, "-smp"), ["2"]);
        assert_eq!(after(&a, "-m"), ["1024"]);
        assert!(!a.iter().any(|s| s == "-no-reboot"));
    }

    #[test]
    fn disks_firmware_serial_and_qmp() {
        let cfg = VmConfig::new("boot").base_image("/img/base.img");
        let a = argv(&cfg, &layout(Net::User { ssh_port: 1 }));
        assert_eq!(
            after(&a, "-drive"),
            [
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,format=raw,unit=1,file=/logs/t/OVMF_VARS.fd",
                "file=/logs/t/disk0.qcow2,if=none,id=d0,format=qcow2",
                "file=/logs/t/disk1.qcow2,if=none,id=d1,format=qcow2",
            ]
        );
        assert_eq!(
            after(&a, "-device"),
            [
                "VGA",
                "virtio-blk-pci,drive=d0,bootindex=0",
                "virtio-blk-pci,drive=d1,bootindex=1",
                "virtio-net-pci,netdev=n0",
                "virtio-rng-pci",
            ]
        );
        assert_eq!(after(&a, "-chardev"), ["stdio,id=ser0,signal=off"]);
        assert_eq!(after(&a, "-serial"), ["chardev:ser0"]);
        assert_eq!(
            after(&a, "-qmp"),
            ["unix:/logs/t/qmp.sock,server=on,wait=off"]
        );
        assert_eq!(after(&a, "-display"), ["none"]);
    }

    #[test]
    fn tap_networking_runs_qemu_in_the_namespace() {
        let cfg = VmConfig::new("ntp")
            .base_image("/b")
            .mac("52:54:00:00:00:02")
            .rtc_base("2020-01-01T00:00:00")
            .qemu_arg("-S");
        let a = argv(
            &cfg,
            &layout(Net::Tap {
                netns: "baleen-ntp-1-0".into(),
                ifname: "tap0".into(),
            }),
        );
        assert_eq!(
            &a[..5],
            [
                "ip",
                "netns",
                "exec",
                "baleen-ntp-1-0",
                "qemu-system-x86_64"
            ]
        );
        assert_eq!(
            after(&a, "-netdev"),
            ["tap,id=n0,ifname=tap0,script=no,downscript=no"]
        );
        assert!(a.contains(&"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02".to_owned()));
        assert_eq!(after(&a, "-rtc"), ["base=2020-01-01T00:00:00"]);
        assert_eq!(a.last().unwrap(), "-S");
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let cfg = VmConfig::new("a,b").base_image("/b");
        let mut l = layout(Net::User { ssh_port: 1 });
        l.disk0 = "/x,y/disk0.qcow2".into();
        let a = argv(&cfg, &l);
        assert!(a.contains(&"file=/x,,y/disk0.qcow2,if=none,id=d0,format=qcow2".to_owned()));
        assert_eq!(after(&a, "-name"), ["a,,b"]);
    }

    #[test]
    fn validation() {
        let e = VmConfig::new("x").validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid VM configuration: VM \"x\" has no disk: call base_image() or disk()"
        );
        let ok = VmConfig::new("x").base_image("/b");
        ok.validate().unwrap();
        for bad in [
            "-enable-kvm",
            "accel=kvm",
            "-netdev",
            "user,hostfwd=tcp::22-:22",
            "/dev/sda",
        ] {
            let e = ok.clone().qemu_arg(bad).validate().unwrap_err();
            assert!(e.to_string().contains("is not allowed"), "{bad}: {e}");
        }
        assert!(ok.clone().cpus(0).validate().is_err());
        assert!(ok.persist(true).overlay_size(1 << 30).validate().is_err());
    }
}
