//! A private LAN for a VM: a network namespace with real Debian daemons the test starts and ends.
//!
//! [`Lan::new`] creates a [`NetNs`] (bridge `br0` at `10.0.2.2/24`) and runs dnsmasq on `br0` as
//! its DHCP server, handing out exactly one address, the [`DEFAULT_GUEST_ADDR`] `10.0.2.15`
//! (lease 1h, router, DNS server and NTP server (option 42) `10.0.2.2`). Its DNS has no upstream
//! and answers every name NXDOMAIN at once, as a LAN's router does for names that do not exist:
//! without it the guest would wait on its default `dnsServers` (8.8.8.8, unreachable here) for
//! a minute per name, and chronyd's stop at every shutdown would wait on its pool names.
//! A VM joins with `Vm::builder(..).netns(Some(lan.ns()))`. [`Lan::avahi`] starts an mDNS
//! browser in the same namespace, so a test can resolve `<host>.local` and browse `_ssh._tcp`
//! the way a laptop on the device's LAN would. [`Lan::add_host`] adds another machine (its own
//! namespace, joined to `br0` through a veth pair), e.g. to publish a name the guest should see.
//!
//! ```no_run
//! use std::time::Duration;
//! use systests::lan::Lan;
//!
//! let lan = Lan::new("mdns")?;
//! // let vm = Vm::builder("mdns").netns(Some(lan.ns())).base_image(..).start()?;
//! let avahi = lan.avahi()?;
//! let addr = avahi.resolve("baleen.local", Duration::from_secs(60))?;
//! let ssh = avahi.browse_ssh(Duration::from_secs(60))?;
//! assert!(ssh.iter().any(|s| s.port == 22222));
//! # Ok::<(), systests::lan::Error>(())
//! ```
//!
//! # How avahi runs without touching the host
//!
//! avahi-daemon and its clients talk over the *system* D-Bus at the fixed path
//! `/run/dbus/system_bus_socket`, and avahi-daemon keeps its pid file and socket in the fixed
//! directory `/run/avahi-daemon`. The host's own bus and daemon must stay untouched, so each
//! [`Avahi`] gets its own `/run` in its own mount namespace. `ip netns exec` gives every
//! invocation a fresh mount namespace, so the daemons and the later clients could not share one
//! that way; instead one supervisor is started in the network namespace:
//!
//! ```text
//! ip netns exec <ns> unshare --mount --propagation private --pid --fork --kill-child sh -c SCRIPT
//! ```
//!
//! `unshare` itself moves into the new mount namespace and forks `sh` as PID 1 of a new PID
//! namespace. The script mounts a tmpfs on `/run` and bind-mounts per-instance directories over
//! `/etc/avahi/services` and `/etc/avahi/hosts` (private propagation: none of it reaches the
//! host), starts `dbus-daemon` with its own config (listening on the standard socket path, no
//! service activation, no user switch), waits for its socket, then `exec`s `avahi-daemon -f
//! <config> --no-drop-root --no-chroot --no-rlimits`. Clients run as
//! `nsenter --target <unshare's PID> --mount --net -- avahi-resolve …`, so they see that `/run`
//! and that network. Ending is one `SIGKILL` to `unshare` (the only process this module started
//! for the daemon): `--kill-child` passes it on to PID 1 of the PID namespace, and the kernel ends
//! every other process in a PID namespace whose PID 1 dies, so dbus-daemon cannot outlive it.
//!
//! # Caveats
//!
//! * Needs root, and the Debian packages `dnsmasq-base`, `avahi-daemon`, `avahi-utils`, `dbus`
//!   and `util-linux` (`scripts/install-deps.sh`); the self-test also needs `isc-dhcp-client`.
//!   The daemons run as root (`--no-drop-root`), so the `avahi` user is not needed; dnsmasq drops
//!   to `nobody` after opening its files.
//! * One DHCP address per LAN: a second client (another MAC) gets nothing while the first one's
//!   lease (1h) lasts. dnsmasq ignores client IDs (`--dhcp-ignore-clid`), so a reinstalled guest
//!   with the same MAC (QEMU's default is fixed) gets the address again, and is authoritative,
//!   so a guest asking for a lease remembered from an earlier LAN gets an answer at once.
//! * mDNS is IPv4 only (`use-ipv6=no`), but a publisher with avahi's default
//!   `publish-aaaa-on-ipv4=yes` also sends its IPv6 link-local addresses, and `avahi-browse -r`
//!   may report one of those as a service's address; [`Avahi::resolve`] asks for IPv4 only.
//! * Multicast needs nothing special: `224.0.0.251` is link-local, so the bridge floods it to
//!   every port even with multicast snooping on; the bridge has carrier once a tap or veth is up.
//! * If the test process is killed (no `Drop`), the daemons keep running in the orphaned
//!   namespace until killed by hand; [`NetNs`] removes stale namespaces on its next use.

