//! The network-facing keys: `dnsServers` (dnsmasq's upstreams), `ntpServers`
//! (chrony's sources) and `country` (the Wi-Fi regulatory domain).

use super::{FileOp, Plan, Step, read_opt};
use deviceconfig::model::{Config, DnsServers};
use deviceconfig::render;
use std::path::Path;

/// What the agent last applied of keys whose effect cannot be read back from
/// a file (the regulatory domain lives in the kernel).
pub const APPLIED_DIR: &str = "run/baleen/applied";

/// `dnsServers` → `/run/dnsmasq.servers`; a running dnsmasq re-reads it on
/// `systemctl reload` (SIGHUP). Before dnsmasq starts, the file is simply
/// there for it (its unit is ordered after the agent's first pass).
pub fn plan_dns(root: &Path, config: &Config) -> Plan {
    let list: Vec<String>;
    let servers = match &config.dns_servers {
        DnsServers::Default => None,
        DnsServers::None => Some(&[][..]),
        DnsServers::List(addresses) => {
            list = addresses.iter().map(ToString::to_string).collect();
            Some(&list[..])
        }
    };
    let want = render::dnsmasq_servers(servers);
    let path = root.join(render::DNSMASQ_SERVERS);
    let mut plan = Plan::default();
    if read_opt(&path).as_deref() != Some(want.as_str()) {
        plan.files.push(FileOp::Write {
            path,
            content: want,
            mode: 0o644,
        });
        // --no-block: at boot, dnsmasq's start waits for this very pass.
        plan.steps.push(Step::reload(
            "dnsmasq",
            &[
                "systemctl",
                "--no-block",
                "try-reload-or-restart",
                render::DNSMASQ_UNIT,
            ],
        ));
    }
    plan
}

/// `ntpServers` → `/run/baleen/chrony/default.sources` (the resinio pools, always)
/// and `/run/baleen/chrony/added_config.sources` (the configured servers, added to
/// the pools as in balenaOS); a running chronyd re-reads them on
/// `chronyc reload sources`.
pub fn plan_ntp(root: &Path, config: &Config) -> Plan {
    let servers = (!config.ntp_servers.is_empty()).then_some(&config.ntp_servers[..]);
    let sources = render::chrony_sources(servers);
    let mut plan = Plan::default();
    for (rel, want) in [
        (render::CHRONY_DEFAULT_SOURCES, sources.default_sources),
        (render::CHRONY_CONFIG_SOURCES, sources.added_config),
    ] {
        let path = root.join(rel);
        match (want, read_opt(&path)) {
            (Some(want), have) if have.as_deref() != Some(want.as_str()) => {
                plan.files.push(FileOp::Write {
                    path,
                    content: want,
                    mode: 0o644,
                })
            }
            (None, Some(_)) => plan.files.push(FileOp::Remove { path }),
            _ => {}
        }
    }
    if !plan.files.is_empty() {
        // Skipped while chronyd is not running: it reads the files at start.
        for argv in render::Action::ChronyReloadSources.commands() {
            plan.steps.push(Step::reload("chronyd", &argv));
        }
    }
    plan
}

/// Whether the kernel has the Wi-Fi configuration layer (cfg80211), without
/// which there is no regulatory domain to set.
fn has_wifi_stack(root: &Path) -> bool {
    root.join("sys/module/cfg80211").exists()
}

/// `country` → `iw reg set <code>`. balenaOS keeps a domain once set when
/// the key is removed; baleen goes back to the world domain (`00`), so that
/// removing the key undoes it. Without Wi-Fi support loaded there is nothing
/// to set: a note, not an error, and the next change (or restart of the
/// agent) applies it.
pub fn plan_country(root: &Path, config: &Config) -> Plan {
    let mut plan = Plan::default();
    let applied_path = root.join(APPLIED_DIR).join("country");
    let applied = read_opt(&applied_path);
    let want = match (config.country.as_deref(), applied.as_deref()) {
        (Some(code), _) => code.to_ascii_uppercase(),
        (None, Some(_)) => "00".to_string(),
        (None, None) => return plan,
    };
    if applied.as_deref() == Some(want.as_str()) {
        return plan;
    }
    if !has_wifi_stack(root) {
        plan.notes.push(format!(
            "country {want}: no Wi-Fi support (cfg80211) loaded, nothing to set yet"
        ));
        return plan;
    }
    let Some(argv) = render::regulatory_domain_argv(Some(&want)) else {
        return plan;
    };
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    plan.steps.push(Step::new(&argv));
    plan.records.push(FileOp::Write {
        path: applied_path,
        content: want,
        mode: 0o644,
    });
    plan
}
