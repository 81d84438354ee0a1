//! The configuration of the daemons `config.json` drives, as shipped in the
//! image: chrony, dnsmasq, NetworkManager and the system resolver. The
//! parts that depend on `config.json` are rendered into `/run` at run time
//! by the config agent (`baleen device config-agent`); what is here is the
//! fixed frame they plug into (see `deviceconfig::render` for the text).

use deviceconfig::render;

/// dnsmasq-base ships no unit: this is the host's DNS forwarder on
/// 127.0.0.2, as balenaOS runs it. It starts after the config agent's first
/// pass wrote `/run/dnsmasq.servers`; `systemctl reload` re-reads that file.
fn dnsmasq_service() -> String {
    format!(
        "\
[Unit]
Description=DNS forwarder for the host on {listen} (baleen)
Wants=nss-lookup.target
Before=nss-lookup.target network.target
After=network-pre.target baleen-config.service

[Service]
ExecStart={argv}
ExecReload=/bin/kill -HUP $MAINPID
OOMScoreAdjust=-1000
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
",
        listen = render::DNS_LISTEN_ADDRESS,
        argv = render::dnsmasq_argv(false).join(" "),
    )
}

/// Where the config agent and the DHCP dispatcher put chronyd's sources
/// (see `render::chrony_conf` for why not `/run/chrony`).
pub const TMPFILES: &str = "\
# baleen: run-time directories of the daemons config.json drives.
d /run/baleen/chrony 0755 root root -
";

/// Names the device resolves without any DNS server: Debian's installer
/// writes this file, mmdebstrap does not. Without it `localhost` went to
/// dnsmasq and, on a LAN without DNS, hung for a minute.
pub const HOSTS: &str = "\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// The name service switch: Debian's, with the hosts line of an image that
/// has avahi. `myhostname` (libnss-myhostname) answers the device's own
/// hostname, which `/etc/hosts` on the read-only root cannot name;
/// `mdns4_minimal` (libnss-mdns) answers `*.local` by mDNS and keeps those
/// names from unicast DNS. balenaOS has `files myhostname dns mdns4 mdns`.
pub const NSSWITCH: &str = "\
passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files myhostname mdns4_minimal [NOTFOUND=return] dns
networks:       files

protocols:      db files
services:       db files
ethers:         db files
rpc:            db files

netgroup:       nis
";

/// (path relative to the root, content) of every file this module ships.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        (render::CHRONY_CONF, render::chrony_conf()),
        (render::RESOLV_CONF, render::resolv_conf()),
        ("etc/hosts", HOSTS.to_string()),
        ("etc/nsswitch.conf", NSSWITCH.to_string()),
        (render::NM_CONF, render::networkmanager_conf()),
        ("etc/systemd/system/dnsmasq.service", dnsmasq_service()),
        ("usr/lib/tmpfiles.d/baleen.conf", TMPFILES.to_string()),
        // dnsmasq refuses to start without its --conf-dir (dnsmasq-base has none).
        (
            "etc/dnsmasq.d/README",
            "Extra configuration for the host's dnsmasq: *.conf files here are read.\n".to_string(),
        ),
    ]
}

/// Units of this module enabled in every image.
pub const ENABLED_UNITS: [&str; 1] = ["dnsmasq.service"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_unit_runs_the_rendered_command_line() {
        let unit = dnsmasq_service();
        assert!(unit.contains(
            "ExecStart=/usr/sbin/dnsmasq --keep-in-foreground --log-facility=- \
             --pid-file=/run/dnsmasq.pid --listen-address=127.0.0.2 --bind-interfaces \
             --conf-dir=/etc/dnsmasq.d,*.conf --resolv-file=/run/NetworkManager/resolv.conf \
             --servers-file=/run/dnsmasq.servers\n"
        ));
        assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID\n"));
    }

    #[test]
    fn resolver_is_a_plain_file_naming_dnsmasq() {
        let files = files();
        let resolv = files.iter().find(|(p, _)| *p == "etc/resolv.conf").unwrap();
        assert!(resolv.1.contains("nameserver 127.0.0.2\n"));
    }

    #[test]
    fn localhost_and_the_own_hostname_resolve_without_dns() {
        let files = files();
        let file = |name: &str| &files.iter().find(|(p, _)| *p == name).unwrap().1;
        assert!(
            file("etc/hosts")
                .lines()
                .any(|l| l == "127.0.0.1\tlocalhost")
        );
        let hosts = file("etc/nsswitch.conf")
            .lines()
            .find_map(|l| l.strip_prefix("hosts:"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>();
        // Local answers (files, own hostname, mDNS) before any DNS server is asked.
        assert_eq!(
            hosts,
            [
                "files",
                "myhostname",
                "mdns4_minimal",
                "[NOTFOUND=return]",
                "dns"
            ]
        );
    }
}