use crate::logwait::{Failed, log_tail};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use subprocess::Cmd;
use tempfile::TempDir;
use vmharness::{DEFAULT_GUEST_ADDR, NetNs, NsProcess, Output, fmt_duration, scaled};

/// The bridge every daemon serves and every host joins.
pub const BRIDGE: &str = "br0";
/// How long the guest's DHCP lease lasts.
pub const LEASE_TIME: &str = "1h";

const STARTUP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const RETRY: Duration = Duration::from_millis(500);
/// The shortest run given to one client attempt, however little of the caller's timeout is left.
const MIN_ATTEMPT: Duration = Duration::from_secs(2);

/// What setting up or using the LAN failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the namespace, a link or a process in it failed.
    #[error(transparent)]
    Netns(#[from] vmharness::Error),

    /// A client command (`avahi-browse`, `nsenter`, …) failed or ran out of time.
    #[error(transparent)]
    Command(#[from] subprocess::Error),

    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A program the LAN needs is not installed.
    #[error(
        "{program} not found on PATH: install the Debian package {package} (scripts/install-deps.sh)"
    )]
    Missing {
        program: &'static str,
        package: &'static str,
    },

    /// A daemon exited before it was ready.
    #[error("{what} exited while starting; its log ends:\n{log_tail}")]
    Exited { what: String, log_tail: String },

    /// A daemon did not report itself ready in time.
    #[error("timed out after {} waiting for {what}; its log ends:\n{log_tail}", fmt_duration(*waited))]
    Timeout {
        what: String,
        waited: Duration,
        log_tail: String,
    },
}

/// Shorthand for results in this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Fails with [`Error::Missing`] for the first program not on PATH.
fn require(programs: &[(&'static str, &'static str)]) -> Result<()> {
    match programs.iter().find(|(p, _)| !subprocess::on_path(p)) {
        Some(&(program, package)) => Err(Error::Missing { program, package }),
        None => Ok(()),
    }
}

/// The private LAN: namespace, bridge and DHCP server. Dropping it ends dnsmasq and removes its
/// files; the namespace goes when the last handle on it (this, an [`Avahi`] in it, a VM) drops.
#[derive(Debug)]
pub struct Lan {
    // Fields drop in this order: dnsmasq ends before its directory goes.
    dnsmasq: NsProcess,
    ns: NetNs,
    dir: TempDir,
    next_link: AtomicU32,
}

impl Lan {
    /// Creates the namespace and starts dnsmasq on its bridge; returns once dnsmasq serves.
    pub fn new(name: &str) -> Result<Lan> {
        require(&[("ip", "iproute2"), ("dnsmasq", "dnsmasq-base")])?;
        let ns = NetNs::create(name)?;
        let dir = tempfile::Builder::new()
            .prefix("baleen-lan-")
            .tempdir()
            .map_err(io_err("creating the LAN's temporary directory"))?;
        let log = dir.path().join("dnsmasq.log");
        let argv = dnsmasq_argv(dir.path(), ns.host_addr());
        let mut dnsmasq =
            ns.spawn_logged(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &log)?;
        wait_for_log("dnsmasq", &log, &mut dnsmasq, scaled(STARTUP), |text| {
            text.contains("DHCP, IP range")
        })?;
        tracing::info!(netns = %ns.name(), guest = DEFAULT_GUEST_ADDR, "LAN ready: dnsmasq serves DHCP");
        Ok(Lan {
            dnsmasq,
            ns,
            dir,
            next_link: AtomicU32::new(0),
        })
    }

    /// The namespace, for `Vm::builder(..).netns(Some(lan.ns()))`.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The LAN side's own address on the bridge (`10.0.2.2`), also the DHCP router option.
    pub fn host_addr(&self) -> &str {
        self.ns.host_addr()
    }

