//! VM tests of the config agent: config.json edited on a running device
//! (`jq … > tmp && mv tmp /mnt/boot/config.json`) takes effect without a
//! reboot, removal reverts, one bad key leaves the others applied, invalid
//! JSON changes nothing. Each change's latency (file change → effect seen) is
//! printed; the median is the figure the issue asks for.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use systests::Scratch;
use vmharness::Vm;

const SSH_WAIT: Duration = Duration::from_secs(600);

fn out(vm: &Vm, command: &str) -> String {
    vm.run_ok(command).unwrap().trim().to_string()
}

/// Edits config.json with `jq FILTER` the way a user would (through /tmp, then
/// `mv` across filesystems) and waits, polling on the device, until `check`
/// (a shell condition) holds. Returns the milliseconds from the `mv` to then.
fn edit_until(vm: &Vm, filter: &str, check: &str) -> u64 {
    let script = format!(
        "jq '{filter}' /mnt/boot/config.json > /tmp/config.new && \
         start=$(date +%s%N) && mv /tmp/config.new /mnt/boot/config.json && \
         for i in $(seq 1 1200); do if {check}; then echo $(( ($(date +%s%N) - start) / 1000000 )); exit 0; fi; sleep 0.05; done; \
         echo timeout; exit 1"
    );
    let result = vm.run_timeout(&script, Duration::from_secs(180)).unwrap();
    assert!(
        result.success(),
        "after jq '{filter}': `{check}` never held\n{}{}\n{}",
        result.stdout,
        result.stderr,
        vm.run("journalctl -u baleen-config --no-pager | tail -30")
            .map(|o| o.stdout)
            .unwrap_or_default()
    );
    let ms: u64 = result.stdout.trim().parse().unwrap();
    eprintln!("latency {ms:>5} ms  jq '{filter}'");
    ms
}

/// A CA and a certificate it signed, made with openssl on the host.
fn make_ca(dir: &Path) -> (String, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=baleen test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=device.test",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "3650",
    ]);
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let b64 = Command::new("base64")
        .args(["-w0"])
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(b64.status.success() && !pem.is_empty());
    (String::from_utf8(b64.stdout).unwrap(), dir.join("leaf.pem"))
}

