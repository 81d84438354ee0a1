//! The VM harness's own tests: real QEMU processes (TCG, OVMF, no guest OS) and
//! network namespaces. They need root and QEMU, so they live in the system
//! suite (scripts/test.sh installs both) rather than in `cargo test`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use vmharness::{NetNs, Regex, Vm};

const QEMU_BIN: &str = "/usr/bin/qemu-system-x86_64";

fn have_qemu() {
    assert!(
        Path::new(QEMU_BIN).exists() && Path::new(vmharness::OVMF_CODE).exists(),
        "the system suite needs {QEMU_BIN} and {}: run scripts/install-deps.sh",
        vmharness::OVMF_CODE
    );
}

/// A raw image of `size` bytes with 64 KiB of `fill` at `at`.
fn raw_image(path: &Path, size: u64, at: u64, fill: u8) {
    let mut f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[fill; 65536]).unwrap();
}

/// Runs a qemu-io command on a drive through HMP; qemu-io prints its result on QEMU's stdout,
/// which is the serial stream the harness reads.
fn qemu_io(vm: &mut Vm, drive: &str, command: &str, expect: &str) {
    let mark = vm.serial_mark();
    vm.qmp_execute(
        "human-monitor-command",
        Some(serde_json::json!({ "command-line": format!("qemu-io {drive} \"{command}\"") })),
    )
    .unwrap();
    if expect.is_empty() {
        return;
    }
    let line = vm
        .wait_for_serial_after(mark, expect, Duration::from_secs(60))
        .unwrap();
    // qemu-io's own errors ("read failed: …", "write failed: …"); the serial line may also
    // carry OVMF's output, which has failures of its own ("failed to load Boot0001").
    assert!(
        !line.text.contains("read failed") && !line.text.contains("write failed"),
        "{command}: {}",
        line.text
    );
    assert!(
        !vm.serial_contains("Pattern verification failed"),
        "{command}"
    );
}

#[test]
fn boots_ovmf_cuts_power_and_keeps_overlay_writes() {
    have_qemu();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.img");
    raw_image(&base, 64 << 20, 1 << 20, 0xcd);
    let extra = tmp.path().join("extra.img");
    raw_image(&extra, 16 << 20, 0, 0x5a);
    let logs = tmp.path().join("logs");

    let mut vm = Vm::builder("smoke")
        .base_image(&base)
        .overlay_size(128 << 20)
        .extra_disk(&extra)
        .memory_mib(256)
        .cpus(1)
        .log_dir(&logs)
        .start()
        .unwrap();
    assert_eq!(vm.status().unwrap(), "running");
    let port = vm.ssh_port().unwrap();

    // OVMF finds no bootable disk and says so on the serial console.
    let first = vm
        .wait_for_serial("BdsDxe", Duration::from_secs(120))
        .unwrap();
    assert_eq!(first.run, 0);
    assert!(first.at < Duration::from_secs(120));
    let shell = Regex::new(r"Shell> ?$").unwrap();
    vm.wait_for_serial(&shell, Duration::from_secs(120))
        .unwrap();
    let shot = vm.screendump(&logs.join("shell.png")).unwrap();
    assert!(fs::metadata(&shot).unwrap().len() > 0);

    // No guest SSH: the wait fails, naming the target and quoting the console.
    let err = vm.wait_for_ssh(Duration::from_secs(3)).unwrap_err();
    let msg = err.to_string();
    assert!(err.is_timeout(), "{msg}");
    assert!(msg.contains(&format!("SSH on 127.0.0.1:{port}")), "{msg}");
    assert!(
        msg.contains("last serial lines:") && msg.contains("Shell>"),
        "{msg}"
    );

    // The overlay reads through to the base, takes writes (also in the grown area), and keeps
    // what was flushed across a power cut.
    qemu_io(
        &mut vm,
        "d0",
        "read -P 0xcd 1M 64k",
        "read 65536/65536 bytes at offset 1048576",
    );
    qemu_io(
        &mut vm,
        "d1",
        "read -P 0x5a 0 64k",
        "read 65536/65536 bytes at offset 0",
    );
    qemu_io(
        &mut vm,
        "d0",
        "write -P 0xab 0 64k",
        "wrote 65536/65536 bytes at offset 0",
    );
    qemu_io(
        &mut vm,
        "d0",
        "write -P 0xee 100M 64k",
        "wrote 65536/65536 bytes at offset 104857600",
    );
    qemu_io(&mut vm, "d0", "flush", ""); // prints nothing

    let pid = vm.pid().unwrap();
    vm.power_cut().unwrap();
    assert!(!vm.is_running());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let restarted = vm.serial_mark();
    vm.restart().unwrap();
    assert_eq!(vm.status().unwrap(), "running");
    let again = vm
        .wait_for_serial("BdsDxe", Duration::from_secs(120))
        .unwrap();
    assert_eq!(again.run, 1);
    // Let OVMF reach its shell and fall quiet, so qemu-io's lines are not mixed with its boot
    // messages on the shared stream.
    vm.wait_for_serial_after(restarted, &shell, Duration::from_secs(120))
        .unwrap();
    qemu_io(
        &mut vm,
        "d0",
        "read -P 0xab 0 64k",
        "read 65536/65536 bytes at offset 0",
    );
    qemu_io(
        &mut vm,
        "d0",
        "read -P 0xee 100M 64k",
        "read 65536/65536 bytes at offset 104857600",
    );
    qemu_io(
        &mut vm,
        "d0",
        "read -P 0xcd 1M 64k",
        "read 65536/65536 bytes at offset 1048576",
    );

    vm.reset().unwrap();
    let events = vm.qmp().unwrap().take_events();
    assert!(events.iter().any(|e| e.name == "RESET"), "{events:?}");
    vm.shutdown(Duration::from_secs(5)).unwrap();
    assert!(!vm.is_running());
    drop(vm);

    // The base image was never written.
    let mut head = vec![0u8; 65536];
    File::open(&base).unwrap().read_exact(&mut head).unwrap();
    assert!(head.iter().all(|&b| b == 0));
    // Logs stay behind (this folder was given explicitly).
    let serial = fs::read_to_string(logs.join("serial.log")).unwrap();
    assert!(serial.contains("BdsDxe") && serial.contains("---- QEMU run #1 ----"));
    let cmdline = fs::read_to_string(logs.join("qemu.cmdline")).unwrap();
    assert!(cmdline.contains(&format!("restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22222")));
    assert!(cmdline.contains("-accel tcg") && !cmdline.contains("kvm"));
    assert!(logs.join("OVMF_VARS.fd").exists());
}