    /// The only address dnsmasq hands out (`10.0.2.15`).
    pub fn guest_addr(&self) -> &'static str {
        DEFAULT_GUEST_ADDR
    }

    /// dnsmasq's log (stdout, stderr and `--log-dhcp` output); removed with the LAN.
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    /// dnsmasq's current leases.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let path = self.dir.path().join("dnsmasq.leases");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(parse_leases(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }

    /// Waits until dnsmasq has leased the guest address, and returns that lease.
    pub fn wait_for_lease(&self, timeout: Duration) -> Result<Lease> {
        let started = Instant::now();
        loop {
            if let Some(lease) = self
                .leases()?
                .into_iter()
                .find(|l| l.addr == DEFAULT_GUEST_ADDR)
            {
                return Ok(lease);
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("a DHCP lease of {DEFAULT_GUEST_ADDR}"),
                    waited: timeout,
                    log_tail: log_tail(&self.dnsmasq_log()),
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Starts an mDNS browser (avahi-daemon with publishing disabled) on the LAN.
    pub fn avahi(&self) -> Result<Avahi> {
        Avahi::start(&self.ns, &AvahiConfig::browser())
    }

    /// Adds another machine to the LAN: a namespace `name` whose bridge holds `cidr` (e.g.
    /// `10.0.2.3/24`), linked to this LAN's bridge by a veth pair.
    pub fn add_host(&self, name: &str, cidr: &str) -> Result<LanHost> {
        let host = NetNs::create_with_addr(name, cidr)?;
        let link = format!("lan{}", self.next_link.fetch_add(1, Ordering::Relaxed));
        self.ns.exec(&[
            "ip",
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ])?;
        self.ns
            .exec(&["ip", "link", "set", &link, "master", BRIDGE])?;
        self.ns.exec(&["ip", "link", "set", &link, "up"])?;
        host.exec(&["ip", "link", "set", "eth0", "master", BRIDGE])?;
        host.exec(&["ip", "link", "set", "eth0", "up"])?;
        tracing::info!(lan = %self.ns.name(), host = %host.name(), %cidr, "added a host to the LAN");
        Ok(LanHost { ns: host })
    }

    /// Runs `argv` to completion in the LAN's namespace (as the `10.0.2.2` side).
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        Ok(self.ns.exec(argv)?)
    }

    /// Ends dnsmasq and removes the LAN's files, reporting what failed.
    pub fn close(self) -> Result<()> {
        let Lan {
            dnsmasq, ns, dir, ..
        } = self;
        dnsmasq.kill()?;
        drop(ns);
        let path = dir.path().to_owned();
        dir.close()
            .map_err(io_err(format!("removing {}", path.display())))
    }
}

/// dnsmasq's command line: DHCP only, one address, everything in `dir`. Pure.
fn dnsmasq_argv(dir: &Path, router: &str) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        "dnsmasq".into(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        // DNS for the guest (option 6 by default): no upstream, every name NXDOMAIN.
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--address=/#/".into(),
        format!("--interface={BRIDGE}"),
        "--bind-interfaces".into(),
        format!(
            "--dhcp-range={DEFAULT_GUEST_ADDR},{DEFAULT_GUEST_ADDR},255.255.255.0,{LEASE_TIME}"
        ),
        format!("--dhcp-option=option:router,{router}"),
        // The LAN's NTP server (option 42), for guests that take NTP servers from DHCP.
        format!("--dhcp-option=option:ntp-server,{router}"),
        "--dhcp-authoritative".into(),
        "--dhcp-ignore-clid".into(),
        "--no-ping".into(),
        format!("--dhcp-leasefile={}", file("dnsmasq.leases")),
        format!("--pid-file={}", file("dnsmasq.pid")),
        "--log-facility=-".into(),
        "--log-dhcp".into(),
    ]
}

/// One line of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// When the lease ends, in seconds since the epoch.
    pub expiry: u64,
    pub mac: String,
    pub addr: String,
    /// The host name the client sent, if any.
    pub hostname: Option<String>,
    pub client_id: Option<String>,
}

/// Parses dnsmasq's lease file (`expiry mac addr hostname client-id`, `*` for none). Pure.
pub fn parse_leases(text: &str) -> Vec<Lease> {
    let opt = |s: &str| (s != "*").then(|| s.to_owned());
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[0] == "duid" {
                return None;
            }
            Some(Lease {
                expiry: f[0].parse().ok()?,
                mac: f[1].to_owned(),
                addr: f[2].to_owned(),
                hostname: opt(f[3]),
                client_id: f.get(4).and_then(|s| opt(s)),
            })
        })
        .collect()
}

/// Another machine on a [`Lan`]: its own namespace, whose `br0` holds its address and is linked
/// to the LAN's bridge. Dropping it (and what was started in it) removes it from the LAN.
#[derive(Debug)]
pub struct LanHost {
    ns: NetNs,
}

impl LanHost {
    /// The host's namespace, e.g. for [`Avahi::start`] or [`NetNs::spawn_logged`].
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The host's address (without prefix length).
    pub fn addr(&self) -> &str {
        self.ns.host_addr()
    }

    /// Runs `argv` to completion on the host.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        Ok(self.ns.exec(argv)?)
    }
}

/// What an [`Avahi`] daemon publishes: nothing (a browser), or a host name and static services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvahiConfig {
    /// `None`: publishing disabled, the daemon only resolves and browses.
    pub host_name: Option<String>,
    pub services: Vec<StaticService>,
}

impl AvahiConfig {
    /// A daemon that resolves and browses and publishes nothing.
    pub fn browser() -> Self {
        AvahiConfig::default()
    }

    /// A daemon publishing `host_name.local` (IPv4 addresses only).
    pub fn publisher(host_name: &str) -> Self {
        AvahiConfig {
            host_name: Some(host_name.to_owned()),
            services: Vec::new(),
        }
    }

    /// Also publishes `service` (publishers only).
    pub fn service(mut self, service: StaticService) -> Self {
        self.services.push(service);
        self
    }

