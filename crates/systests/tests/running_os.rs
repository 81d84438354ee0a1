//! VM tests of the running host OS: partitions mounted by state, state-backed
//! paths, factory reset, identity, SSH policy, persistent logs, zram swap and
//! the safe reboot. Each test boots a copy of a test image with its own
//! config.json and reboots it where persistence is the point.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use systests::lan::{Avahi, AvahiConfig};
use systests::{Scratch, blkid_uuid, cmdline_root_uuid};
use vmharness::Vm;

const SSH_WAIT: Duration = Duration::from_secs(600);

fn boot(name: &str, image: &Path, key: Option<&Path>) -> Vm {
    let mut builder = Vm::builder(name)
        .disk(image, vmharness::DiskFormat::Raw)
        .persist(true);
    if let Some(key) = key {
        builder = builder.ssh_key(key);
    }
    let mut vm = builder.start().unwrap();
    let up = vm.wait_for_ssh(SSH_WAIT).unwrap();
    eprintln!(
        "{name}: SSH answered {:.1} s after QEMU started",
        up.as_secs_f64()
    );
    vm
}

fn out(vm: &Vm, command: &str) -> String {
    vm.run_ok(command).unwrap().trim().to_string()
}

/// How a login is attempted.
enum Login<'a> {
    Key(&'a Path),
    /// SSH's `none` method (what an empty password allows when permitted).
    NoneAuth,
    /// The password method with an empty password.
    EmptyPassword(&'a Path),
}

/// Whether root gets in on 127.0.0.1:`port` with `login`.
fn logs_in(port: u16, login: Login) -> bool {
    let mut c = Command::new("timeout");
    c.args(["120", "ssh", "-F", "/dev/null"]);
    for opt in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "ConnectTimeout=60",
        "NumberOfPasswordPrompts=1",
    ] {
        c.args(["-o", opt]);
    }
    match login {
        Login::Key(key) => {
            c.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"]);
            c.arg(key);
        }
        Login::NoneAuth => {
            c.args([
                "-o",
                "BatchMode=yes",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
            ]);
        }
        Login::EmptyPassword(askpass) => {
            c.args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password",
            ]);
            c.env("SSH_ASKPASS", askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
    }
    c.args(["-p", &port.to_string(), "root@127.0.0.1", "true"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.status().unwrap().success()
}

/// An SSH_ASKPASS program that answers with an empty password.
fn empty_askpass(dir: &Path) -> PathBuf {
    let path = dir.join("askpass.sh");
    std::fs::write(&path, "#!/bin/sh\necho\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// Whether `path` exists on the guest.
fn test_exists(vm: &Vm, path: &str) -> bool {
    vm.run(&format!("test -e {path}")).unwrap().success()
}

/// Whether `path` is a directory on the guest.
fn test_dir(vm: &Vm, path: &str) -> bool {
    vm.run(&format!("test -d {path}")).unwrap().success()
}

fn realpath(vm: &Vm, path: &str) -> String {
    out(vm, &format!("readlink -f {path}"))
}

fn mount_source(vm: &Vm, target: &str) -> String {
    out(
        vm,
        &format!("findmnt -n -o SOURCE --mountpoint {target} | tail -1"),
    )
}

#[test]
fn mounts_by_state_persistence_logs_zram_and_safe_reboot() {
    let scratch = Scratch::new("running-os");
    let image = scratch.image_with_config(
        "dev",
        &serde_json::json!({
            "deviceType": "qemux86-64",
            "developmentMode": true,
            "persistentLogging": true,
            "hostname": "baleen-test"
        }),
    );
    // A second disk carrying the same labels must get no by-state link.
    let second_dir = scratch.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second = systests::copy_image(&systests::test_image("dev"), &second_dir);
    let mut vm = Vm::builder("running-os")
        .disk(&image, vmharness::DiskFormat::Raw)
        .persist(true)
        .extra_disk(&second)
        .start()
        .unwrap();
    let up = vm.wait_for_ssh(SSH_WAIT).unwrap();
    eprintln!(
        "running-os: SSH answered {:.1} s after QEMU started",
        up.as_secs_f64()
    );

    // by-state links: the boot disk's partitions, active and inactive.
    let links = out(&vm, "ls /dev/disk/by-state | sort | tr '\\n' ' '");
    assert_eq!(
        links, "active inactive resin-boot resin-data resin-rootA resin-rootB resin-state",
        "by-state links"
    );
    for link in links.split_whitespace() {
        let dev = realpath(&vm, &format!("/dev/disk/by-state/{link}"));
        assert!(
            dev.starts_with("/dev/vda"),
            "{link} -> {dev} is not on the boot disk"
        );
    }
    // The boot stage chose the boot disk and left the other alone (no first-boot UUIDs there).
    assert!(
        vm.serial_contains("boot disk /dev/vda"),
        "boot stage chose another disk"
    );
    assert_eq!(
        cmdline_root_uuid(&vm),
        blkid_uuid(&vm, "/dev/vda2"),
        "root must come from the boot disk"
    );
    for part in ["/dev/vdb2", "/dev/vdb3", "/dev/vdb4", "/dev/vdb5"] {
        let uuid = blkid_uuid(&vm, part);
        assert!(
            !uuid.starts_with("ba1eadef-"),
            "the second disk must be left alone, {part} got {uuid}"
        );
    }
    // /mnt/boot is mounted by the root's initramfs (from the root's disk), with the options of
    // /etc/fstab.
    assert!(
        vm.serial_contains("/dev/vda1 mounted at /mnt/boot"),
        "the root's initramfs did not mount /mnt/boot"
    );
    let boot_opts = out(&vm, "findmnt -n -o OPTIONS /mnt/boot");
    for opt in [
        "rw",
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "fmask=0077",
        "dmask=0077",
    ] {
        assert!(
            boot_opts.split(',').any(|o| o == opt),
            "/mnt/boot lacks {opt}: {boot_opts}"
        );
    }
    let active = realpath(&vm, "/dev/disk/by-state/active");
    assert_eq!(active, realpath(&vm, "/dev/disk/by-state/resin-rootA"));
    assert_eq!(mount_source(&vm, "/mnt/sysroot/active"), active);
    assert_eq!(mount_source(&vm, "/"), active);
    let inactive = realpath(&vm, "/dev/disk/by-state/inactive");
    assert_ne!(inactive, active);
    // The inactive root mounts on demand.
    vm.run_ok("ls /mnt/sysroot/inactive >/dev/null").unwrap();
    assert_eq!(mount_source(&vm, "/mnt/sysroot/inactive"), inactive);
    for (mount, label) in [
        ("/mnt/boot", "resin-boot"),
        ("/mnt/state", "resin-state"),
        ("/mnt/data", "resin-data"),
    ] {
        assert_eq!(
            mount_source(&vm, mount),
            realpath(&vm, &format!("/dev/disk/by-state/{label}")),
            "{mount}"
        );
    }

    // Read-only root, memory-backed /tmp, engine storage on data.
    let root_opts = out(&vm, "findmnt -n -o OPTIONS /");
    assert!(root_opts.split(',').any(|o| o == "ro"), "{root_opts}");
    assert!(
        !vm.run("touch /usr/x").unwrap().success(),
        "root must refuse writes"
    );
    assert_eq!(out(&vm, "findmnt -n -o FSTYPE /tmp"), "tmpfs");
    let docker = mount_source(&vm, "/var/lib/docker");
    assert!(
        docker.ends_with("[/docker]"),
        "/var/lib/docker from {docker}"
    );

    // State-backed paths: bound from root-overlay, seeded from the root.
    for path in [
        "/etc/hostname",
        "/etc/ssh/hostkeys",
        "/root/.ssh",
        "/etc/NetworkManager/system-connections",
        "/etc/udev/rules.d",
        "/var/lib/NetworkManager",
        "/var/lib/chrony",
        "/var/lib/systemd",
        "/etc/docker",
        "/etc/ssl/certs",
    ] {
        let source = mount_source(&vm, path);
        assert!(
            source.contains("[/root-overlay"),
            "{path} should be bound from /mnt/state/root-overlay, is from {source}"
        );
    }
    assert!(
        vm.run("test -s /etc/ssl/certs/ca-certificates.crt")
            .unwrap()
            .success(),
        "the CA store must be seeded from the root, not shadowed by an empty directory"
    );
    assert_eq!(
        out(&vm, "cat /etc/machine-id"),
        out(&vm, "cat /mnt/state/machine-id")
    );

    // Identity from config.json.
    assert_eq!(out(&vm, "hostname"), "baleen-test");
    assert_eq!(out(&vm, "cat /etc/hostname"), "baleen-test");
    let uuid = out(
        &vm,
        "sed -n 's/.*\"uuid\": \"\\([0-9a-f]*\\)\".*/\\1/p' /mnt/boot/config.json",
    );
    assert_eq!(uuid.len(), 32, "uuid written to config.json: {uuid:?}");

    // zram: the only swap, half of RAM (at most 4096000 KiB).
    let swaps = out(&vm, "tail -n +2 /proc/swaps");
    let lines: Vec<&str> = swaps.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one swap: {swaps}");
    assert!(lines[0].starts_with("/dev/zram0"), "{swaps}");
    let size_kib: u64 = lines[0].split_whitespace().nth(2).unwrap().parse().unwrap();
    let mem_kib: u64 = out(&vm, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")
        .parse()
        .unwrap();
    let want = (mem_kib / 2).min(4_096_000);
    assert!(
        size_kib <= want && size_kib + 1024 >= want,
        "zram swap of {size_kib} KiB, expected half of {mem_kib} KiB"
    );

    // Development mode: a serial console login.
    assert_eq!(
        vm.run("systemctl is-active serial-getty@ttyS0.service")
            .unwrap()
            .stdout
            .trim(),
        "active"
    );

    // Things the next boot must still have.
    vm.run_ok(
        "echo kept > /root/.ssh/marker && echo '# kept' > /etc/udev/rules.d/marker \
         && echo kept > /mnt/data/marker && sync",
    )
    .unwrap();
    let machine_id = out(&vm, "cat /etc/machine-id");
    let host_key = out(&vm, "cat /etc/ssh/hostkeys/ssh_host_ed25519_key.pub");
    assert_eq!(
        out(
            &vm,
            "journalctl --list-boots --no-pager | grep -c -E '^ *-?[0-9]+ '"
        ),
        "1"
    );

    // Safe reboot: waits while an application holds its update lock.
    vm.run_ok(
        "mkdir -p /tmp/balena-supervisor/services/1/main && \
         systemd-run --unit=test-app-lock flock /tmp/balena-supervisor/services/1/main/updates.lock sleep 3600",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before = vm.boot_id().unwrap();
    vm.run_ok("systemd-run --unit=test-safe-reboot /usr/bin/baleen reboot")
        .unwrap();
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        vm.boot_id().unwrap(),
        before,
        "rebooted while the lock was held"
    );
    let waiting = out(&vm, "journalctl -u test-safe-reboot --no-pager");
    assert!(
        waiting.contains("Reboot waiting on application lock: /tmp/balena-supervisor/services/1/main/updates.lock"),
        "{waiting}"
    );
    let _ = vm.run("systemctl stop test-app-lock");
    vm.wait_for_new_boot(&before, SSH_WAIT).unwrap();

    // After the reboot.
    assert_eq!(out(&vm, "cat /root/.ssh/marker"), "kept");
    assert_eq!(out(&vm, "cat /etc/udev/rules.d/marker"), "# kept");
    assert_eq!(out(&vm, "cat /mnt/data/marker"), "kept");
    assert_eq!(out(&vm, "cat /etc/machine-id"), machine_id);
    assert_eq!(
        out(&vm, "cat /etc/ssh/hostkeys/ssh_host_ed25519_key.pub"),
        host_key
    );
    assert_eq!(out(&vm, "hostname"), "baleen-test");
    assert_eq!(
        out(
            &vm,
            "journalctl --list-boots --no-pager | grep -c -E '^ *-?[0-9]+ '"
        ),
        "2",
        "persistent logging keeps the previous boot"
    );
    vm.mark_passed();
}

#[test]
fn factory_reset_of_state_and_of_data() {
    let scratch = Scratch::new("reset");
    let image = scratch.image_with_config(
        "dev",
        &serde_json::json!({"deviceType": "qemux86-64", "developmentMode": true}),
    );
    let mut vm = boot("reset", &image, None);
    let uuid = out(
        &vm,
        "sed -n 's/.*\"uuid\": \"\\([0-9a-f]*\\)\".*/\\1/p' /mnt/boot/config.json",
    );
    assert_eq!(uuid.len(), 32, "uuid written to config.json: {uuid:?}");
    let name = &uuid[..7];
    assert_eq!(out(&vm, "hostname"), name, "hostname from the uuid");
    assert_eq!(out(&vm, "cat /etc/hostname"), name);
    for flag in [
        "/mnt/state/remove_me_to_reset",
        "/mnt/data/remove_me_to_reset",
    ] {
        assert!(test_exists(&vm, flag), "first boot seeds {flag}");
    }
    let markers = "echo x > /root/.ssh/marker && echo x > /mnt/data/marker \
                   && mkdir -p /mnt/data/docker/volumes && echo x > /mnt/data/docker/volumes/marker && sync";
    vm.run_ok(markers).unwrap();

    // Flags in place: nothing is wiped.
    vm.reboot_wait(SSH_WAIT).unwrap();
    for marker in [
        "/root/.ssh/marker",
        "/mnt/data/marker",
        "/mnt/data/docker/volumes/marker",
    ] {
        assert!(test_exists(&vm, marker), "{marker} must survive");
    }

    // State reset alone.
    vm.run_ok("rm /mnt/state/remove_me_to_reset && sync")
        .unwrap();
    vm.reboot_wait(SSH_WAIT).unwrap();
    assert!(!test_exists(&vm, "/root/.ssh/marker"), "state marker wiped");
    assert!(test_exists(&vm, "/mnt/state/remove_me_to_reset"));
    assert!(test_exists(&vm, "/mnt/data/marker"), "data untouched");
    assert_eq!(out(&vm, "hostname"), name);
    assert_eq!(out(&vm, "cat /etc/hostname"), name);

    // Data reset alone.
    vm.run_ok("echo x > /root/.ssh/marker && rm /mnt/data/remove_me_to_reset && sync")
        .unwrap();
    vm.reboot_wait(SSH_WAIT).unwrap();
    assert!(!test_exists(&vm, "/mnt/data/marker"), "data marker wiped");
    assert!(!test_exists(&vm, "/mnt/data/docker/volumes"));
    assert!(test_dir(&vm, "/mnt/data/docker"));
    assert!(test_exists(&vm, "/mnt/data/remove_me_to_reset"));
    assert!(test_exists(&vm, "/root/.ssh/marker"), "state untouched");
    assert_eq!(out(&vm, "hostname"), name);
    vm.mark_passed();
}

#[test]
fn production_ssh_keys_only_and_a_broken_config_keeps_the_last_good_keys() {
    let scratch = Scratch::new("prod-ssh");
    let dir = scratch.path().to_path_buf();
    let (key, public) = vmharness::ssh_keygen(&dir).unwrap();
    std::fs::create_dir_all(dir.join("other")).unwrap();
    let (other, _) = vmharness::ssh_keygen(&dir.join("other")).unwrap();
    let askpass = empty_askpass(&dir);
    let image = scratch.image_with_config(
        "prod",
        &serde_json::json!({
            "deviceType": "qemux86-64",
            "os": {"sshKeys": [public.trim(), "ssh-rsa not*base64"]}
        }),
    );
    let mut vm = boot("prod-ssh", &image, Some(&key));
    assert!(
        out(&vm, "cat /etc/os-release").contains("VARIANT=Production"),
        "a production image"
    );
    let port = vm.ssh_port().unwrap();
    assert!(
        logs_in(port, Login::Key(&key)),
        "the key injected into config.json gets in"
    );
    assert!(!logs_in(port, Login::Key(&other)), "another key is refused");
    assert!(
        !logs_in(port, Login::NoneAuth),
        "`none` is refused in production"
    );
    assert!(
        !logs_in(port, Login::EmptyPassword(&askpass)),
        "passwords are refused in production"
    );
    let log = out(&vm, "journalctl -b -u baleen-access --no-pager");
    assert!(
        log.contains("os.sshKeys[1] key data is not base64"),
        "{log}"
    );
    assert_ne!(
        vm.run("systemctl is-active serial-getty@ttyS0.service")
            .unwrap()
            .stdout
            .trim(),
        "active",
        "no console login in production"
    );

    // config.json broken at boot: the device boots, the last good keys still work.
    vm.run_ok("printf '{\"os\": {\"sshKeys\": [' > /mnt/boot/config.json && sync")
        .unwrap();
    vm.reboot_wait(SSH_WAIT).unwrap();
    assert!(
        logs_in(port, Login::Key(&key)),
        "the last good key still gets in"
    );
    assert!(!logs_in(port, Login::NoneAuth));
    let log = out(&vm, "journalctl -b -u baleen-access --no-pager");
    assert!(
        log.contains("/mnt/boot/config.json is not valid JSON") && log.contains("line 1 column"),
        "the error names the file and the position: {log}"
    );

    // Production with no key: nobody gets in.
    vm.write_file("/mnt/boot/config.json", br#"{"deviceType": "qemux86-64"}"#)
        .unwrap();
    let _ = vm.run("systemctl restart baleen-access.service");
    assert!(
        !logs_in(port, Login::Key(&key)),
        "no key configured: the old key is refused"
    );
    assert!(!logs_in(port, Login::NoneAuth));
    assert!(!logs_in(port, Login::EmptyPassword(&askpass)));
    vm.mark_passed();
}

#[test]
fn development_ssh_passwordless_without_keys_keys_only_with_them() {
    let scratch = Scratch::new("dev-ssh");
    let dir = scratch.path().to_path_buf();
    let (key, public) = vmharness::ssh_keygen(&dir).unwrap();
    let askpass = empty_askpass(&dir);
    let image = scratch.image_with_config(
        "dev",
        &serde_json::json!({
            "deviceType": "qemux86-64",
            "developmentMode": true,
            "os": {"sshKeys": [public.trim()]}
        }),
    );
    let vm = boot("dev-ssh", &image, Some(&key));
    let port = vm.ssh_port().unwrap();
    assert!(logs_in(port, Login::Key(&key)));
    assert!(!logs_in(port, Login::NoneAuth), "with keys: keys only");
    assert!(
        !logs_in(port, Login::EmptyPassword(&askpass)),
        "with keys: keys only"
    );

    // The socket comes back after systemd's trigger limit stopped it. One SSH
    // session does it all: no new connection gets in while the socket is down.
    let recovered = out(
        &vm,
        "mkdir -p /run/systemd/system/sshd.socket.d && \
         printf '[Socket]\\nTriggerLimitIntervalSec=30s\\nTriggerLimitBurst=2\\n' > /run/systemd/system/sshd.socket.d/limit.conf && \
         systemctl daemon-reload && systemctl restart sshd.socket && \
         for i in 1 2 3 4 5 6; do (exec 3<>/dev/tcp/127.0.0.1/22222) 2>/dev/null; done; sleep 2; \
         systemctl show -P Result sshd.socket; \
         rm -r /run/systemd/system/sshd.socket.d && systemctl daemon-reload && \
         systemctl start baleen-sshd-recover.service; systemctl is-active sshd.socket",
    );
    assert_eq!(
        recovered.split_whitespace().collect::<Vec<_>>(),
        ["trigger-limit-hit", "active"],
        "socket stopped by the trigger limit, then recovered"
    );

    // Keys removed: passwordless root (development only).
    vm.write_file(
        "/mnt/boot/config.json",
        br#"{"deviceType": "qemux86-64", "developmentMode": true}"#,
    )
    .unwrap();
    vm.run_ok("systemctl restart baleen-access.service")
        .unwrap();
    assert!(
        logs_in(port, Login::NoneAuth),
        "development without keys: passwordless root"
    );
    let mut vm = vm;
    vm.mark_passed();
}

#[test]
fn mdns_publishes_the_hostname_and_ssh_on_the_lan() {
    let lan = systests::lan::Lan::new("mdns").unwrap();
    let scratch = Scratch::new("mdns");
    let image = scratch.image_with_config(
        "dev",
        &serde_json::json!({
            "deviceType": "qemux86-64",
            "developmentMode": true,
            "hostname": "baleen-mdns"
        }),
    );
    let mut vm = Vm::builder("mdns")
        .disk(&image, vmharness::DiskFormat::Raw)
        .persist(true)
        .netns(Some(lan.ns()))
        .start()
        .unwrap();
    vm.wait_for_ssh(SSH_WAIT).unwrap();
    assert_eq!(out(&vm, "hostname"), "baleen-mdns");

    // The device resolves its own names without asking a DNS server:
    // /etc/hosts, myhostname, and mDNS for *.local.
    let first_address = |name: &str| {
        out(&vm, &format!("getent ahostsv4 {name} | head -n1"))
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(first_address("localhost"), "127.0.0.1");
    assert_eq!(first_address("baleen-mdns"), lan.guest_addr());
    // A name nobody knows: the LAN's DNS says NXDOMAIN (getent: "not found").
    let unknown = vm.run("getent hosts no-such-host.example").unwrap();
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");

    // A second host on the LAN asks by mDNS.
    let avahi = lan.avahi().unwrap();
    let wait = Duration::from_secs(120);
    let address = avahi.resolve("baleen-mdns.local", wait).unwrap();
    assert_eq!(
        address.as_deref(),
        Some(lan.guest_addr()),
        "baleen-mdns.local"
    );
    let found = avahi
        .find_service("_ssh._tcp", wait, |s| s.hostname == "baleen-mdns.local")
        .unwrap();
    let ssh = found.unwrap_or_else(|| panic!("no _ssh._tcp from baleen-mdns.local"));
    assert_eq!(ssh.port, 22222);
    let sub = avahi
        .find_service("_resin-device._sub._ssh._tcp", wait, |s| {
            s.hostname == "baleen-mdns.local"
        })
        .unwrap();
    assert!(sub.is_some(), "the _resin-device subtype is published");

    // And the device resolves another LAN host's .local name by mDNS.
    let laptop = lan.add_host("mdns-laptop", "10.0.2.9/24").unwrap();
    let _publisher = Avahi::start(laptop.ns(), &AvahiConfig::publisher("laptop")).unwrap();
    let resolved = vm
        .wait_until("getent ahostsv4 laptop.local | grep -q '^10.0.2.9 '", wait)
        .map(|_| ())
        .map_err(|e| format!("{e}: {}", out(&vm, "getent ahostsv4 laptop.local; true")));
    assert_eq!(resolved, Ok(()), "laptop.local from the device");
    vm.mark_passed();
}