#[test]
fn attaches_to_a_tap_in_a_namespace() {
    have_qemu();
    systests::require_root("network namespaces, QEMU taps");
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.img");
    raw_image(&base, 16 << 20, 0, 0);
    let ns = NetNs::create("vmtap").unwrap();
    let mut vm = Vm::builder("tap")
        .base_image(&base)
        .netns(Some(&ns))
        .memory_mib(128)
        .cpus(1)
        .qemu_arg("-S")
        .log_dir(tmp.path().join("logs"))
        .start()
        .unwrap();
    // Paused before the firmware runs: only the plumbing is exercised.
    assert_eq!(vm.status().unwrap(), "prelaunch");
    assert_eq!(vm.ssh().target(), "10.0.2.15:22222");
    assert_eq!(vm.ssh_port(), None);
    // QEMU holds the tap open: it has carrier, on the namespace's bridge.
    let link = ns.exec(&["ip", "link", "show", "tap0"]).unwrap().stdout;
    assert!(link.contains("master br0"), "{link}");
    assert!(!link.contains("NO-CARRIER"), "{link}");
    let cmdline = fs::read_to_string(vm.log_dir().join("qemu.cmdline")).unwrap();
    assert!(
        cmdline.starts_with(&format!(
            "setpriv --pdeathsig TERM -- ip netns exec {} ",
            ns.name()
        )),
        "{cmdline}"
    );
    assert!(!cmdline.contains("user,"), "{cmdline}");
    vm.power_cut().unwrap();
}

#[test]
fn reports_qemu_exit_and_cleans_up_after_a_pass() {
    have_qemu();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.img");
    raw_image(&base, 16 << 20, 0, 0);
    // Default log folder: <workspace>/target/vmtests/exit-report-<timestamp>.
    let mut vm = Vm::builder("exit-report")
        .base_image(&base)
        .memory_mib(128)
        .cpus(1)
        .qemu_arg("-S")
        .start()
        .unwrap();
    let dir = vm.log_dir().to_owned();
    assert!(dir.starts_with(vmharness::log_root()), "{}", dir.display());
    assert!(dir.join("disk0.qcow2").exists());

    vm.qmp_execute("quit", None).unwrap();
    let err = vm
        .wait_for_serial("never printed", Duration::from_secs(120))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, vmharness::Error::QemuExited { .. }), "{msg}");
    assert!(
        msg.starts_with(
            "QEMU is not running (exit status: 0) while waiting for serial output \"never printed\""
        ),
        "{msg}"
    );
    assert!(!vm.is_running());
    assert!(vm.status().is_err());

    vm.mark_passed();
    drop(vm);
    let keep = std::env::var_os(vmharness::KEEP_LOGS_ENV).is_some();
    assert_eq!(dir.exists(), keep, "{}", dir.display());
}

#[test]
fn namespace_lifecycle() {
    systests::require_root("network namespaces, QEMU taps");
    let ns = NetNs::create("lifecycle test").unwrap();
    let name = ns.name().to_owned();
    assert!(name.starts_with("baleen-lifecycle-test-"), "{name}");
    assert_eq!(ns.host_addr(), "10.0.2.2");
    assert_eq!(ns.add_tap().unwrap(), "tap0");
    assert_eq!(ns.add_tap().unwrap(), "tap1");
    let addrs = ns.exec(&["ip", "-br", "addr"]).unwrap().stdout;
    assert!(addrs.contains("10.0.2.2/24"), "{addrs}");
    assert!(addrs.contains("tap1"), "{addrs}");
    let err = ns.exec(&["ip", "link", "show", "nope0"]).unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = ns
        .spawn_logged(&["sh", "-c", "echo started; exec sleep 600"], &log)
        .unwrap();
    assert!(server.is_running());
    // The process lives in the namespace, not in ours.
    let inside = ns.exec(&["readlink", "/proc/self/ns/net"]).unwrap().stdout;
    let mut theirs = String::new();
    for _ in 0..100 {
        theirs = fs::read_link(format!("/proc/{}/ns/net", server.pid()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if theirs == inside.trim() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(theirs, inside.trim());
    // The namespace is entered before `sh` runs: wait for its line before the kill.
    let mut logged = String::new();
    for _ in 0..1500 {
        logged = fs::read_to_string(&log).unwrap_or_default();
        if !logged.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(logged, "started\n");
    let pid = server.pid();
    server.kill().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(fs::read_to_string(&log).unwrap(), "started\n");

    // Spawned processes keep the namespace alive; the last handle deletes it.
    let sleeper = ns.spawn(&["sleep", "600"]).unwrap();
    drop(ns);
    assert!(Path::new("/run/netns").join(&name).exists());
    drop(sleeper);
    assert!(!Path::new("/run/netns").join(&name).exists());
}