    /// The `avahi-daemon.conf` for this daemon. Pure.
    pub fn render(&self) -> String {
        let mut s = String::from("[server]\n");
        if let Some(name) = &self.host_name {
            s += &format!("host-name={name}\n");
        }
        s += &format!(
            "use-ipv4=yes\nuse-ipv6=no\nallow-interfaces={BRIDGE}\nenable-dbus=yes\n\n\
             [wide-area]\nenable-wide-area=no\n\n[publish]\n"
        );
        s += if self.host_name.is_some() {
            "publish-hinfo=no\npublish-workstation=no\npublish-aaaa-on-ipv4=no\n"
        } else {
            "disable-publishing=yes\ndisable-user-service-publishing=yes\n"
        };
        s += "\n[reflector]\nenable-reflector=no\n\n[rlimits]\n";
        s
    }
}

/// A service in avahi's static service file format (`/etc/avahi/services/*.service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticService {
    /// The instance name; `%h` stands for the host name.
    pub name: String,
    /// E.g. `_ssh._tcp`.
    pub service_type: String,
    pub port: u16,
    /// E.g. `_resin-device._sub._ssh._tcp`.
    pub subtypes: Vec<String>,
    /// `key=value` TXT records.
    pub txt: Vec<String>,
}

impl StaticService {
    pub fn new(name: &str, service_type: &str, port: u16) -> Self {
        StaticService {
            name: name.to_owned(),
            service_type: service_type.to_owned(),
            port,
            subtypes: Vec::new(),
            txt: Vec::new(),
        }
    }

    pub fn subtype(mut self, subtype: &str) -> Self {
        self.subtypes.push(subtype.to_owned());
        self
    }

    pub fn txt(mut self, record: &str) -> Self {
        self.txt.push(record.to_owned());
        self
    }

    /// The service file's XML. Pure.
    pub fn to_xml(&self) -> String {
        let mut s = format!(
            "<?xml version=\"1.0\" standalone='no'?>\n\
             <!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n\
             <service-group>\n  <name replace-wildcards=\"yes\">{}</name>\n  <service>\n    \
             <type>{}</type>\n",
            xml_escape(&self.name),
            xml_escape(&self.service_type)
        );
        for sub in &self.subtypes {
            s += &format!("    <subtype>{}</subtype>\n", xml_escape(sub));
        }
        s += &format!("    <port>{}</port>\n", self.port);
        for txt in &self.txt {
            s += &format!("    <txt-record>{}</txt-record>\n", xml_escape(txt));
        }
        s += "  </service>\n</service-group>\n";
        s
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The private system bus: the standard socket path (inside the private `/run`), no service
/// activation, no user switch, everything allowed (only root uses it).
const DBUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#;

/// Run by `sh -c` as PID 1 of the supervisor's PID namespace, inside its private mount namespace;
/// `$1` is the instance's directory.
const SUPERVISOR: &str = r#"set -eu
dir=$1
mount -t tmpfs -o mode=0755,size=4m baleen-lan /run
mkdir /run/dbus /run/avahi-daemon
mount --bind "$dir/services" /etc/avahi/services
if [ -e /etc/avahi/hosts ]; then mount --bind "$dir/hosts" /etc/avahi/hosts; fi
dbus-daemon --config-file="$dir/dbus.conf" --nofork --nopidfile &
i=0
while [ ! -S /run/dbus/system_bus_socket ]; do
  i=$((i + 1))
  if [ "$i" -gt 100 ]; then
    echo "baleen-lan: dbus-daemon did not create /run/dbus/system_bus_socket" >&2
    exit 1
  fi
  sleep 0.1
done
exec avahi-daemon -f "$dir/avahi-daemon.conf" --no-drop-root --no-chroot --no-rlimits
"#;

/// An avahi-daemon (with its own system D-Bus) in a namespace, and the clients that use it.
/// Dropping it ends both daemons and removes their files.
#[derive(Debug)]
pub struct Avahi {
    // Fields drop in this order: the daemons end before their directory goes.
    supervisor: NsProcess,
    dir: TempDir,
}

impl Avahi {
    /// Starts dbus-daemon and avahi-daemon in `ns` (see the module docs); returns once avahi is
    /// running and, for a publisher, every static service is established.
    pub fn start(ns: &NetNs, config: &AvahiConfig) -> Result<Avahi> {
        require(&[
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
            ("dbus-daemon", "dbus"),
            ("avahi-daemon", "avahi-daemon"),
            ("avahi-resolve", "avahi-utils"),
            ("avahi-browse", "avahi-utils"),
        ])?;
        let dir = tempfile::Builder::new()
            .prefix("baleen-avahi-")
            .tempdir()
            .map_err(io_err("creating avahi's temporary directory"))?;
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))
        };
        write("dbus.conf", DBUS_CONF)?;
        write("avahi-daemon.conf", &config.render())?;
        write("hosts", "")?;
        let services = dir.path().join("services");
        fs::create_dir(&services).map_err(io_err(format!("creating {}", services.display())))?;
        for (i, service) in config.services.iter().enumerate() {
            write(&format!("services/{i}.service"), &service.to_xml())?;
        }

