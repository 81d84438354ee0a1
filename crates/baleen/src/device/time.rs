//! The time chain on the device (balenaOS §5, problems of §8.33 fixed):
//!
//! 1. `time-early` (early boot): never earlier than the build
//!    (`/etc/timestamp`), then the clock saved on the state partition, then
//!    the RTC when it is ahead — the RTC never moves the clock back.
//! 2. `time-save` (hourly and at shutdown): the clock to the state
//!    partition, never below the build time.
//! 3. `time-https` (after the network): the `Date` of the connectivity
//!    check's HTTP 204 answer steps the clock when it is more than 2 s off,
//!    with the certificate checked against its own validity window rather
//!    than the untrusted clock, and two answers that must agree (see the
//!    `timekeeping::https` docs). chronyd waits for it, nothing else does.
//! 4. `ntp-health` (timer): chronyd must have a selected source it heard
//!    from recently; if not, after a burst, it is restarted.
//!
//! Each step records what it did in `/run/baleen/time.json` for
//! `baleen status`.

use anyhow::{Context, Result};
use deviceconfig::model;
use deviceconfig::render;
use deviceconfig::store::Store;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subprocess::Cmd;
use timekeeping::chain::{self, HttpsDecision};

/// The clock saved on the state partition (fake-hwclock's format).
pub const SAVED_CLOCK: &str = "mnt/state/baleen/clock";
/// The build time (`YYYYMMDDhhmmss`, UTC).
pub const BUILD_TIMESTAMP: &str = "etc/timestamp";
/// What each step of the chain did, for `baleen status`.
pub const STATUS: &str = "run/baleen/time.json";
/// The RTC's time in seconds since the epoch (the RTC keeps UTC).
const RTC_SINCE_EPOCH: &str = "sys/class/rtc/rtc0/since_epoch";
/// The system trust store (the config agent adds `balenaRootCA` to it).
const TRUST_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// How long chronyd is held back while no trusted HTTPS answer comes.
const HOLD_NTP: Duration = Duration::from_secs(120);

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

fn build_floor(root: &Path) -> Result<SystemTime> {
    let text =
        read(root, BUILD_TIMESTAMP).with_context(|| format!("reading /{BUILD_TIMESTAMP}"))?;
    timekeeping::formats::parse_build_timestamp(text.trim())
        .with_context(|| format!("/{BUILD_TIMESTAMP}"))
}

fn saved_clock(root: &Path) -> Option<SystemTime> {
    let text = read(root, SAVED_CLOCK)?;
    match timekeeping::formats::parse_saved_clock(text.trim()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("/{SAVED_CLOCK}: {e}; ignored");
            None
        }
    }
}

fn rtc_time(root: &Path) -> Option<SystemTime> {
    let secs: u64 = read(root, RTC_SINCE_EPOCH)?.trim().parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn rtc_present(root: &Path) -> bool {
    root.join("dev/rtc0").exists() || root.join("dev/rtc").exists()
}

/// Sets the system clock.
fn set_clock(to: SystemTime) -> Result<()> {
    let since = to
        .duration_since(UNIX_EPOCH)
        .context("a time before 1970")?;
    rustix::time::clock_settime(
        rustix::time::ClockId::Realtime,
        rustix::time::Timespec {
            tv_sec: since.as_secs() as i64,
            tv_nsec: i64::from(since.subsec_nanos()),
        },
    )
    .context("setting the clock")
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Signed seconds from `from` to `to`.
fn offset_secs(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Adds one step's record to the status file (`step` replaces an older
/// record of the same step).
fn record(root: &Path, step: &str, entry: Value) {
    let path = root.join(STATUS);
    let mut all: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"apiVersion": 1, "steps": {}}));
    let mut entry = entry;
    entry["at"] = json!(rfc3339(SystemTime::now()));
    all["steps"][step] = entry;
    let text = serde_json::to_string_pretty(&all).unwrap_or_default() + "\n";
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        tracing::warn!("cannot write {}", path.display());
    }
}