#[test]
fn config_changes_apply_live_and_removal_reverts() {
    let scratch = Scratch::new("agent");
    let dir = scratch.path().to_path_buf();
    let (key, public) = vmharness::ssh_keygen(&dir).unwrap();
    let (ca_b64, leaf) = make_ca(&dir);
    let mut vm = Vm::builder("agent")
        .base_image(systests::test_image("dev"))
        .overlay_size(8 << 30)
        .ssh_key(&key)
        .start()
        .unwrap();
    vm.wait_for_ssh(SSH_WAIT).unwrap();
    assert_eq!(
        out(&vm, "systemctl is-active baleen-config.service"),
        "active"
    );
    let uuid = out(&vm, "jq -r .uuid /mnt/boot/config.json");
    let status: serde_json::Value =
        serde_json::from_str(&out(&vm, "baleen status --json")).unwrap();
    assert_eq!(status["apiVersion"], 1, "{status}");
    assert!(status["revision"].is_string(), "{status}");

    let mut latencies = Vec::new();
    // hostname: set, then removed (back to the uuid's first 7 characters).
    latencies.push(edit_until(
        &vm,
        ".hostname = \"live-host\"",
        "[ \"$(hostname)\" = live-host ] && grep -qx live-host /etc/hostname",
    ));
    latencies.push(edit_until(
        &vm,
        "del(.hostname)",
        &format!("[ \"$(hostname)\" = {} ]", &uuid[..7]),
    ));

    // A udev rule from config creates its symlink; removed, its file goes.
    latencies.push(edit_until(
        &vm,
        ".os.udevRules = {\"99-baleen-test\": \"KERNEL==\\\"null\\\", SYMLINK+=\\\"baleen-test-null\\\"\"}",
        "[ -e /dev/baleen-test-null ]",
    ));
    latencies.push(edit_until(
        &vm,
        "del(.os.udevRules)",
        "[ ! -e /etc/udev/rules.d/99-baleen-test.rules ]",
    ));

    // NetworkManager: the files and the running daemon's D-Bus properties.
    let nm_uri = "busctl get-property org.freedesktop.NetworkManager /org/freedesktop/NetworkManager \
                  org.freedesktop.NetworkManager ConnectivityCheckUri";
    latencies.push(edit_until(
        &vm,
        ".os.network.connectivity = {\"uri\": \"http://10.0.2.2/check\", \"interval\": \"600\"} | .os.network.wifi.randomMacAddressScan = false",
        &format!("{nm_uri} | grep -q 10.0.2.2/check"),
    ));
    let printed = out(&vm, "NetworkManager --print-config");
    assert!(printed.contains("uri=http://10.0.2.2/check"), "{printed}");
    assert!(printed.contains("interval=600"), "{printed}");
    assert!(
        printed.contains("wifi.scan-rand-mac-address=no"),
        "{printed}"
    );
    latencies.push(edit_until(
        &vm,
        "del(.os.network)",
        "NetworkManager --print-config | grep -q '^enabled=false'",
    ));

    // DNS: dnsmasq answers on 127.0.0.2 with the default upstream, then the
    // configured ones (documentation addresses, never reachable), then none.
    assert_eq!(out(&vm, "cat /run/dnsmasq.servers"), "server=8.8.8.8");
    assert_eq!(
        out(&vm, "grep -c '^nameserver 127.0.0.2$' /etc/resolv.conf"),
        "1"
    );
    out(&vm, "ss -lnu | grep -q '127.0.0.2:53 '");
    latencies.push(edit_until(
        &vm,
        ".dnsServers = \"192.0.2.53 192.0.2.54\"",
        "journalctl -u dnsmasq --no-pager | grep -q 'using nameserver 192.0.2.54#53'",
    ));
    assert_eq!(
        out(&vm, "cat /run/dnsmasq.servers"),
        "server=192.0.2.53\nserver=192.0.2.54"
    );
    latencies.push(edit_until(
        &vm,
        ".dnsServers = \"null\"",
        "[ ! -s /run/dnsmasq.servers ]",
    ));
    latencies.push(edit_until(
        &vm,
        "del(.dnsServers)",
        "grep -qx server=8.8.8.8 /run/dnsmasq.servers",
    ));
    assert_eq!(out(&vm, "systemctl is-active dnsmasq.service"), "active");

    // NTP: the configured server joins chrony's sources, and leaves again.
    latencies.push(edit_until(
        &vm,
        ".ntpServers = \"192.0.2.123\"",
        "chronyc -n sources | grep -q 192.0.2.123",
    ));
    latencies.push(edit_until(
        &vm,
        "del(.ntpServers)",
        "! chronyc -n sources | grep -q 192.0.2.123",
    ));

    // country: the regulatory domain of a (simulated) Wi-Fi radio.
    vm.run_ok("modprobe mac80211_hwsim radios=1").unwrap();
    latencies.push(edit_until(
        &vm,
        ".country = \"DE\"",
        "iw reg get | grep -q '^country DE'",
    ));
    latencies.push(edit_until(
        &vm,
        "del(.country)",
        "iw reg get | grep -q '^country 00'",
    ));

    // Extra firmware from an engine volume: the kernel's search path.
    vm.run_ok("mkdir -p /var/lib/docker/volumes/extra-firmware/_data")
        .unwrap();
    let fw = "/sys/module/firmware_class/parameters/path";
    latencies.push(edit_until(
        &vm,
        ".os.kernel.extraFirmwareVol = \"extra-firmware\"",
        &format!("grep -qx /var/lib/docker/volumes/extra-firmware/_data {fw}"),
    ));
    latencies.push(edit_until(
        &vm,
        "del(.os.kernel)",
        &format!("[ -z \"$(cat {fw})\" ]"),
    ));

    // No fan on this device type: a note in status, no error.
    edit_until(
        &vm,
        ".os.fan.profile = \"quiet\"",
        "baleen status --json | grep -q 'not supported on qemux86-64'",
    );
    let status: serde_json::Value =
        serde_json::from_str(&out(&vm, "baleen status --json")).unwrap();
    assert!(status["lastError"].is_null(), "{status}");
    edit_until(
        &vm,
        "del(.os.fan)",
        "! baleen status --json | grep -q 'not supported'",
    );

    // The CA is trusted while configured, and not once removed.
    vm.copy_to(&leaf, "/tmp/leaf.pem").unwrap();
    let verify =
        "openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt /tmp/leaf.pem >/dev/null 2>&1";
    assert!(!vm.run(verify).unwrap().success(), "not trusted before");
    latencies.push(edit_until(
        &vm,
        &format!(".balenaRootCA = \"{ca_b64}\""),
        verify,
    ));
    latencies.push(edit_until(
        &vm,
        "del(.balenaRootCA)",
        &format!("! {verify}"),
    ));

    // SSH keys, then development mode off: keys only, no console login.
    latencies.push(edit_until(
        &vm,
        &format!(".os.sshKeys = [\"{}\"]", public.trim()),
        "grep -q PermitEmptyPasswords.no /run/baleen/ssh/sshd_config",
    ));
    latencies.push(edit_until(
        &vm,
        ".developmentMode = false",
        "[ ! -e /run/baleen/development ] && ! systemctl -q is-active serial-getty@ttyS0.service",
    ));
    latencies.push(edit_until(
        &vm,
        ".developmentMode = true",
        "systemctl -q is-active serial-getty@ttyS0.service",
    ));

    // Persistent logging on: the journal moves to the data partition.
    latencies.push(edit_until(
        &vm,
        ".persistentLogging = true",
        "findmnt -n /var/log/journal >/dev/null",
    ));

    // One invalid key is reported; the others still apply. The rules file comes before the
    // status that reports the pass: wait for both.
    edit_until(
        &vm,
        ".hostname = \"bad name\" | .os.udevRules = {\"98-ok\": \"# ok\"}",
        "[ -e /etc/udev/rules.d/98-ok.rules ] && baleen status --json | grep -qF 'bad name'",
    );
    assert_eq!(out(&vm, "hostname"), &uuid[..7]);
    let status = out(&vm, "baleen status --json");
    assert!(status.contains("hostname = \\\"bad name\\\""), "{status}");

    // Invalid JSON: nothing changes, the error names the position.
    let before = out(&vm, "ls /etc/udev/rules.d; hostname");
    vm.run_ok("printf '{\"hostname\": ' > /tmp/bad.json && mv /tmp/bad.json /mnt/boot/config.json && sleep 3").unwrap();
    assert_eq!(out(&vm, "ls /etc/udev/rules.d; hostname"), before);
    let status: serde_json::Value =
        serde_json::from_str(&out(&vm, "baleen status --json")).unwrap();
    let last = status["lastError"].as_str().unwrap_or_default();
    assert!(
        last.contains("config.json:1:") && last.contains("nothing changed"),
        "{status}"
    );

    // The CLI on the device: set/get, dry run with the agent stopped, and a
    // no-op apply that writes nothing and restarts nothing.
    vm.run_ok("printf '{\"deviceType\": \"qemux86-64\", \"developmentMode\": true}' > /tmp/c.json && mv /tmp/c.json /mnt/boot/config.json && sleep 3").unwrap();
    vm.run_ok(&format!(
        "baleen config set os.sshKeys '[\"{}\"]'",
        public.trim()
    ))
    .unwrap();
    let refused = vm.run("baleen config set hostname 'two words'").unwrap();
    assert!(
        !refused.success() && refused.stderr.contains("hostname = \"two words\""),
        "{}",
        refused.stderr
    );
    assert_eq!(out(&vm, "baleen config get developmentMode"), "true");
    vm.run_ok("systemctl stop baleen-config.service && baleen config set hostname dry-run-host")
        .unwrap();
    let plan = out(&vm, "baleen config apply --dry-run");
    assert!(
        plan.contains("planned") && plan.contains("/etc/hostname"),
        "{plan}"
    );
    assert_ne!(
        out(&vm, "hostname"),
        "dry-run-host",
        "a dry run changes nothing"
    );
    vm.run_ok("baleen config apply").unwrap();
    assert_eq!(out(&vm, "hostname"), "dry-run-host");
    vm.run_ok("baleen config apply").unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&out(&vm, "baleen status --json")).unwrap();
    assert_eq!(
        (status["writes"].as_u64(), status["commands"].as_u64()),
        (Some(0), Some(0)),
        "{status}"
    );
    vm.run_ok("systemctl start baleen-config.service").unwrap();

    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    let rss = out(&vm, "ps -o rss= -C baleen | sort -n | tail -1");
    eprintln!(
        "config agent: median latency {median} ms over {} changes (max {} ms); agent RSS {rss} KiB",
        latencies.len(),
        latencies.last().unwrap()
    );
    vm.mark_passed();
}