        let log = dir.path().join("avahi.log");
        let dir_arg = dir.path().display().to_string();
        let mut supervisor = ns.spawn_logged(
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
                "sh",
                "-c",
                SUPERVISOR,
                "baleen-lan-avahi",
                &dir_arg,
            ],
            &log,
        )?;
        let want = if config.host_name.is_some() {
            config.services.len()
        } else {
            0
        };
        wait_for_log(
            "avahi-daemon",
            &log,
            &mut supervisor,
            scaled(STARTUP),
            |text| {
                text.contains("Server startup complete")
                    && text.matches("successfully established").count() >= want
            },
        )?;
        tracing::info!(netns = %ns.name(), pid = supervisor.pid(), "avahi-daemon ready");
        Ok(Avahi { supervisor, dir })
    }

    /// The PID whose mount and network namespaces the daemons use (`unshare`'s).
    pub fn pid(&self) -> u32 {
        self.supervisor.pid()
    }

    /// avahi-daemon's and dbus-daemon's output; removed with the daemon.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("avahi.log")
    }

    /// A command running `program` next to the daemons: `nsenter --target <pid> --mount --net`.
    pub fn command(&self, program: &str) -> Cmd {
        Cmd::new("nsenter")
            .package("util-linux")
            .args([
                "--target",
                &self.pid().to_string(),
                "--mount",
                "--net",
                "--",
            ])
            .arg(program)
    }

    /// Resolves an mDNS host name (`baleen.local`) to an IPv4 address, asking again until
    /// `timeout`; `None` if nothing answered by then.
    pub fn resolve(&self, name: &str, timeout: Duration) -> Result<Option<String>> {
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let run = self
                .command("avahi-resolve")
                .args(["-4", "-n", name])
                .timeout(left.max(MIN_ATTEMPT))
                .run();
            // avahi-resolve exits 0 also when nothing answered: only its output tells.
            match run {
                Ok(out) => {
                    if let Some(addr) = parse_resolved(&out.stdout) {
                        return Ok(Some(addr));
                    }
                }
                Err(subprocess::Error::Timeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if started.elapsed() >= timeout {
                return Ok(None);
            }
            thread::sleep(RETRY);
        }
    }

    /// Browses `service_type` (`_ssh._tcp`, or a subtype such as
    /// `_resin-device._sub._ssh._tcp`) with `avahi-browse -rtpk`, asking again until something
    /// is found or `timeout` passes; returns the resolved services, empty if none.
    pub fn browse(&self, service_type: &str, timeout: Duration) -> Result<Vec<BrowsedService>> {
        self.browse_until(service_type, timeout, |found| !found.is_empty())
    }

    /// [`Avahi::browse`] for `_ssh._tcp`.
    pub fn browse_ssh(&self, timeout: Duration) -> Result<Vec<BrowsedService>> {
        self.browse("_ssh._tcp", timeout)
    }

    /// Browses `service_type` until a service matching `pred` shows up, or `timeout` passes.
    pub fn find_service(
        &self,
        service_type: &str,
        timeout: Duration,
        pred: impl Fn(&BrowsedService) -> bool,
    ) -> Result<Option<BrowsedService>> {
        let found = self.browse_until(service_type, timeout, |f| f.iter().any(&pred))?;
        Ok(found.into_iter().find(|s| pred(s)))
    }

    fn browse_until(
        &self,
        service_type: &str,
        timeout: Duration,
        done: impl Fn(&[BrowsedService]) -> bool,
    ) -> Result<Vec<BrowsedService>> {
        let started = Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let run = self
                .command("avahi-browse")
                .args(["-r", "-t", "-p", "-k", service_type])
                .timeout(left.max(MIN_ATTEMPT))
                .run();
            let found = match run {
                Ok(out) => parse_browse(&out.stdout),
                Err(subprocess::Error::Timeout { .. }) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            if done(&found) || started.elapsed() >= timeout {
                return Ok(found);
            }
            thread::sleep(RETRY);
        }
    }

    /// Ends both daemons and removes their files, reporting what failed.
    pub fn close(self) -> Result<()> {
        let Avahi { supervisor, dir } = self;
        supervisor.kill()?;
        let path = dir.path().to_owned();
        dir.close()
            .map_err(io_err(format!("removing {}", path.display())))
    }
}

/// The address in `avahi-resolve -n` output (`name<TAB>address`). Pure.
fn parse_resolved(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.split_once('\t'))
        .map(|(_, addr)| addr.trim().to_owned())
        .filter(|a| !a.is_empty())
}

/// A resolved service, from one `=` line of `avahi-browse -rp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedService {
    pub interface: String,
    /// `IPv4` or `IPv6`: the protocol it was found over, not the address family.
    pub protocol: String,
    /// The instance name, unescaped.
    pub name: String,
    /// The service type (for a subtype browse, the parent type: `_ssh._tcp`).
    pub service_type: String,
    pub domain: String,
    pub hostname: String,
    pub address: String,
    pub port: u16,
    /// TXT records, unquoted (`key=value`).
    pub txt: Vec<String>,
}