/// `baleen device time-early`.
pub fn early(root: &Path) -> Result<()> {
    let now = SystemTime::now();
    let floor = build_floor(root)?;
    let plan = chain::early(now, floor, saved_clock(root), rtc_time(root));
    for note in plan.notes.iter().chain(&plan.warnings) {
        tracing::warn!("{note}");
    }
    if let Some(to) = plan.set_to {
        set_clock(to)?;
        tracing::info!(
            source = ?plan.source,
            "clock set to {} ({:+.0} s)",
            rfc3339(to),
            offset_secs(now, to)
        );
    }
    record(
        root,
        "early",
        json!({
            "source": format!("{:?}", plan.source),
            "changed": plan.set_to.is_some(),
            "offsetSeconds": plan.set_to.map(|to| offset_secs(now, to)).unwrap_or(0.0),
            "clock": rfc3339(SystemTime::now()),
            "warnings": plan.notes.iter().chain(&plan.warnings).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// `baleen device time-save`: atomically, never below the build time.
pub fn save(root: &Path) -> Result<()> {
    let floor = build_floor(root)?;
    let Some(t) = chain::save(SystemTime::now(), floor) else {
        tracing::warn!("the clock is earlier than the build time: not saved");
        return Ok(());
    };
    let path = root.join(SAVED_CLOCK);
    let dir = path.parent().context("saved clock path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = timekeeping::formats::format_saved_clock(t)?;
    let tmp = path.with_extension("new");
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    tracing::debug!("clock saved: {}", text.trim());
    Ok(())
}

/// The connectivity URI from config.json, as NetworkManager uses it.
fn connectivity_uri(root: &Path) -> Option<String> {
    let store = Store::on_device(root);
    let bytes = store.read().ok()?;
    let raw = model::Raw::parse("config.json", &bytes).ok()?;
    let config = model::validate(&raw).config;
    render::connectivity_uri(
        config.connectivity.uri.as_deref(),
        config.api_endpoint.as_deref(),
    )
}

/// Whether the kernel has an IPv4 default route (the network is up).
fn has_default_route(root: &Path) -> bool {
    read(root, "proc/net/route").is_some_and(|t| {
        t.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
    })
}

/// Whether chronyd reports the clock synchronized.
fn ntp_synchronized() -> bool {
    Cmd::new("chronyc")
        .args(["-n", "tracking"])
        .timeout(Duration::from_secs(10))
        .run()
        .is_ok_and(|out| {
            out.stdout
                .lines()
                .any(|l| l.starts_with("Leap status") && l.ends_with("Normal"))
        })
}

fn notify_ready(ready: &mut bool, why: &str) {
    if !*ready {
        tracing::info!("{why}: chronyd may start");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        *ready = true;
    }
}

/// `baleen device time-https`.
pub fn https(root: &Path) -> Result<()> {
    let mut ready = false;
    let Some(uri) = connectivity_uri(root) else {
        record(
            root,
            "https",
            json!({"result": "skipped", "why": "no connectivity URI (os.network.connectivity.uri \"null\" or no apiEndpoint)"}),
        );
        notify_ready(&mut ready, "HTTPS time step disabled");
        return Ok(());
    };
    let floor = build_floor(root)?;
    let bundle = root.join(TRUST_BUNDLE);
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut last_problem = String::new();
    loop {
        if !ready && started.elapsed() >= HOLD_NTP {
            notify_ready(
                &mut ready,
                &format!("no trusted HTTPS time after {} s", HOLD_NTP.as_secs()),
            );
        }
        if ready && ntp_synchronized() {
            record(
                root,
                "https",
                json!({"result": "not needed", "why": "NTP synchronized first", "uri": uri}),
            );
            return Ok(());
        }
        if !has_default_route(root) {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        let mut answers = Vec::new();
        let mut problem = None;
        for _ in 0..2 {
            match timekeeping::https::probe(&uri, &bundle, Duration::from_secs(10)) {
                Ok(answer) => {
                    tracing::info!(
                        "{uri}: answered {} with Date {}",
                        answer.status,
                        answer.date.map_or_else(|| "(none)".to_owned(), rfc3339)
                    );
                    answers.push(answer);
                }
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
            }
        }
        let now = SystemTime::now();
        let decision = match problem {
            Some(p) => HttpsDecision::Untrusted(p),
            None => chain::https_decision(now, timekeeping::monotonic_now(), floor, &answers),
        };
        match decision {
            HttpsDecision::Step { to, offset_secs } => {
                set_clock(to)?;
                tracing::warn!(
                    "clock stepped by {offset_secs:+.1} s to {} from the Date of {uri}",
                    rfc3339(to)
                );
                if rtc_present(root) {
                    if let Err(e) = Cmd::new("hwclock")
                        .args(["--systohc", "--utc", "--noadjfile"])
                        .timeout(Duration::from_secs(30))
                        .run()
                    {
                        tracing::warn!("writing the RTC: {e}");
                    }
                }
                record(
                    root,
                    "https",
                    json!({
                        "result": "stepped",
                        "uri": uri,
                        "offsetSeconds": offset_secs,
                        "clock": rfc3339(to),
                        "clockBefore": rfc3339(now),
                        "dates": answers.iter().filter_map(|a| a.date).map(rfc3339).collect::<Vec<_>>(),
                        "attempts": attempt + 1
                    }),
                );
                notify_ready(&mut ready, "clock set from HTTPS");
                return Ok(());
            }
            HttpsDecision::InSync { offset_secs } => {
                record(
                    root,
                    "https",
                    json!({"result": "in sync", "uri": uri, "offsetSeconds": offset_secs}),
                );
                notify_ready(&mut ready, "clock agrees with HTTPS");
                return Ok(());
            }
            HttpsDecision::NoDate(why) => {
                tracing::warn!("{uri}: {why}; no HTTPS time step");
                record(
                    root,
                    "https",
                    json!({"result": "no date", "uri": uri, "why": why}),
                );
                notify_ready(&mut ready, "no HTTPS time");
                return Ok(());
            }
            HttpsDecision::Retry(why) => {
                // Two answers that did not agree: ask again soon.
                tracing::info!("{uri}: {why}; asking again");
                std::thread::sleep(chain::backoff(0));
            }
            HttpsDecision::Untrusted(why) => {
                if why != last_problem {
                    tracing::warn!("{uri}: {why}; retrying");
                    last_problem = why.clone();
                }
                record(
                    root,
                    "https",
                    json!({"result": "retrying", "uri": uri, "why": why, "attempts": attempt + 1}),
                );
                std::thread::sleep(chain::backoff(attempt));
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// One line of `chronyc -n -c sources`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub state: char,
    pub name: String,
    /// Seconds since the last sample, `None` when never.
    pub last_rx: Option<u64>,
}

/// Parses `chronyc -n -c sources` (CSV: mode, state, name, stratum, poll,
/// reach, last rx, …).
pub fn parse_sources_csv(text: &str) -> Vec<Source> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (f.len() >= 7).then(|| Source {
                state: f[1].chars().next().unwrap_or('?'),
                name: f[2].to_string(),
                last_rx: f[6].parse().ok().filter(|&s: &u64| s < 4_000_000_000),
            })
        })
        .collect()
}

/// Healthy: a selected source (`*`) heard from within `fresh` seconds.
pub fn healthy(sources: &[Source], fresh: u64) -> bool {
    sources
        .iter()
        .any(|s| s.state == '*' && s.last_rx.is_some_and(|rx| rx <= fresh))
}

fn chronyc(args: &[&str]) -> Option<String> {
    Cmd::new("chronyc")
        .args(args)
        .timeout(Duration::from_secs(20))
        .run()
        .ok()
        .map(|o| o.stdout)
}

/// `baleen device ntp-health`: asks chronyd for fresh samples; without a
/// selected source heard from in the last minute, restarts it.
pub fn ntp_health(root: &Path) -> Result<()> {
    let active = Cmd::new("systemctl")
        .args(["-q", "is-active", "chrony.service"])
        .run()
        .is_ok();
    if !active {
        tracing::info!("chronyd is not running: nothing to check");
        return Ok(());
    }
    let _ = chronyc(&["-n", "burst", "4/4"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sources = Vec::new();
    while Instant::now() < deadline {
        sources = parse_sources_csv(&chronyc(&["-n", "-c", "sources"]).unwrap_or_default());
        if healthy(&sources, 60) {
            record(
                root,
                "ntp",
                json!({"result": "synchronized", "sources": sources.iter().map(|s| format!("{}{}", s.state, s.name)).collect::<Vec<_>>()}),
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = chronyc(&["-n", "makestep"]);
    tracing::error!("NTP time lost synchronization - restarting chronyd");
    record(
        root,
        "ntp",
        json!({"result": "lost synchronization: chronyd restarted", "sources": sources.iter().map(|s| format!("{}{}", s.state, s.name)).collect::<Vec<_>>()}),
    );
    Cmd::new("systemctl")
        .args(["restart", "chrony.service"])
        .timeout(Duration::from_secs(60))
        .run()?;
    Ok(())
}

/// `baleen device ntp-dispatch IFACE ACTION` (NetworkManager dispatcher):
/// NTP servers from DHCP per interface, and chronyd online/offline.
pub fn ntp_dispatch(root: &Path, interface: &str, action: &str) -> Result<()> {
    let Some(name) = render::dhcp_ntp_file_name(interface) else {
        return Ok(());
    };
    let path = root.join(render::CHRONY_SOURCE_DIR).join(name);
    let want = match action {
        "up" | "dhcp4-change" => {
            let servers: Vec<String> = std::env::var("DHCP4_NTP_SERVERS")
                .unwrap_or_default()
                .split_whitespace()
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
                .map(String::from)
                .collect();
            render::dhcp_ntp_sources(&servers)
        }
        "down" => None,
        _ => {
            if action == "connectivity-change" {
                let _ = chronyc(&["-n", "onoffline"]);
            }
            return Ok(());
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let have = std::fs::read_to_string(&path).ok();
    if have != want {
        match &want {
            Some(text) => std::fs::write(&path, text)
                .with_context(|| format!("writing {}", path.display()))?,
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let _ = chronyc(&["-n", "reload", "sources"]);
    }
    let _ = chronyc(&["-n", "onoffline"]);
    Ok(())
}

/// The time section of `baleen status`.
pub fn status(root: &Path) -> Value {
    let mut value: Value = read(root, STATUS)
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({"apiVersion": 1, "steps": {}}));
    let tracking = chronyc(&["-n", "tracking"]).unwrap_or_default();
    let field = |name: &str| {
        tracking
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    value["ntp"] = json!({
        "synchronized": field("Leap status").is_some_and(|v| v == "Normal"),
        "reference": field("Reference ID"),
        "systemTime": field("System time"),
        "lastOffset": field("Last offset"),
    });
    value["clock"] = json!(rfc3339(SystemTime::now()));
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_csv_and_health() {
        let text = "^,*,10.0.2.2,3,6,377,12,-0.000001,-0.000001,0.000100\n\
                    ^,?,192.0.2.1,0,6,0,-,+0.0,+0.0,0.0\n";
        let sources = parse_sources_csv(text);
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].state, '*');
        assert_eq!(sources[0].last_rx, Some(12));
        assert_eq!(sources[1].last_rx, None);
        assert!(healthy(&sources, 60));
        assert!(!healthy(&sources, 10));
        assert!(!healthy(&sources[1..], 60));
    }

    #[test]
    fn default_route_is_read_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
        let head = "Iface\tDestination\tGateway\tFlags\n";
        std::fs::write(dir.path().join("proc/net/route"), head).unwrap();
        assert!(!has_default_route(dir.path()));
        std::fs::write(
            dir.path().join("proc/net/route"),
            format!("{head}eth0\t00000000\t0202000A\t0003\n"),
        )
        .unwrap();
        assert!(has_default_route(dir.path()));
    }
}