/// The resolved services in `avahi-browse -rp` output; other lines are skipped. Pure.
pub fn parse_browse(stdout: &str) -> Vec<BrowsedService> {
    stdout.lines().filter_map(parse_browse_line).collect()
}

fn parse_browse_line(line: &str) -> Option<BrowsedService> {
    let f: Vec<&str> = line.splitn(10, ';').collect();
    if f.len() < 9 || f[0] != "=" {
        return None;
    }
    Some(BrowsedService {
        interface: f[1].to_owned(),
        protocol: f[2].to_owned(),
        name: unescape_label(f[3]),
        service_type: f[4].to_owned(),
        domain: f[5].to_owned(),
        hostname: f[6].to_owned(),
        address: f[7].to_owned(),
        port: f[8].parse().ok()?,
        txt: f.get(9).map(|t| parse_txt(t)).unwrap_or_default(),
    })
}

/// Undoes avahi's label escaping (`\.`, `\\`, `\DDD` decimal bytes). Pure.
fn unescape_label(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let digits = &b[i + 1..(i + 4).min(b.len())];
            if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                let n = digits
                    .iter()
                    .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(n) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits avahi's TXT rendering (`"a=b" "c=d"`, `\"` and `\\` escaped) into records. Pure.
fn parse_txt(s: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut record = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => record.extend(chars.next()),
                c => record.push(c),
            }
        }
        records.push(record);
    }
    records
}

/// Waits until `ready(log text)`, failing early when `process` exits.
fn wait_for_log(
    what: &str,
    log: &Path,
    process: &mut NsProcess,
    timeout: Duration,
    ready: impl Fn(&str) -> bool,
) -> Result<()> {
    crate::logwait::wait_for_log(log, process, timeout, ready).map_err(|failed| match failed {
        Failed::Exited(log_tail) => Error::Exited {
            what: what.to_owned(),
            log_tail,
        },
        Failed::TimedOut(log_tail) => Error::Timeout {
            what: format!("{what} to start"),
            waited: timeout,
            log_tail,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_serves_one_address_and_answers_every_name_nxdomain() {
        let argv = dnsmasq_argv(Path::new("/tmp/lan"), "10.0.2.2");
        assert_eq!(
            argv.join(" "),
            "dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
             --address=/#/ --interface=br0 \
             --bind-interfaces --dhcp-range=10.0.2.15,10.0.2.15,255.255.255.0,1h \
             --dhcp-option=option:router,10.0.2.2 --dhcp-option=option:ntp-server,10.0.2.2 \
             --dhcp-authoritative --dhcp-ignore-clid \
             --no-ping --dhcp-leasefile=/tmp/lan/dnsmasq.leases --pid-file=/tmp/lan/dnsmasq.pid \
             --log-facility=- --log-dhcp"
        );
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let e =
            require(&[("sh", "dash"), ("baleen-no-such-daemon", "baleen-daemons")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "baleen-no-such-daemon not found on PATH: install the Debian package baleen-daemons \
             (scripts/install-deps.sh)"
        );
    }

    #[test]
    fn leases_are_parsed() {
        let text = "1795539534 de:00:b0:66:ae:0b 10.0.2.15 vm *\n\
                    1795539600 52:54:00:12:34:56 10.0.2.15 * 01:52:54:00:12:34:56\n\
                    duid 00:01:00:01\n\
                    garbage\n";
        assert_eq!(
            parse_leases(text),
            [
                Lease {
                    expiry: 1795539534,
                    mac: "de:00:b0:66:ae:0b".into(),
                    addr: "10.0.2.15".into(),
                    hostname: Some("vm".into()),
                    client_id: None,
                },
                Lease {
                    expiry: 1795539600,
                    mac: "52:54:00:12:34:56".into(),
                    addr: "10.0.2.15".into(),
                    hostname: None,
                    client_id: Some("01:52:54:00:12:34:56".into()),
                },
            ]
        );
    }

    #[test]
    fn browser_config_disables_publishing() {
        assert_eq!(
            AvahiConfig::browser().render(),
            "[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=br0\nenable-dbus=yes\n\n\
             [wide-area]\nenable-wide-area=no\n\n\
             [publish]\ndisable-publishing=yes\ndisable-user-service-publishing=yes\n\n\
             [reflector]\nenable-reflector=no\n\n[rlimits]\n"
        );
    }

    #[test]
    fn publisher_config_names_the_host() {
        assert_eq!(
            AvahiConfig::publisher("baleentest").render(),
            "[server]\nhost-name=baleentest\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=br0\n\
             enable-dbus=yes\n\n[wide-area]\nenable-wide-area=no\n\n\
             [publish]\npublish-hinfo=no\npublish-workstation=no\npublish-aaaa-on-ipv4=no\n\n\
             [reflector]\nenable-reflector=no\n\n[rlimits]\n"
        );
    }

    #[test]
    fn service_file_has_subtypes_and_txt() {
        let s = StaticService::new("%h", "_ssh._tcp", 22222)
            .subtype("_resin-device._sub._ssh._tcp")
            .txt("board=a&b");
        assert_eq!(
            s.to_xml(),
            "<?xml version=\"1.0\" standalone='no'?>\n\
             <!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n\
             <service-group>\n  <name replace-wildcards=\"yes\">%h</name>\n  <service>\n    \
             <type>_ssh._tcp</type>\n    \
             <subtype>_resin-device._sub._ssh._tcp</subtype>\n    \
             <port>22222</port>\n    \
             <txt-record>board=a&amp;b</txt-record>\n  \
             </service>\n</service-group>\n"
        );
    }

    #[test]
    fn resolved_address_is_parsed() {
        assert_eq!(
            parse_resolved("baleentest.local\t10.0.2.3\n"),
            Some("10.0.2.3".into())
        );
        assert_eq!(parse_resolved(""), None);
    }

    #[test]
    fn browse_output_is_parsed() {
        // Captured from avahi-browse -rtpk _ssh._tcp (avahi 0.8, Debian 12).
        let out = "+;br0;IPv4;baleentest;_ssh._tcp;local\n\
                   =;br0;IPv4;baleentest;_ssh._tcp;local;baleentest.local;10.0.2.3;22222;\
                   \"board=qemux86-64\" \"semi=a;b\"\n\
                   =;br0;IPv4;my\\032dev\\.1;_ssh._tcp;local;dev.local;10.0.2.15;22;\n";
        assert_eq!(
            parse_browse(out),
            [
                BrowsedService {
                    interface: "br0".into(),
                    protocol: "IPv4".into(),
                    name: "baleentest".into(),
                    service_type: "_ssh._tcp".into(),
                    domain: "local".into(),
                    hostname: "baleentest.local".into(),
                    address: "10.0.2.3".into(),
                    port: 22222,
                    txt: vec!["board=qemux86-64".into(), "semi=a;b".into()],
                },
                BrowsedService {
                    interface: "br0".into(),
                    protocol: "IPv4".into(),
                    name: "my dev.1".into(),
                    service_type: "_ssh._tcp".into(),
                    domain: "local".into(),
                    hostname: "dev.local".into(),
                    address: "10.0.2.15".into(),
                    port: 22,
                    txt: vec![],
                },
            ]
        );
    }

    #[test]
    fn labels_and_txt_are_unescaped() {
        assert_eq!(unescape_label(r"a\\b\.c\228\189\160"), "a\\b.c\u{4f60}");
        assert_eq!(parse_txt(r#""q=\"x\"" "b=\\""#), ["q=\"x\"", "b=\\"]);
    }

    fn is_root() -> bool {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
            })
            .unwrap_or(false)
    }

    /// Skips (loudly, past the test harness's output capture) unless running as root.
    fn skip_unless_root(test: &str) -> bool {
        if is_root() {
            return false;
        }
        use std::io::Write;
        let _ = writeln!(
            io::stderr(),
            "SKIPPED {test}: needs root (network namespaces, mounts); run \
             `cargo test -p systests --lib` as root"
        );
        true
    }

    /// What the host's own D-Bus and avahi see in `/run` (must not change).
    fn host_run_state() -> (bool, bool, bool) {
        (
            Path::new("/run/dbus/system_bus_socket").exists(),
            Path::new("/run/avahi-daemon").exists(),
            Path::new("/run/avahi-daemon/pid").exists(),
        )
    }

    /// The PIDs of the children of `pid` (the supervisor's PID-namespace init).
    fn children(pid: u32) -> Vec<u32> {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Gone, or a zombie waiting for init to reap it.
    fn wait_gone(pid: u32) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            match fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) => thread::sleep(POLL),
            }
        }
        false
    }

    /// The whole LAN without a VM: a "device" host on the bridge gets the guest address from
    /// dnsmasq (ISC dhclient) and publishes `baleentest.local` with an SSH service on 22222 and
    /// balena's subtype; the LAN's browser resolves the name and finds the service both ways.
    #[test]
    fn lan_serves_dhcp_and_mdns_without_a_vm() {
        if skip_unless_root("lan_serves_dhcp_and_mdns_without_a_vm") {
            return;
        }
        let t0 = Instant::now();
        let lan = Lan::new("lan-selftest").unwrap();
        let ns_path = Path::new("/run/netns").join(lan.ns().name());
        let lan_dir = lan.dir.path().to_owned();
        let device = lan.add_host("lan-selftest-dev", "10.0.2.3/24").unwrap();
        assert_eq!(device.addr(), "10.0.2.3");

        // DHCP: dhclient on the device's bridge (configuring nothing: -sf /bin/true).
        assert!(
            subprocess::on_path("dhclient"),
            "dhclient not found: install isc-dhcp-client (scripts/install-deps.sh)"
        );
        let work = tempfile::tempdir().unwrap();
        let leases = work.path().join("dhclient.leases");
        let dhclient_log = work.path().join("dhclient.log");
        let dhclient = device
            .ns()
            .spawn_logged(
                &[
                    "dhclient",
                    "-d",
                    "-1",
                    "-4",
                    "-v",
                    "-sf",
                    "/bin/true",
                    "-lf",
                    &leases.display().to_string(),
                    "-pf",
                    &work.path().join("dhclient.pid").display().to_string(),
                    BRIDGE,
                ],
                &dhclient_log,
            )
            .unwrap();
        let lease = lan
            .wait_for_lease(Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!("{e}\ndhclient: {}", log_tail(&dhclient_log));
            });
        let mac = device.exec(&["cat", "/sys/class/net/br0/address"]).unwrap();
        assert_eq!(lease.mac, mac.stdout.trim());
        let started = Instant::now();
        let client_view = loop {
            let text = fs::read_to_string(&leases).unwrap_or_default();
            if text.contains("fixed-address") || started.elapsed() > Duration::from_secs(30) {
                break text;
            }
            thread::sleep(POLL);
        };
        assert!(
            client_view.contains("fixed-address 10.0.2.15;"),
            "{client_view}"
        );
        assert!(
            client_view.contains("option routers 10.0.2.2;"),
            "{client_view}"
        );
        assert!(
            client_view.contains("option domain-name-servers 10.0.2.2;"),
            "{client_view}"
        );
        dhclient.kill().unwrap();
        let t_dhcp = t0.elapsed();

        // mDNS: a publisher on the device, a browser on the LAN side.
        let host_run_before = host_run_state();
        let publisher = Avahi::start(
            device.ns(),
            &AvahiConfig::publisher("baleentest").service(
                StaticService::new("%h", "_ssh._tcp", 22222)
                    .subtype("_resin-device._sub._ssh._tcp")
                    .txt("board=qemux86-64"),
            ),
        )
        .unwrap();
        let browser = lan.avahi().unwrap();
        assert_eq!(
            host_run_state(),
            host_run_before,
            "the host's /run/dbus and /run/avahi-daemon are untouched"
        );
        let wait = Duration::from_secs(30);
        let show_logs = || {
            format!(
                "--- publisher\n{}\n--- browser\n{}",
                log_tail(&publisher.log()),
                log_tail(&browser.log())
            )
        };
        assert_eq!(
            browser
                .resolve("baleentest.local", wait)
                .unwrap()
                .as_deref(),
            Some("10.0.2.3"),
            "{}",
            show_logs()
        );
        let ssh = browser.browse_ssh(wait).unwrap();
        let found = ssh
            .iter()
            .find(|s| s.port == 22222)
            .unwrap_or_else(|| panic!("no _ssh._tcp on 22222 in {ssh:?}\n{}", show_logs()));
        assert_eq!(found.name, "baleentest");
        assert_eq!(found.service_type, "_ssh._tcp");
        assert_eq!(found.hostname, "baleentest.local");
        assert_eq!(found.address, "10.0.2.3");
        assert_eq!(found.interface, "br0");
        assert_eq!(found.txt, ["board=qemux86-64"]);
        let sub = browser
            .find_service("_resin-device._sub._ssh._tcp", wait, |s| s.port == 22222)
            .unwrap();
        assert!(
            sub.is_some(),
            "subtype browse found nothing\n{}",
            show_logs()
        );
        assert!(
            browser
                .browse("_nothing-here._tcp", Duration::from_secs(2))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            browser
                .resolve("nothere.local", Duration::from_secs(2))
                .unwrap(),
            None
        );
        let t_mdns = t0.elapsed() - t_dhcp;

        // Cleanup: the daemons (PID-namespace inits and their children) end with their owners.
        let mut daemons = Vec::new();
        for avahi in [&publisher, &browser] {
            let inits = children(avahi.pid());
            assert_eq!(inits.len(), 1, "one PID-namespace init under unshare");
            daemons.extend(children(inits[0]));
            daemons.extend(inits);
        }
        assert_eq!(
            daemons.len(),
            4,
            "avahi-daemon and dbus-daemon, twice: {daemons:?}"
        );
        let dirs = [
            publisher.dir.path().to_owned(),
            browser.dir.path().to_owned(),
        ];
        publisher.close().unwrap();
        browser.close().unwrap();
        for pid in daemons {
            assert!(wait_gone(pid), "daemon {pid} still running after close");
        }
        assert!(dirs.iter().all(|d| !d.exists()));
        drop(device);
        lan.close().unwrap();
        assert!(!lan_dir.exists());
        assert!(!ns_path.exists(), "{} still exists", ns_path.display());
        use std::io::Write;
        let _ = writeln!(
            io::stderr(),
            "lan self-test: DHCP {}, mDNS {}, total {}",
            fmt_duration(t_dhcp),
            fmt_duration(t_mdns),
            fmt_duration(t0.elapsed())
        );
    }
}
